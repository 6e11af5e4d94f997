//! What is unusual about an event, and the sentence the seed document would write
//! for it. Per the seed: servers use well-known and registered ports, clients use
//! dynamic (temporary) ports; events that break this are worth a second look.
use crate::{
    classify::{EphemeralRange, PortClass},
    model::{ConnEvent, Endpoint, EventKind, Role},
    output::escape_control,
};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Note {
    /// A listener on a port the kernel may also hand to clients as a temporary port.
    ListenerInEphemeralRange,
    /// A listener on an IANA dynamic (private, temporary) port.
    ListenerOnDynamicPort,
    /// A connection served on an IANA dynamic port.
    ServerOnDynamicPort,
    /// A client whose own port is a well-known (system) port.
    ClientFromWellKnownPort,
    /// A client whose own port is outside the host's ephemeral range: bound on purpose.
    ClientFromFixedPort,
    /// A client connecting to a dynamic (temporary) port on the other side.
    ClientToDynamicPort,
}

impl Note {
    /// Stable identifier (JSON `notes`).
    pub fn code(self) -> &'static str {
        match self {
            Note::ListenerInEphemeralRange => "listener-in-ephemeral-range",
            Note::ListenerOnDynamicPort => "listener-on-dynamic-port",
            Note::ServerOnDynamicPort => "server-on-dynamic-port",
            Note::ClientFromWellKnownPort => "client-from-well-known-port",
            Note::ClientFromFixedPort => "client-from-fixed-port",
            Note::ClientToDynamicPort => "client-to-dynamic-port",
        }
    }

    /// Short human text (table DETAIL).
    pub fn text(self) -> &'static str {
        match self {
            Note::ListenerInEphemeralRange => "listener in the ephemeral range",
            Note::ListenerOnDynamicPort => "listener on a dynamic port",
            Note::ServerOnDynamicPort => "server on a dynamic port",
            Note::ClientFromWellKnownPort => "client from a well-known port",
            Note::ClientFromFixedPort => "client from a non-ephemeral port",
            Note::ClientToDynamicPort => "client to a dynamic port",
        }
    }
}

/// The notes for an event, from its role and its ports' classes.
pub fn notes(e: &ConnEvent, range: EphemeralRange) -> Vec<Note> {
    let mut out = Vec::new();
    match e.role {
        Role::Listener => {
            if range.contains(e.local.port) {
                out.push(Note::ListenerInEphemeralRange);
            }
            if e.local.class == PortClass::Dynamic {
                out.push(Note::ListenerOnDynamicPort);
            }
        }
        Role::Server => {
            if e.local.class == PortClass::Dynamic {
                out.push(Note::ServerOnDynamicPort);
            }
        }
        Role::Client => {
            if e.local.class == PortClass::WellKnown && e.local.port != 0 {
                out.push(Note::ClientFromWellKnownPort);
            } else if e.local.port != 0 && !range.contains(e.local.port) {
                out.push(Note::ClientFromFixedPort);
            }
            if e.remote.class == PortClass::Dynamic {
                out.push(Note::ClientToDynamicPort);
            }
        }
    }
    out
}

/// `HTTP service`: short service names read as acronyms, as the seed writes them.
fn service_phrase(e: &Endpoint) -> Option<String> {
    e.service.map(|s| {
        if s.len() <= 5 && !s.contains('-') {
            format!("{} service", s.to_uppercase())
        } else {
            format!("{s} service")
        }
    })
}

/// `temporary port 51031`, or just `port 2000` when it is not one.
fn own_port(e: &Endpoint) -> String {
    if e.ephemeral || e.class == PortClass::Dynamic {
        format!("temporary port {}", e.port)
    } else {
        format!("port {}", e.port)
    }
}

/// The sentence the seed document would write for this event, e.g. "local machine
/// is a client of 222.222.222.222's HTTP service (80) from temporary port 51031".
pub fn sentence(e: &ConnEvent) -> String {
    let remote = e.remote.addr;
    let core = match e.role {
        Role::Listener => match service_phrase(&e.local) {
            Some(svc) => format!(
                "local machine is listening on port {} ({svc})",
                e.local.port
            ),
            None => format!("local machine is listening on port {}", e.local.port),
        },
        Role::Server => format!(
            "local machine serves {remote} on port {}{}; the client uses {}",
            e.local.port,
            service_phrase(&e.local)
                .map(|s| format!(" ({s})"))
                .unwrap_or_default(),
            if e.remote.ephemeral || e.remote.class == PortClass::Dynamic {
                format!("port {} (a temporary client port)", e.remote.port)
            } else {
                format!("port {}", e.remote.port)
            }
        ),
        Role::Client => {
            let target = match service_phrase(&e.remote) {
                Some(svc) => format!("{remote}'s {svc} ({})", e.remote.port),
                None => format!("{remote} port {}", e.remote.port),
            };
            let verb = if e.kind == EventKind::ConnectFailed {
                "failed to connect as a client to"
            } else {
                "is a client of"
            };
            format!("local machine {verb} {target} from {}", own_port(&e.local))
        }
    };
    let who = e
        .owner
        .as_ref()
        .map(|o| format!(" ({} {})", escape_control(&o.comm), o.pid))
        .unwrap_or_default();
    match e.kind {
        EventKind::Close => format!("ended: {core}{who}"),
        EventKind::ConnectFailed => format!(
            "{core}{who}: {}",
            e.error.as_ref().map(|x| x.reason).unwrap_or("failed")
        ),
        _ => format!("{core}{who}"),
    }
}

