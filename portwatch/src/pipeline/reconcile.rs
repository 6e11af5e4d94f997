//! Closes the kernel side never reported. Every socket an event opened is kept
//! until its close comes; a socket the kernel no longer has (absent from two
//! sock_diag listings in a row, the ring buffer drained before each) whose close
//! still has not come is closed here, with an event marked `inferred`. So no
//! socket stays open forever in the output or the history because its close went
//! missing: lost in a full ring buffer, or a state change the kernel ran no
//! program for without counting a miss.
//!
//! Sockets are known by their endpoints, the same in an event, in the kernel's
//! listing and under either owner store (whose socket ids differ), through a
//! 64-bit fingerprint: a collision can only keep a socket open longer, never close
//! a live one. A live socket's endpoints are unique in its network namespace, so
//! only sockets of this one (the namespace sock_diag lists) are followed.
use std::{
    collections::HashSet,
    hash::BuildHasher,
    net::{IpAddr, Ipv6Addr},
    sync::Arc,
};

use foldhash::{fast::FixedState, HashMap};

use chrono::{DateTime, Utc};

use crate::{
    event::{
        address::plain,
        classify::{endpoint, EphemeralRange},
        model::{ConnEvent, EventKind, Family, Owner, Role, TcpState},
        notes,
    },
    kernel::sockdiag::DiagSocket,
};

/// One end, compactly: the address as IPv6 (IPv4 mapped), and the port.
type End = ([u8; 16], u16);

fn end(addr: IpAddr, port: u16) -> End {
    let v6 = match plain(addr) {
        IpAddr::V4(v4) => v4.to_ipv6_mapped(),
        IpAddr::V6(v6) => v6,
    };
    (v6.octets(), port)
}

fn addr_of(end: &End) -> IpAddr {
    plain(IpAddr::V6(Ipv6Addr::from(end.0)))
}

/// One socket's endpoints as a number, the same from an event and from the
/// kernel's listing.
fn fingerprint(local: &End, remote: &End) -> u64 {
    FixedState::with_seed(0x706f_7274_7761_7463).hash_one((local, remote))
}

/// Sets of fingerprints (already hashes: hashed again, cheaply).
pub type Fingerprints = HashSet<u64, foldhash::fast::RandomState>;

/// The fingerprint of a socket of the kernel's listing, unless it stands for a
/// closed one (TIME_WAIT, CLOSE).
pub fn listed(s: &DiagSocket) -> Option<u64> {
    const TIME_WAIT: u8 = TcpState::TimeWait as u8;
    const CLOSE: u8 = TcpState::Close as u8;
    (s.state != TIME_WAIT && s.state != CLOSE)
        .then(|| fingerprint(&end(s.local.0, s.local.1), &end(s.remote.0, s.remote.1)))
}

/// What is kept of an open socket to close it later: about 80 bytes.
struct Open {
    sock_id: u64,
    /// When it opened, ns since the epoch.
    opened_ns: i64,
    local: End,
    remote: End,
    /// 0: not known.
    netns: u32,
    role: Role,
    family: Family,
    pid_exact: bool,
    /// Shared by the sockets of one owner.
    owner: Option<Arc<Owner>>,
    /// When the last listing, absent from it, was taken (ns since the epoch); 0
    /// when it was there.
    absent_ns: i64,
}

/// The sockets the stream has opened and not yet closed, of this network
/// namespace.
pub struct OpenSockets {
    /// This process's network namespace; None: unknown, only snapshot sockets
    /// are followed.
    netns: Option<u64>,
    /// By fingerprint.
    open: HashMap<u64, Open>,
    /// The last owner stored, shared with the next socket of the same owner.
    last_owner: Option<Arc<Owner>>,
}

