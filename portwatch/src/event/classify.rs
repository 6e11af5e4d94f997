//! Port and role classification, as the seed document (notes on ports) describes it.
//! Pure code: no kernel, no files (the ephemeral range is read by the caller).
use std::{net::IpAddr, str::FromStr};

use super::{
    model::{Endpoint, EventKind, PortClass, Role},
    services,
};

/// The host's ephemeral (temporary client) port range,
/// `/proc/sys/net/ipv4/ip_local_port_range`. Linux's default, 32768-60999, is not
/// IANA's dynamic range: a port can be registered and ephemeral at once.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EphemeralRange {
    pub low: u16,
    pub high: u16,
}

impl EphemeralRange {
    /// Where the sysctl is absent (not Linux, or no /proc), Linux's default.
    pub const LINUX_DEFAULT: EphemeralRange = EphemeralRange {
        low: 32768,
        high: 60999,
    };
    pub const PATH: &'static str = "/proc/sys/net/ipv4/ip_local_port_range";

    pub fn contains(self, port: u16) -> bool {
        (self.low..=self.high).contains(&port)
    }

    /// This host's range, or Linux's default where it cannot be read.
    pub fn of_host() -> EphemeralRange {
        std::fs::read_to_string(Self::PATH)
            .ok()
            .and_then(|text| text.parse().ok())
            .unwrap_or(Self::LINUX_DEFAULT)
    }
}

impl FromStr for EphemeralRange {
    type Err = String;

    /// The sysctl's format: two numbers separated by white space.
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let mut parts = text.split_whitespace().map(str::parse::<u16>);
        match (parts.next(), parts.next(), parts.next()) {
            (Some(Ok(low)), Some(Ok(high)), None) if low <= high => {
                Ok(EphemeralRange { low, high })
            }
            _ => Err(format!("not a port range: {text:?}")),
        }
    }
}

/// A classified endpoint of a `transport` socket.
pub fn endpoint(
    addr: IpAddr,
    port: u16,
    range: EphemeralRange,
    transport: services::Transport,
) -> Endpoint {
    Endpoint {
        addr,
        port,
        class: PortClass::of(port),
        ephemeral: range.contains(port),
        service: services::service_name(port, transport),
    }
}

/// The role of the local machine in an event. Listen, accept and connect say it by
/// themselves; a close carries the role its socket began with (`origin`), and only
/// for a socket whose beginning was not seen is it inferred from the ports, the way
/// the seed reads a netstat line: a temporary local port facing a non-temporary
/// remote port is a client.
pub fn role(
    kind: EventKind,
    origin: Option<Role>,
    local_port: u16,
    remote_port: u16,
    range: EphemeralRange,
) -> Role {
    match kind {
        EventKind::Listen => Role::Listener,
        EventKind::Accept => Role::Server,
        EventKind::Connect | EventKind::ConnectFailed => Role::Client,
        EventKind::Close | EventKind::Snapshot => origin.unwrap_or_else(|| {
            let local_temporary = range.contains(local_port) || local_port >= 49152;
            let remote_temporary = range.contains(remote_port) || remote_port >= 49152;
            if local_temporary && !remote_temporary {
                Role::Client
            } else {
                Role::Server
            }
        }),
    }
}

/// The reason a connect failed, from the errno the kernel left on the socket.
pub fn connect_failure_reason(errno: i32) -> &'static str {
    match errno {
        0 => "aborted before established",
        libc::ECONNREFUSED => "refused",
        libc::ETIMEDOUT => "timed out",
        libc::EHOSTUNREACH => "host unreachable",
        libc::ENETUNREACH => "network unreachable",
        libc::ECONNRESET => "reset",
        libc::ECONNABORTED => "aborted",
        libc::EACCES | libc::EPERM => "denied",
        libc::EPROTO => "protocol error",
        _ => "error",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iana_ranges_at_their_edges() {
        assert_eq!(PortClass::of(0), PortClass::WellKnown);
        assert_eq!(PortClass::of(21), PortClass::WellKnown);
        assert_eq!(PortClass::of(1023), PortClass::WellKnown);
        assert_eq!(PortClass::of(1024), PortClass::Registered);
        assert_eq!(PortClass::of(5432), PortClass::Registered);
        assert_eq!(PortClass::of(49151), PortClass::Registered);
        assert_eq!(PortClass::of(49152), PortClass::Dynamic);
        assert_eq!(PortClass::of(49902), PortClass::Dynamic);
        assert_eq!(PortClass::of(65535), PortClass::Dynamic);
    }

    #[test]
    fn ephemeral_range_parses_the_sysctl_and_differs_from_iana() {
        let range: EphemeralRange = "32768\t60999\n".parse().unwrap();
        assert_eq!(range, EphemeralRange::LINUX_DEFAULT);
        // Registered by IANA, yet a temporary port on Linux.
        assert!(range.contains(40000));
        assert_eq!(PortClass::of(40000), PortClass::Registered);
        // Dynamic by IANA, yet outside Linux's default range.
        assert!(!range.contains(61000));
        assert_eq!(PortClass::of(61000), PortClass::Dynamic);
        assert!("1 2 3".parse::<EphemeralRange>().is_err());
        assert!("60999 32768".parse::<EphemeralRange>().is_err());
        assert!("".parse::<EphemeralRange>().is_err());
    }

    #[test]
    fn roles_follow_the_seed_final_example() {
        let r = EphemeralRange::LINUX_DEFAULT;
        // 0: listening on 21.
        assert_eq!(role(EventKind::Listen, None, 21, 0, r), Role::Listener);
        // 1: 127.0.0.1:80 <- 111.111.111.111:49902, handling a client.
        assert_eq!(role(EventKind::Accept, None, 80, 49902, r), Role::Server);
        assert_eq!(role(EventKind::Close, None, 80, 49902, r), Role::Server);
        // 2 and 3: temporary ports 51031 and 60718 connecting to port 80.
        assert_eq!(role(EventKind::Connect, None, 51031, 80, r), Role::Client);
        assert_eq!(role(EventKind::Close, None, 51031, 80, r), Role::Client);
        assert_eq!(role(EventKind::Close, None, 60718, 80, r), Role::Client);
        // A close says the role its socket began with, whatever the ports look like.
        assert_eq!(
            role(EventKind::Close, Some(Role::Server), 51031, 80, r),
            Role::Server
        );
    }

    #[test]
    fn connect_failures_are_named() {
        assert_eq!(connect_failure_reason(libc::ECONNREFUSED), "refused");
        assert_eq!(connect_failure_reason(libc::ETIMEDOUT), "timed out");
        assert_eq!(connect_failure_reason(0), "aborted before established");
        assert_eq!(connect_failure_reason(9999), "error");
    }
}