#[cfg(test)]
mod tests {
    use std::net::IpAddr;

    use super::*;
    use crate::{
        classify::EphemeralRange,
        model::{EventKind, Role},
        output::tests::sample_event,
        services,
    };

    const R: EphemeralRange = EphemeralRange::LINUX_DEFAULT;

    fn with_ports(kind: EventKind, role: Role, local: u16, remote: u16) -> ConnEvent {
        let mut e = sample_event();
        e.kind = kind;
        e.role = role;
        for (ep, port) in [(&mut e.local, local), (&mut e.remote, remote)] {
            ep.port = port;
            ep.class = PortClass::of(port);
            ep.ephemeral = R.contains(port);
            ep.service = services::service_name(port);
        }
        e
    }

    #[test]
    fn the_seed_examples_are_not_unusual() {
        assert!(notes(&with_ports(EventKind::Listen, Role::Listener, 21, 0), R).is_empty());
        assert!(notes(&with_ports(EventKind::Accept, Role::Server, 80, 49902), R).is_empty());
        assert!(notes(&with_ports(EventKind::Connect, Role::Client, 51031, 80), R).is_empty());
        assert!(notes(&with_ports(EventKind::Connect, Role::Client, 60718, 80), R).is_empty());
    }

    #[test]
    fn breaking_the_seed_rules_is_noted() {
        assert_eq!(
            notes(&with_ports(EventKind::Listen, Role::Listener, 40000, 0), R),
            vec![Note::ListenerInEphemeralRange]
        );
        assert_eq!(
            notes(&with_ports(EventKind::Listen, Role::Listener, 55000, 0), R),
            vec![Note::ListenerInEphemeralRange, Note::ListenerOnDynamicPort]
        );
        assert_eq!(
            notes(&with_ports(EventKind::Listen, Role::Listener, 62000, 0), R),
            vec![Note::ListenerOnDynamicPort]
        );
        assert_eq!(
            notes(
                &with_ports(EventKind::Accept, Role::Server, 50000, 40000),
                R
            ),
            vec![Note::ServerOnDynamicPort]
        );
        assert_eq!(
            notes(&with_ports(EventKind::Connect, Role::Client, 22, 80), R),
            vec![Note::ClientFromWellKnownPort]
        );
        assert_eq!(
            notes(&with_ports(EventKind::Close, Role::Client, 2000, 80), R),
            vec![Note::ClientFromFixedPort]
        );
        assert_eq!(
            notes(
                &with_ports(EventKind::Connect, Role::Client, 40000, 55000),
                R
            ),
            vec![Note::ClientToDynamicPort]
        );
    }

    #[test]
    fn sentences_read_like_the_seed() {
        let mut e = with_ports(EventKind::Connect, Role::Client, 51031, 80);
        e.remote.addr = "222.222.222.222".parse::<IpAddr>().unwrap();
        assert_eq!(
            sentence(&e),
            "local machine is a client of 222.222.222.222's HTTP service (80) from temporary port 51031 (curl 4242)"
        );
        let l = with_ports(EventKind::Listen, Role::Listener, 21, 0);
        assert!(sentence(&l).starts_with("local machine is listening on port 21 (FTP service)"));
        let mut s = with_ports(EventKind::Accept, Role::Server, 80, 49902);
        s.remote.addr = "111.111.111.111".parse::<IpAddr>().unwrap();
        assert!(sentence(&s).starts_with(
            "local machine serves 111.111.111.111 on port 80 (HTTP service); the client uses port 49902 (a temporary client port)"
        ));
        let mut hostile = e.clone();
        hostile.owner.as_mut().unwrap().comm = "x\x1b[2J".into();
        assert!(!sentence(&hostile).contains('\x1b'));
    }
}
