//! The sentence the ports notes would write for an event (`--explain`).
use super::escape::escape_control;
use crate::event::model::{ConnEvent, Endpoint, EventKind, PortClass, Role};

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
    use crate::event::decode::tests::with_ports;

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
