//! `portwatch explain PORT...`: what a port is, in the seed document's terms.
use std::io::{self, Write};

use serde::Serialize;

use crate::{
    event::{
        classify::EphemeralRange,
        model::PortClass,
        services::{self, Transport},
    },
    output::Format,
};

#[derive(Debug, Serialize, PartialEq, Eq)]
pub struct Iana {
    pub name: &'static str,
    pub description: &'static str,
}

#[derive(Debug, Serialize, PartialEq, Eq)]
pub struct PortExplanation {
    pub port: u16,
    pub transport: Transport,
    pub class: &'static str,
    pub class_range: &'static str,
    pub ephemeral: bool,
    pub ephemeral_range: String,
    pub service: Option<&'static str>,
    pub iana: Option<Iana>,
    pub usual_software: Option<&'static str>,
    /// The role such a port normally plays.
    pub normal_role: &'static str,
}

pub fn explain(port: u16, transport: Transport, range: EphemeralRange) -> PortExplanation {
    let class = PortClass::of(port);
    let ephemeral = range.contains(port);
    let usual = services::usual(port, transport);
    let normal_role = match (class, ephemeral) {
        // A server's port by convention in IANA's dynamic range (51820/udp,
        // WireGuard): a listener is expected there, and a client may get it too.
        (PortClass::Dynamic, true) if usual.is_some() => {
            "either: conventionally a server's port, but inside this host's ephemeral range, so the kernel may also give it to a client as a temporary port"
        }
        (PortClass::Dynamic, false) if usual.is_some() => {
            "server by convention, though IANA's rules make it dynamic (temporary)"
        }
        (PortClass::WellKnown, _) => "server: a system service listens here and clients connect to it",
        (PortClass::Registered, false) => "server: registered for applications that listen on it",
        (PortClass::Registered, true) => {
            "either: registered for server applications, but inside this host's ephemeral range, so the kernel may also give it to a client as a temporary port"
        }
        (PortClass::Dynamic, true) => "client: a temporary port the kernel assigns for one session",
        (PortClass::Dynamic, false) => {
            "client by IANA's rules (dynamic, temporary), but outside this host's ephemeral range: seen here, it was chosen on purpose"
        }
    };
    PortExplanation {
        port,
        transport,
        class: class.name(),
        class_range: match class {
            PortClass::WellKnown => "0-1023",
            PortClass::Registered => "1024-49151",
            PortClass::Dynamic => "49152-65535",
        },
        ephemeral,
        ephemeral_range: format!("{}-{}", range.low, range.high),
        service: services::service_name(port, transport),
        iana: services::iana(port, transport).map(|r| Iana {
            name: r.name,
            description: r.description,
        }),
        usual_software: usual.map(|u| u.software),
        normal_role,
    }
}

pub fn render_text(list: &[PortExplanation], out: &mut impl Write) -> io::Result<()> {
    for (i, e) in list.iter().enumerate() {
        if i > 0 {
            writeln!(out)?;
        }
        writeln!(out, "port {}/{}", e.port, e.transport.name())?;
        writeln!(out, "  class          {} ({})", e.class, e.class_range)?;
        writeln!(
            out,
            "  ephemeral      {} (this host's ephemeral range is {})",
            if e.ephemeral { "yes" } else { "no" },
            e.ephemeral_range
        )?;
        match &e.iana {
            Some(r) if r.description.is_empty() => writeln!(out, "  IANA           {}", r.name)?,
            Some(r) => writeln!(out, "  IANA           {} ({})", r.name, r.description)?,
            None => writeln!(out, "  IANA           not registered")?,
        }
        if let Some(s) = e.service {
            writeln!(out, "  service        {s}")?;
        }
        if let Some(s) = e.usual_software {
            writeln!(out, "  usual software {s}")?;
        }
        writeln!(out, "  normally       {}", e.normal_role)?;
    }
    Ok(())
}

/// Explain each port (with its transport), as text or one JSON object per port.
pub fn run(ports: &[(u16, Transport)], format: Format, out: &mut impl Write) -> io::Result<()> {
    let range = EphemeralRange::of_host();
    let list: Vec<_> = ports.iter().map(|(p, t)| explain(*p, *t, range)).collect();
    match format {
        Format::Table => render_text(&list, out)?,
        Format::Json => {
            for e in &list {
                serde_json::to_writer(&mut *out, e)?;
                writeln!(out)?;
            }
        }
    }
    out.flush()
}

#[cfg(test)]
mod tests {
    use super::*;

    const R: EphemeralRange = EphemeralRange::LINUX_DEFAULT;

    #[test]
    fn seed_ports() {
        let http = explain(80, Transport::Tcp, R);
        assert_eq!(http.class, "well-known");
        assert!(!http.ephemeral);
        assert_eq!(http.service, Some("http"));
        assert!(http.usual_software.unwrap().contains("nginx"));
        assert!(http.normal_role.starts_with("server"));

        let django = explain(8000, Transport::Tcp, R);
        assert_eq!(django.class, "registered");
        assert_eq!(django.service, Some("django"));
        assert_eq!(
            django.iana,
            Some(Iana {
                name: "irdmi",
                description: "iRDMI"
            })
        );

        let temp = explain(49902, Transport::Tcp, R);
        assert_eq!(temp.class, "dynamic");
        assert!(temp.ephemeral);
        assert_eq!(temp.service, None);
        assert!(temp.normal_role.starts_with("client"));

        let both = explain(40000, Transport::Tcp, R);
        assert_eq!(both.class, "registered");
        assert!(both.ephemeral);
        assert!(both.normal_role.starts_with("either"));

        assert!(explain(62000, Transport::Tcp, R)
            .normal_role
            .contains("outside this host's ephemeral range"));
    }

    #[test]
    fn text_output() {
        let mut buf = Vec::new();
        render_text(
            &[
                explain(21, Transport::Tcp, R),
                explain(51031, Transport::Udp, R),
            ],
            &mut buf,
        )
        .unwrap();
        let text = String::from_utf8(buf).unwrap();
        assert!(text.contains("port 21/tcp\n  class          well-known (0-1023)"));
        assert!(text.contains("  IANA           ftp (File Transfer Protocol [Control])"));
        assert!(text.contains("port 51031/udp\n  class          dynamic (49152-65535)"));
        assert!(text.contains("  ephemeral      yes (this host's ephemeral range is 32768-60999)"));
    }

    #[test]
    fn udp_ports() {
        let dns = explain(53, Transport::Udp, R);
        assert_eq!((dns.service, dns.class), (Some("domain"), "well-known"));
        assert!(dns.usual_software.unwrap().contains("Unbound"));
        let wg = explain(51820, Transport::Udp, R);
        assert_eq!((wg.service, wg.iana), (Some("wireguard"), None));
        assert!(wg
            .normal_role
            .starts_with("either: conventionally a server's port"));
        assert_eq!(explain(514, Transport::Tcp, R).service, Some("shell"));
        assert_eq!(explain(514, Transport::Udp, R).service, Some("syslog"));
        let json = serde_json::to_value(explain(123, Transport::Udp, R)).unwrap();
        assert_eq!(
            (json["transport"].as_str(), json["service"].as_str()),
            (Some("udp"), Some("ntp"))
        );
    }
}
