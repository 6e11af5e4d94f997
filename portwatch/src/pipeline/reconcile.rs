//! Closes the kernel side never reported. Every socket an event opened is kept
//! until its close comes; a socket the kernel no longer has (absent from two
//! sock_diag listings in a row, the ring buffer drained in between) whose close
//! still has not come is closed here, with an event marked `inferred`. So no
//! socket stays open forever in the output or the history because its close went
//! missing: lost in a full ring buffer, or a state change the kernel ran no
//! program for without counting a miss.
//!
//! Sockets are matched with the kernel's listing by their endpoints (the ids differ
//! between the two on the LRU store), through a 64-bit fingerprint: a collision
//! can only keep a socket open longer, never close a live one.
use std::{
    collections::{hash_map::DefaultHasher, HashMap, HashSet},
    hash::{Hash, Hasher},
    net::IpAddr,
};

use chrono::{DateTime, Utc};

use crate::{
    event::{
        address::plain,
        model::{ConnEvent, EventKind, Family, Owner, Role, TcpState},
    },
    kernel::sockdiag::DiagSocket,
};

/// What is kept of an open socket to close it later.
struct Open {
    fingerprint: u64,
    opened: DateTime<Utc>,
    role: Role,
    family: Family,
    pid_exact: bool,
    netns: Option<u32>,
    local: (IpAddr, u16),
    remote: (IpAddr, u16),
    owner: Option<Box<Owner>>,
}

/// The sockets the stream has opened and not yet closed, of this network
/// namespace (the only one sock_diag lists): about 100 bytes each.
pub struct OpenSockets {
    /// This process's network namespace; None: unknown, nothing is followed.
    netns: Option<u64>,
    open: HashMap<u64, Open>,
    /// Sockets absent from the last listing, with its time.
    absent: HashMap<u64, DateTime<Utc>>,
}

/// One socket's endpoints as a number, the same from an event and from the
/// kernel's listing (IPv4-mapped addresses as IPv4).
fn fingerprint(local: (IpAddr, u16), remote: (IpAddr, u16)) -> u64 {
    let mut h = DefaultHasher::new();
    (plain(local.0), local.1, plain(remote.0), remote.1).hash(&mut h);
    h.finish()
}

/// The sockets the kernel has now (a listing of every state but TIME_WAIT and
/// CLOSE), as fingerprints.
pub fn alive(sockets: &[DiagSocket]) -> HashSet<u64> {
    const TIME_WAIT: u8 = TcpState::TimeWait as u8;
    const CLOSE: u8 = TcpState::Close as u8;
    sockets
        .iter()
        .filter(|s| s.state != TIME_WAIT && s.state != CLOSE)
        .map(|s| fingerprint(s.local, s.remote))
        .collect()
}

impl Default for OpenSockets {
    fn default() -> Self {
        OpenSockets {
            netns: crate::enrich::procfs::read_netns("self"),
            open: HashMap::new(),
            absent: HashMap::new(),
        }
    }
}

impl OpenSockets {
    /// Whether the socket of `e` is in this network namespace, the one sock_diag
    /// lists: a snapshot's is; a live event's says which it is. A socket of
    /// another namespace, or of one not known, is not followed: this namespace's
    /// listing could not vouch for it.
    fn here(&self, e: &ConnEvent) -> bool {
        e.kind == EventKind::Snapshot
            || (self.netns.is_some() && e.netns.map(u64::from) == self.netns)
    }

    /// Follow one event shown: an opening one starts a socket, a closing one ends it.
    pub fn follow(&mut self, e: &ConnEvent) {
        match e.kind {
            EventKind::Listen | EventKind::Accept | EventKind::Connect | EventKind::Snapshot
                if self.here(e) =>
            {
                let local = (e.local.addr, e.local.port);
                let remote = (e.remote.addr, e.remote.port);
                self.open.insert(
                    e.sock_id,
                    Open {
                        fingerprint: fingerprint(local, remote),
                        opened: e.time,
                        role: e.role,
                        family: e.family,
                        pid_exact: e.pid_exact,
                        netns: e.netns,
                        local,
                        remote,
                        owner: e.owner.clone().map(Box::new),
                    },
                );
            }
            EventKind::Close | EventKind::ConnectFailed => {
                self.open.remove(&e.sock_id);
                self.absent.remove(&e.sock_id);
            }
            _ => {}
        }
    }

    /// Sockets open in the stream now.
    pub fn len(&self) -> usize {
        self.open.len()
    }

    /// Compare with the kernel's sockets (`alive`, listed at `now`, after the ring
    /// buffer was drained): the sockets absent from this listing and from the one
    /// before are closed, as events for the caller to show; the others absent now
    /// are looked at again next time.
    pub fn reconcile(&mut self, alive: &HashSet<u64>, now: DateTime<Utc>) -> Vec<u64> {
        let mut closed = Vec::new();
        let mut absent = HashMap::new();
        for (id, open) in &self.open {
            if alive.contains(&open.fingerprint) {
                continue;
            }
            match self.absent.get(id) {
                Some(_) => closed.push(*id),
                None => {
                    absent.insert(*id, now);
                }
            }
        }
        // Those closed keep their first absence, the time the event will carry.
        for id in &closed {
            if let Some(first) = self.absent.get(id) {
                absent.insert(*id, *first);
            }
        }
        self.absent = absent;
        closed
    }

