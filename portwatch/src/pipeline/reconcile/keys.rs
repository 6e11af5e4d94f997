//! How a socket is known to the reconciler: TCP's by a fingerprint of its
//! endpoints, UDP's by inode number; the same keys from an event and from the
//! kernel's listing.
use std::{
    collections::HashSet,
    hash::BuildHasher,
    net::{IpAddr, Ipv6Addr},
};

use foldhash::fast::FixedState;

use crate::{
    event::{
        address::plain,
        model::{TcpState, Transport},
    },
    kernel::sockdiag::DiagSocket,
};

/// One end, compactly: the address as IPv6 (IPv4 mapped), and the port.
pub(super) type End = ([u8; 16], u16);

pub(super) fn end(addr: IpAddr, port: u16) -> End {
    let v6 = match plain(addr) {
        IpAddr::V4(v4) => v4.to_ipv6_mapped(),
        IpAddr::V6(v6) => v6,
    };
    (v6.octets(), port)
}

/// The wildcard address of `addr`'s family.
pub(super) fn unspecified(addr: IpAddr) -> IpAddr {
    match addr {
        IpAddr::V4(_) => std::net::Ipv4Addr::UNSPECIFIED.into(),
        IpAddr::V6(_) => Ipv6Addr::UNSPECIFIED.into(),
    }
}

pub(super) fn addr_of(end: &End) -> IpAddr {
    plain(IpAddr::V6(Ipv6Addr::from(end.0)))
}

/// One socket's endpoints as a number, the same from an event and from the
/// kernel's listing.
pub(super) fn fingerprint(local: &End, remote: &End) -> u64 {
    FixedState::with_seed(0x706f_7274_7761_7463).hash_one((local, remote))
}

/// The keys of the sockets of a listing: TCP ones' fingerprints, UDP ones' inode
/// numbers (hashed again, cheaply).
pub type Keys = HashSet<u64, foldhash::fast::RandomState>;

/// The key of a socket of the kernel's listing, unless it stands for a closed one
/// (TCP's TIME_WAIT, CLOSE; UDP's CLOSE is unconnected, and listed only if open).
pub fn listed(s: &DiagSocket) -> Option<u64> {
    const TIME_WAIT: u8 = TcpState::TimeWait as u8;
    const CLOSE: u8 = TcpState::Close as u8;
    match s.proto {
        Transport::Udp => Some(u64::from(s.inode)),
        Transport::Tcp => (s.state != TIME_WAIT && s.state != CLOSE)
            .then(|| fingerprint(&end(s.local.0, s.local.1), &end(s.remote.0, s.remote.1))),
    }
}

/// The kernel's sockets at one look, by [`listed`] key: per protocol, None when it
/// was not listed (its sockets are left as they were).
#[derive(Debug, Default)]
pub struct Listing {
    pub tcp: Option<Keys>,
    pub udp: Option<Keys>,
}
