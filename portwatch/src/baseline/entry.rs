//! A baseline's entries: as the file has them (`Listener`, `Outbound`), and
//! checked for use (`ExpectedListener`, `ExpectedOutbound`: transport, bind and
//! ports read); and what may be wrong with one.
use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use crate::event::{address::Prefix, model::Transport};

/// What is wrong with one entry (the file names its line).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EntryError {
    #[error("protocol {0:?} is not `tcp` or `udp`")]
    Protocol(String),
    #[error("family {0:?} is not `ipv4` or `ipv6`")]
    Family(String),
    #[error("exe is empty")]
    EmptyExe,
    #[error("bind {0:?} is not `loopback`, `any` or an IP address")]
    Bind(String),
    #[error("port {0} is out of range (1-65535)")]
    PortOutOfRange(i64),
    #[error("port {0:?} is neither a number nor LOW-HIGH")]
    NotAPort(String),
    #[error("port range {0:?} is not LOW-HIGH")]
    NotARange(String),
    #[error("port range {0:?} runs backwards")]
    Backwards(String),
    /// `remote`, with why it is not ADDRESS[/PREFIX].
    #[error("{0}")]
    Remote(String),
}

/// `protocol`: `tcp` or `udp`.
pub fn transport(protocol: &str) -> Result<Transport, EntryError> {
    match protocol {
        "tcp" => Ok(Transport::Tcp),
        "udp" => Ok(Transport::Udp),
        other => Err(EntryError::Protocol(other.into())),
    }
}

/// Where a listener is bound.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Bind {
    Loopback,
    Any,
    Exact(IpAddr),
}

impl Bind {
    pub fn of(addr: IpAddr) -> Bind {
        let addr = crate::event::address::plain(addr);
        if addr.is_unspecified() {
            Bind::Any
        } else if addr.is_loopback() {
            Bind::Loopback
        } else {
            Bind::Exact(addr)
        }
    }

    pub fn text(&self) -> String {
        match self {
            Bind::Loopback => "loopback".into(),
            Bind::Any => "any".into(),
            Bind::Exact(a) => a.to_string(),
        }
    }

    pub fn parse(text: &str) -> Result<Bind, EntryError> {
        match text {
            "loopback" => Ok(Bind::Loopback),
            "any" => Ok(Bind::Any),
            other => other
                .parse()
                .map(Bind::Exact)
                .map_err(|_| EntryError::Bind(other.into())),
        }
    }
}

/// A port, or an inclusive range `LOW-HIGH` (written as a string).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Ports {
    pub low: u16,
    pub high: u16,
}

impl Ports {
    pub fn one(port: u16) -> Ports {
        Ports {
            low: port,
            high: port,
        }
    }

    pub fn contains(&self, port: u16) -> bool {
        (self.low..=self.high).contains(&port)
    }

    /// As the file writes it: a number, or a quoted range.
    pub fn toml(&self) -> String {
        if self.low == self.high {
            self.low.to_string()
        } else {
            format!("\"{}-{}\"", self.low, self.high)
        }
    }
}

/// `port = 22` or `port = "32768-60999"`, as written.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum PortSpec {
    One(i64),
    Range(String),
}