    /// The close event of socket `id` (one `reconcile` returned), which stops
    /// following it. Its time is that of the first listing without it: the socket
    /// closed before.
    pub fn close(&mut self, id: u64, range: crate::event::classify::EphemeralRange) -> Option<ConnEvent> {
        let open = self.open.remove(&id)?;
        let time = self.absent.remove(&id).unwrap_or_else(Utc::now);
        let endpoint = |(addr, port): (IpAddr, u16)| crate::event::classify::endpoint(addr, port, range);
        let mut event = ConnEvent {
            time,
            kind: EventKind::Close,
            role: open.role,
            family: open.family,
            owner: open.owner.map(|o| *o),
            pid_exact: open.pid_exact,
            local: endpoint(open.local),
            remote: endpoint(open.remote),
            state: TcpState::Close,
            old_state: if open.role == Role::Listener {
                TcpState::Listen
            } else {
                TcpState::Established
            },
            sock_id: id,
            netns: open.netns,
            duration: (time - open.opened).to_std().ok(),
            error: None,
            process: None,
            notes: Vec::new(),
            lifetime: None,
            inferred: true,
        };
        event.notes = crate::event::notes::notes(&event, range);
        Some(event)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::decode::tests::sample_event;

    /// An event of `kind` from a process of this network namespace (`netns`:
    /// another one).
    fn event(kind: EventKind, netns: Option<u32>) -> ConnEvent {
        let mut e = sample_event();
        e.kind = kind;
        e.netns = netns.or_else(|| crate::enrich::procfs::read_netns("self").map(|n| n as u32));
        e
    }

    fn listing(sockets: &[&ConnEvent]) -> HashSet<u64> {
        sockets
            .iter()
            .map(|e| fingerprint((e.local.addr, e.local.port), (e.remote.addr, e.remote.port)))
            .collect()
    }

    #[test]
    fn a_socket_absent_twice_is_closed_once() {
        let mut open = OpenSockets::default();
        let e = event(EventKind::Connect, None);
        open.follow(&e);
        let now = Utc::now();
        assert!(open.reconcile(&listing(&[&e]), now).is_empty());
        // Gone once: looked at again, not closed yet.
        assert!(open.reconcile(&HashSet::new(), now).is_empty());
        let closed = open.reconcile(&HashSet::new(), now + chrono::Duration::seconds(5));
        assert_eq!(closed, vec![e.sock_id]);
        let close = open
            .close(e.sock_id, crate::event::classify::EphemeralRange::of_host())
            .unwrap();
        assert_eq!(close.kind, EventKind::Close);
        assert!(close.inferred);
        // Closed at the first listing without it.
        assert_eq!(close.time, now);
        assert_eq!((close.local.port, close.remote.port), (e.local.port, e.remote.port));
        assert_eq!(close.owner, e.owner);
        assert_eq!(open.len(), 0);
        assert!(open.reconcile(&HashSet::new(), now).is_empty());
    }

    #[test]
    fn a_socket_back_in_the_listing_or_closed_by_its_event_is_not_closed() {
        let mut open = OpenSockets::default();
        let e = event(EventKind::Listen, None);
        open.follow(&e);
        let now = Utc::now();
        // Absent once (a listener is listed only once hashed), then there.
        assert!(open.reconcile(&HashSet::new(), now).is_empty());
        assert!(open.reconcile(&listing(&[&e]), now).is_empty());
        assert!(open.reconcile(&HashSet::new(), now).is_empty());
        // Its close came between two listings.
        let mut close = e.clone();
        close.kind = EventKind::Close;
        open.follow(&close);
        assert!(open.reconcile(&HashSet::new(), now).is_empty());
        assert_eq!(open.len(), 0);
    }

    #[test]
    fn sockets_of_another_network_namespace_or_unknown_process_are_not_followed() {
        let mut open = OpenSockets::default();
        open.follow(&event(EventKind::Accept, Some(1)));
        let mut unknown = sample_event();
        unknown.kind = EventKind::Accept;
        unknown.netns = None;
        open.follow(&unknown);
        assert_eq!(open.len(), 0);
        // A snapshot's socket is of this namespace: sock_diag listed it.
        unknown.kind = EventKind::Snapshot;
        open.follow(&unknown);
        assert_eq!(open.len(), 1);
    }

    #[test]
    fn ipv4_mapped_addresses_match_ipv4() {
        let v4 = (IpAddr::from([127, 0, 0, 1]), 80);
        let mapped = (IpAddr::from(std::net::Ipv4Addr::new(127, 0, 0, 1).to_ipv6_mapped()), 80);
        let any = (IpAddr::from([0, 0, 0, 0]), 0);
        assert_eq!(fingerprint(v4, any), fingerprint(mapped, any));
        assert_ne!(fingerprint(v4, any), fingerprint(any, v4));
    }
}