impl Default for OpenSockets {
    fn default() -> Self {
        OpenSockets {
            netns: crate::enrich::procfs::read_netns("self"),
            open: HashMap::default(),
            last_owner: None,
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

    fn shared_owner(&mut self, owner: &Option<Owner>) -> Option<Arc<Owner>> {
        let owner = owner.as_ref()?;
        match &self.last_owner {
            Some(last) if **last == *owner => Some(last.clone()),
            _ => {
                let shared = Arc::new(owner.clone());
                self.last_owner = Some(shared.clone());
                Some(shared)
            }
        }
    }

    /// Follow one event shown: an opening one starts a socket, a closing one ends it.
    pub fn follow(&mut self, e: &ConnEvent) {
        let local = end(e.local.addr, e.local.port);
        let remote = end(e.remote.addr, e.remote.port);
        let key = fingerprint(&local, &remote);
        match e.kind {
            EventKind::Listen | EventKind::Accept | EventKind::Connect | EventKind::Snapshot
                if self.here(e) =>
            {
                let owner = self.shared_owner(&e.owner);
                self.open.insert(
                    key,
                    Open {
                        sock_id: e.sock_id,
                        opened_ns: e.time.timestamp_nanos_opt().unwrap_or(0),
                        local,
                        remote,
                        netns: e.netns.unwrap_or(0),
                        role: e.role,
                        family: e.family,
                        pid_exact: e.pid_exact,
                        owner,
                        absent_ns: 0,
                    },
                );
            }
            EventKind::Close | EventKind::ConnectFailed => {
                self.open.remove(&key);
            }
            _ => {}
        }
    }

    /// Sockets open in the stream now.
    pub fn len(&self) -> usize {
        self.open.len()
    }

    /// Whether no socket is open in the stream.
    pub fn is_empty(&self) -> bool {
        self.open.is_empty()
    }

    /// Compare with the kernel's sockets (`alive`: the fingerprints of a listing
    /// taken at `now`, after the ring buffer was drained): the sockets absent from
    /// this listing and from the one before are closed, as keys for
    /// [`OpenSockets::close`]; the others absent now are looked at again next time.
    pub fn reconcile(&mut self, alive: &Fingerprints, now: DateTime<Utc>) -> Vec<u64> {
        let now_ns = now.timestamp_nanos_opt().unwrap_or(1);
        let mut closed = Vec::new();
        for (key, open) in self.open.iter_mut() {
            if alive.contains(key) {
                open.absent_ns = 0;
            } else if open.absent_ns != 0 {
                closed.push(*key);
            } else {
                open.absent_ns = now_ns;
            }
        }
        // Memory back once a crowd of sockets is gone.
        if self.open.capacity() > 4 * (self.open.len() + closed.len()) + 1024 {
            self.open.shrink_to(2 * (self.open.len() + closed.len()));
        }
        closed
    }

    /// The close event of socket `key` (one `reconcile` returned), which stops
    /// following it. Its time is that of the first listing without it: the socket
    /// closed before.
    pub fn close(&mut self, key: u64, range: EphemeralRange) -> Option<ConnEvent> {
        let open = self.open.remove(&key)?;
        // Closed at its first absence at the latest.
        let time = DateTime::from_timestamp_nanos(open.absent_ns);
        let opened = DateTime::from_timestamp_nanos(open.opened_ns);
        let mut event = ConnEvent {
            time,
            kind: EventKind::Close,
            role: open.role,
            family: open.family,
            owner: open.owner.map(|o| (*o).clone()),
            pid_exact: open.pid_exact,
            local: endpoint(addr_of(&open.local), open.local.1, range),
            remote: endpoint(addr_of(&open.remote), open.remote.1, range),
            state: TcpState::Close,
            old_state: if open.role == Role::Listener {
                TcpState::Listen
            } else {
                TcpState::Established
            },
            sock_id: open.sock_id,
            netns: (open.netns != 0).then_some(open.netns),
            duration: (time - opened).to_std().ok(),
            error: None,
            process: None,
            notes: Vec::new(),
            lifetime: None,
            inferred: true,
        };
        event.notes = notes::notes(&event, range);
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

    fn key(e: &ConnEvent) -> u64 {
        fingerprint(
            &end(e.local.addr, e.local.port),
            &end(e.remote.addr, e.remote.port),
        )
    }

    fn listing(sockets: &[&ConnEvent]) -> Fingerprints {
        sockets.iter().map(|e| key(e)).collect()
    }

    #[test]
    fn a_socket_absent_twice_is_closed_once() {
        let mut open = OpenSockets::default();
        let e = event(EventKind::Connect, None);
        open.follow(&e);
        let now = Utc::now();
        assert!(open.reconcile(&listing(&[&e]), now).is_empty());
        // Gone once: looked at again, not closed yet.
        assert!(open.reconcile(&Fingerprints::default(), now).is_empty());
        let closed = open.reconcile(&Fingerprints::default(), now + chrono::Duration::seconds(5));
        assert_eq!(closed, vec![key(&e)]);
        let close = open.close(key(&e), EphemeralRange::of_host()).unwrap();
        assert_eq!(close.sock_id, e.sock_id);
        assert_eq!(close.netns, e.netns);
        assert_eq!(close.kind, EventKind::Close);
        assert!(close.inferred);
        // Closed at the first listing without it.
        assert_eq!(close.time, now);
        assert_eq!(
            (close.local.port, close.remote.port),
            (e.local.port, e.remote.port)
        );
        assert_eq!(close.owner, e.owner);
        assert_eq!(open.len(), 0);
        assert!(open.reconcile(&Fingerprints::default(), now).is_empty());
    }

    #[test]
    fn a_socket_back_in_the_listing_or_closed_by_its_event_is_not_closed() {
        let mut open = OpenSockets::default();
        let e = event(EventKind::Listen, None);
        open.follow(&e);
        let now = Utc::now();
        // Absent once (a listener is listed only once hashed), then there.
        assert!(open.reconcile(&Fingerprints::default(), now).is_empty());
        assert!(open.reconcile(&listing(&[&e]), now).is_empty());
        assert!(open.reconcile(&Fingerprints::default(), now).is_empty());
        // Its close came between two listings.
        let mut close = e.clone();
        close.kind = EventKind::Close;
        open.follow(&close);
        assert!(open.reconcile(&Fingerprints::default(), now).is_empty());
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
    fn a_close_with_another_socket_id_still_ends_its_socket() {
        // The LRU store names a socket whose entry was evicted differently.
        let mut open = OpenSockets::default();
        let e = event(EventKind::Accept, None);
        open.follow(&e);
        let mut close = e.clone();
        close.kind = EventKind::Close;
        close.sock_id ^= 1;
        open.follow(&close);
        assert_eq!(open.len(), 0);
    }

    #[test]
    fn ipv4_mapped_addresses_match_ipv4() {
        let v4 = end(IpAddr::from([127, 0, 0, 1]), 80);
        let mapped = end(
            IpAddr::from(std::net::Ipv4Addr::new(127, 0, 0, 1).to_ipv6_mapped()),
            80,
        );
        let any = end(IpAddr::from([0, 0, 0, 0]), 0);
        assert_eq!(fingerprint(&v4, &any), fingerprint(&mapped, &any));
        assert_ne!(fingerprint(&v4, &any), fingerprint(&any, &v4));
        assert_eq!(addr_of(&v4), IpAddr::from([127, 0, 0, 1]));
    }
}