impl PortSpec {
    pub fn ports(&self) -> Result<Ports, EntryError> {
        let port = |n: i64| -> Result<u16, EntryError> {
            u16::try_from(n)
                .ok()
                .filter(|p| *p > 0)
                .ok_or(EntryError::PortOutOfRange(n))
        };
        match self {
            PortSpec::One(n) => port(*n).map(Ports::one),
            PortSpec::Range(text) => {
                let (low, high) = text
                    .split_once('-')
                    .ok_or_else(|| EntryError::NotAPort(text.clone()))?;
                let num = |s: &str| {
                    s.trim()
                        .parse::<i64>()
                        .map_err(|_| EntryError::NotARange(text.clone()))
                };
                let (low, high) = (port(num(low)?)?, port(num(high)?)?);
                if low > high {
                    return Err(EntryError::Backwards(text.clone()));
                }
                Ok(Ports { low, high })
            }
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Listener {
    pub exe: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// `tcp` or `udp`.
    #[serde(default = "tcp")]
    pub protocol: String,
    /// `ipv4`, `ipv6` (which may take IPv4 too when dual-stack).
    pub family: String,
    pub bind: String,
    pub port: PortSpec,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cgroup: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container: Option<String>,
    /// Comes and goes (seen listening while learning, gone at its end): allowed,
    /// but not reported when missing.
    #[serde(default)]
    pub transient: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Outbound {
    pub exe: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    #[serde(default = "tcp")]
    pub protocol: String,
    pub port: PortSpec,
    /// A network the destination is in (ADDRESS[/PREFIX]); any when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remote: Option<String>,
}

fn tcp() -> String {
    "tcp".into()
}

pub fn check_listener(l: &Listener) -> Result<ExpectedListener, EntryError> {
    let proto = transport(&l.protocol)?;
    let ipv6 = match l.family.as_str() {
        "ipv4" => false,
        "ipv6" => true,
        other => return Err(EntryError::Family(other.into())),
    };
    if l.exe.is_empty() {
        return Err(EntryError::EmptyExe);
    }
    Ok(ExpectedListener {
        exe: l.exe.clone(),
        user: l.user.clone(),
        proto,
        ipv6,
        bind: Bind::parse(&l.bind)?,
        ports: l.port.ports()?,
        transient: l.transient,
    })
}

pub fn check_outbound(o: &Outbound) -> Result<ExpectedOutbound, EntryError> {
    let proto = transport(&o.protocol)?;
    if o.exe.is_empty() {
        return Err(EntryError::EmptyExe);
    }
    Ok(ExpectedOutbound {
        exe: o.exe.clone(),
        user: o.user.clone(),
        proto,
        ports: o.port.ports()?,
        remote: o
            .remote
            .as_deref()
            .map(Prefix::parse)
            .transpose()
            .map_err(EntryError::Remote)?,
    })
}

/// A listener entry, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExpectedListener {
    pub exe: String,
    pub user: Option<String>,
    /// A TCP entry is met only by a TCP listener, a UDP entry by a UDP one.
    pub proto: Transport,
    pub ipv6: bool,
    pub bind: Bind,
    pub ports: Ports,
    pub transient: bool,
}

/// An outbound entry, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExpectedOutbound {
    pub exe: String,
    pub user: Option<String>,
    pub proto: Transport,
    pub ports: Ports,
    pub remote: Option<Prefix>,
}

/// A baseline ready for checking.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Expected {
    pub listeners: Vec<ExpectedListener>,
    pub outbound: Vec<ExpectedOutbound>,
}

/// A port and its transport as reasons say it: `53` over TCP (as ever), `53/udp`.
pub fn port_text(ports: Ports, proto: Transport) -> String {
    let ports = if ports.low == ports.high {
        ports.low.to_string()
    } else {
        format!("{}-{}", ports.low, ports.high)
    };
    match proto {
        Transport::Tcp => ports,
        Transport::Udp => format!("{ports}/udp"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn protocols_are_tcp_or_udp() {
        assert_eq!(transport("tcp"), Ok(Transport::Tcp));
        assert_eq!(transport("udp"), Ok(Transport::Udp));
        for bad in ["UDP", "sctp", ""] {
            assert_eq!(transport(bad), Err(EntryError::Protocol(bad.into())));
        }
    }

    #[test]
    fn ports_and_their_errors() {
        assert_eq!(PortSpec::One(53).ports(), Ok(Ports::one(53)));
        assert_eq!(PortSpec::One(0).ports(), Err(EntryError::PortOutOfRange(0)));
        let range = |t: &str| PortSpec::Range(t.into()).ports();
        assert_eq!(range("10-20"), Ok(Ports { low: 10, high: 20 }));
        assert!(matches!(range("20-10"), Err(EntryError::Backwards(_))));
        assert!(matches!(range("x-10"), Err(EntryError::NotARange(_))));
        assert!(matches!(range("10"), Err(EntryError::NotAPort(_))));
        assert!(matches!(
            Bind::parse("10.0.0.300"),
            Err(EntryError::Bind(_))
        ));
    }

    #[test]
    fn reasons_name_udp_ports() {
        assert_eq!(port_text(Ports::one(53), Transport::Tcp), "53");
        assert_eq!(port_text(Ports::one(53), Transport::Udp), "53/udp");
        let range = Ports { low: 10, high: 20 };
        assert_eq!(port_text(range, Transport::Udp), "10-20/udp");
    }
}
