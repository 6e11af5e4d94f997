//! Raw sockets for the cases std cannot express: bind before connect, a tiny
//! listen backlog, TCP_SYNCNT.
use std::{
    net::{IpAddr, SocketAddr},
    os::fd::{AsRawFd, OwnedFd},
};

use nix::sys::socket::{self, AddressFamily, SockFlag, SockType, SockaddrStorage};

/// A TCP socket bound to `ip`, port chosen by the kernel, and that port.
pub fn bound(ip: IpAddr) -> nix::Result<(OwnedFd, u16)> {
    let family = if ip.is_ipv4() {
        AddressFamily::Inet
    } else {
        AddressFamily::Inet6
    };
    let fd = socket::socket(family, SockType::Stream, SockFlag::empty(), None)?;
    socket::bind(
        fd.as_raw_fd(),
        &SockaddrStorage::from(SocketAddr::new(ip, 0)),
    )?;
    let name: SockaddrStorage = socket::getsockname(fd.as_raw_fd())?;
    let port = name
        .as_sockaddr_in()
        .map(|a| a.port())
        .or_else(|| name.as_sockaddr_in6().map(|a| a.port()))
        .ok_or(nix::Error::EAFNOSUPPORT)?;
    Ok((fd, port))
}

/// connect(), returning the errno it failed with (0 on success).
pub fn connect_errno(fd: &OwnedFd, ip: IpAddr, port: u16) -> i32 {
    match socket::connect(
        fd.as_raw_fd(),
        &SockaddrStorage::from(SocketAddr::new(ip, port)),
    ) {
        Ok(()) => 0,
        Err(e) => e as i32,
    }
}

/// Give up a connect after `retries` SYN retransmissions.
pub fn set_syn_count(fd: &OwnedFd, retries: i32) -> std::io::Result<()> {
    // SAFETY: a valid fd and a pointer to an int of the size passed.
    let rc = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_SYNCNT,
            (&retries as *const i32).cast(),
            std::mem::size_of::<i32>() as u32,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// How many sockets with `port` at either end are still open: every TCP state
/// but TIME_WAIT (whose sockets have already closed, as portwatch reports them),
/// from /proc/net/tcp and tcp6. A test stops portwatch only once this is 0, so
/// that no close is still to come.
pub fn open_on(port: u16) -> usize {
    const TIME_WAIT: &str = "06";
    let port = format!("{port:04X}");
    ["/proc/net/tcp", "/proc/net/tcp6"]
        .iter()
        .filter_map(|f| std::fs::read_to_string(f).ok())
        .map(|text| {
            text.lines()
                .skip(1)
                .filter(|line| {
                    let f: Vec<&str> = line.split_whitespace().collect();
                    let port_of = |a: &str| a.rsplit(':').next() == Some(port.as_str());
                    f.len() > 3 && f[3] != TIME_WAIT && (port_of(f[1]) || port_of(f[2]))
                })
                .count()
        })
        .sum()
}

/// A port nothing listens on: bound (never listened on, so portwatch sees nothing),
/// its number read, and released.
pub fn unused_port(ip: IpAddr) -> anyhow::Result<u16> {
    Ok(bound(ip)?.1)
}

/// The wildcard address of `addr`'s family: where an unconnected client's socket
/// is bound.
pub fn any_of(addr: IpAddr) -> IpAddr {
    match addr {
        IpAddr::V4(_) => std::net::Ipv4Addr::UNSPECIFIED.into(),
        IpAddr::V6(_) => std::net::Ipv6Addr::UNSPECIFIED.into(),
    }
}
