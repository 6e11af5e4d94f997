//! The values of arguments clap cannot parse by itself: each refused with an
//! [`ArgError`] (or a message) that clap prints as a usage error.
use crate::event::services::Transport;

/// A value clap could not take; clap prints it as a usage error (exit 2).
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum ArgError {
    #[error("no user named `{0}`")]
    NoSuchUser(String),
    #[error("`{0}` is not a container id (1 to 64 hex digits)")]
    NotAContainerId(String),
    #[error("`{0}` is not a cgroup path (they start with /)")]
    NotACgroupPath(String),
    #[error("`{0}` is not a whole number of bytes")]
    NotBytes(String),
    #[error("{0} is not a power of two of at least 4096")]
    BadRingbufSize(u32),
}

pub(super) fn parse_uid(text: &str) -> Result<u32, ArgError> {
    if let Ok(uid) = text.parse() {
        return Ok(uid);
    }
    match nix::unistd::User::from_name(text) {
        Ok(Some(user)) => Ok(user.uid.as_raw()),
        _ => Err(ArgError::NoSuchUser(text.to_string())),
    }
}

pub(super) fn parse_container(text: &str) -> Result<String, ArgError> {
    let ok = (1..=64).contains(&text.len()) && text.bytes().all(|b| b.is_ascii_hexdigit());
    if ok {
        Ok(text.to_ascii_lowercase())
    } else {
        Err(ArgError::NotAContainerId(text.to_string()))
    }
}

pub(super) fn parse_cgroup(text: &str) -> Result<String, ArgError> {
    if text.starts_with('/') {
        Ok(text.to_string())
    } else {
        Err(ArgError::NotACgroupPath(text.to_string()))
    }
}

pub(super) fn parse_ringbuf_size(text: &str) -> Result<u32, ArgError> {
    let n: u32 = text
        .parse()
        .map_err(|_| ArgError::NotBytes(text.to_string()))?;
    if n < 4096 || !n.is_power_of_two() {
        return Err(ArgError::BadRingbufSize(n));
    }
    Ok(n)
}

/// A port named on the command line, with its transport when given (`53/udp`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PortSpec {
    pub port: u16,
    pub transport: Option<Transport>,
}

impl PortSpec {
    pub fn new(port: u16, transport: Option<Transport>) -> PortSpec {
        PortSpec { port, transport }
    }
}

/// `PORT`, `PORT/tcp` or `PORT/udp` (any case).
pub(super) fn port_spec(text: &str) -> Result<PortSpec, String> {
    let (number, transport) = match text.split_once('/') {
        Some((n, t)) if t.eq_ignore_ascii_case("tcp") => (n, Some(Transport::Tcp)),
        Some((n, t)) if t.eq_ignore_ascii_case("udp") => (n, Some(Transport::Udp)),
        Some((_, t)) => return Err(format!("`{t}` is not a transport: tcp or udp")),
        None => (text, None),
    };
    let port = number
        .parse::<u16>()
        .map_err(|_| format!("`{number}` is not a port number (0-65535)"))?;
    Ok(PortSpec { port, transport })
}
