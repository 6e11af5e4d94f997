//! Closes the kernel side never reported. Every socket an event opened is kept
//! until its close comes; a socket the kernel no longer has (absent from two
//! sock_diag listings in a row, the ring buffer drained before each) whose close
//! still has not come is closed here, with an event marked `inferred`. So no
//! socket stays open forever in the output or the history because its close went
//! missing: lost in a full ring buffer, or a state change the kernel ran no
//! program for without counting a miss.
//!
//! TCP sockets are known by their endpoints, the same in an event, in the kernel's
//! listing and under either owner store (whose socket ids differ), through a
//! 64-bit fingerprint: a collision can only keep a socket open longer, never close
//! a live one. A live socket's endpoints are unique in its network namespace, so
//! only sockets of this one (the namespace sock_diag lists) are followed.
//!
//! UDP sockets are known by their inode number, in every event (one per peer, of
//! one socket) and in the kernel's listing. Mode tracepoint has no hook where a
//! UDP socket is released: its closes are all inferred here.
mod keys;

use std::sync::Arc;

use foldhash::HashMap;

use chrono::{DateTime, Utc};

use keys::{addr_of, end, fingerprint, unspecified, End};
pub use keys::{listed, Keys, Listing};

use crate::event::{
    classify::{endpoint, EphemeralRange},
    model::{ConnEvent, EventKind, Family, Owner, Role, TcpState, Transport},
    notes,
};

/// What is kept of an open socket to close it later: about 80 bytes.
struct Open {
    proto: Transport,
    /// The state of its first event (what a UDP socket was: connected or not).
    state: TcpState,
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
    /// Opened by the start-up snapshot.
    from_snapshot: bool,
    /// Its id is the kernel's socket cookie.
    cookie_id: bool,
    /// Shared by the sockets of one owner.
    owner: Option<Arc<Owner>>,
    /// When the last listing, absent from it, was taken (ns since the epoch); 0
    /// when it was there.
    absent_ns: i64,
}

/// Take from `open` the sockets absent from `alive` (a listing taken at `now_ns`)
/// and from the one before; those absent only now are marked.
fn take_absent_twice(open: &mut HashMap<u64, Open>, alive: &Keys, now_ns: i64) -> Vec<Open> {
    let mut gone = Vec::new();
    for (key, socket) in open.iter_mut() {
        if alive.contains(key) {
            socket.absent_ns = 0;
        } else if socket.absent_ns != 0 {
            gone.push(*key);
        } else {
            socket.absent_ns = now_ns;
        }
    }
    let taken = gone.iter().filter_map(|key| open.remove(key)).collect();
    // Memory back once a crowd of sockets is gone.
    if open.capacity() > 4 * open.len() + 1024 {
        open.shrink_to(2 * open.len());
    }
    taken
}

/// A socket set aside: closed by the time of `by`.
struct Aside {
    open: Open,
    /// Its endpoints' fingerprint.
    key: u64,
    by: DateTime<Utc>,
    /// A look has been taken since.
    looked: bool,
}

/// The sockets the stream has opened and not yet closed, of this network
/// namespace.
pub struct OpenSockets {
    /// This process's network namespace; None: unknown, only snapshot sockets
    /// are followed.
    netns: Option<u32>,
    /// TCP sockets, by fingerprint.
    open: HashMap<u64, Open>,
    /// UDP sockets, by inode number.
    udp: HashMap<u64, Open>,
    /// Sockets whose endpoints a later socket took, by socket id: closed, their
    /// close perhaps still to come.
    aside: HashMap<u64, Aside>,
    /// The last owner stored, shared with the next socket of the same owner.
    last_owner: Option<Arc<Owner>>,
}

impl Default for OpenSockets {
    fn default() -> Self {
        OpenSockets {
            netns: crate::enrich::procfs::own_netns(),
            open: HashMap::default(),
            udp: HashMap::default(),
            aside: HashMap::default(),
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
        e.kind == EventKind::Snapshot || (self.netns.is_some() && e.netns == self.netns)
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

    /// What is kept of the socket `e` opens.
    fn opening(&mut self, e: &ConnEvent) -> Open {
        Open {
            proto: e.proto,
            state: e.state,
            sock_id: e.sock_id,
            opened_ns: e.time.timestamp_nanos_opt().unwrap_or(0),
            local: end(e.local.addr, e.local.port),
            remote: if e.proto == Transport::Udp && e.state != TcpState::Established {
                // An unconnected UDP socket has no peer of its own (its flows'
                // peers are not the socket's): its close says so, as the
                // kernel's does.
                end(unspecified(e.local.addr), 0)
            } else {
                end(e.remote.addr, e.remote.port)
            },
            netns: e.netns.unwrap_or(0),
            role: e.role,
            family: e.family,
            pid_exact: e.pid_exact,
            from_snapshot: e.kind == EventKind::Snapshot,
            cookie_id: e.cookie_id,
            owner: self.shared_owner(&e.owner),
            absent_ns: 0,
        }
    }

    /// Follow one event shown: an opening one starts a socket, a closing one ends
    /// it (a UDP socket's: [`Self::follow_udp`]). Two live TCP sockets never
    /// share their endpoints, so a socket whose endpoints another one opens with
    /// (or closes with, both ids being the kernel's cookies) has closed:
    /// unreported (its close lost in a full ring buffer, say), or reported later
    /// (the kernel frees the endpoints a moment before the close's event is
    /// written, so the next socket's events can come first). It is set aside, and
    /// its close inferred at the next look but one unless its own close comes by
    /// then.
    pub fn follow(&mut self, e: &ConnEvent) {
        if e.proto == Transport::Udp {
            return self.follow_udp(e);
        }
        let key = fingerprint(
            &end(e.local.addr, e.local.port),
            &end(e.remote.addr, e.remote.port),
        );
        match e.kind {
            EventKind::Listen | EventKind::Accept | EventKind::Connect | EventKind::Snapshot
                if self.here(e) =>
            {
                let open = self.opening(e);
                if let Some(before) = self.open.insert(key, open) {
                    // A socket opens once: another opening is another socket. But a
                    // snapshot's socket id is sock_diag's cookie, which a live event
                    // may not carry: without two cookies, the same socket perhaps.
                    let same = before.sock_id == e.sock_id
                        || (before.from_snapshot && !(before.cookie_id && e.cookie_id));
                    if !same {
                        self.set_aside(before, key, e.time);
                    }
                }
            }
            EventKind::Close | EventKind::ConnectFailed => {
                // The late close of a socket set aside: by its id; without the
                // cookie for an id, the first close on its endpoints (the next
                // socket's close comes after its own).
                if self.aside.remove(&e.sock_id).is_some() {
                    return;
                }
                if !e.cookie_id {
                    let late = self
                        .aside
                        .iter()
                        .find(|(_, a)| a.key == key)
                        .map(|(id, _)| *id);
                    if let Some(id) = late {
                        self.aside.remove(&id);
                        return;
                    }
                }
                let Some(before) = self.open.remove(&key) else {
                    return;
                };
                // Two cookies that differ: two sockets. An id made otherwise (the
                // LRU store; an accept program that found no cookie yet) may
                // differ between one socket's events.
                if before.cookie_id && e.cookie_id && before.sock_id != e.sock_id {
                    self.set_aside(before, key, e.time);
                }
            }
            _ => {}
        }
    }

    /// Whether `e` opens its UDP socket: the first opening event of a socket of
    /// this namespace, or the kernel's own listen after the start-up snapshot
    /// listed the socket (bound while the snapshot was taken): the exact owner.
    fn opens_udp(&self, e: &ConnEvent) -> bool {
        match self.udp.get(&e.sock_id) {
            None => self.here(e),
            Some(open) => e.kind == EventKind::Listen && open.from_snapshot,
        }
    }

    /// Follow one event of a UDP socket: its first opening event opens it, later
    /// ones (flows to other peers) are of the same socket; the kernel's close ends it.
    fn follow_udp(&mut self, e: &ConnEvent) {
        match e.kind {
            EventKind::Listen | EventKind::Accept | EventKind::Connect | EventKind::Snapshot
                if self.opens_udp(e) =>
            {
                let open = self.opening(e);
                self.udp.insert(e.sock_id, open);
            }
            EventKind::Close | EventKind::ConnectFailed => {
                self.udp.remove(&e.sock_id);
            }
            _ => {}
        }
    }

    /// Whether `e` is a UDP flow (`connect`) of a socket followed as a listener
    /// (one the start-up snapshot found bound): its first datagram to a peer is
    /// a server's answer.
    pub fn is_udp_listener(&self, e: &ConnEvent) -> bool {
        e.proto == Transport::Udp
            && e.kind == EventKind::Connect
            && self
                .udp
                .get(&e.sock_id)
                .is_some_and(|open| open.role == Role::Listener)
    }

    fn set_aside(&mut self, open: Open, key: u64, by: DateTime<Utc>) {
        self.aside.insert(
            open.sock_id,
            Aside {
                open,
                key,
                by,
                looked: false,
            },
        );
    }

    /// Sockets open in the stream now.
    pub fn len(&self) -> usize {
        self.open.len() + self.udp.len()
    }

    /// Whether no socket is open in the stream, and none set aside.
    pub fn is_empty(&self) -> bool {
        self.open.is_empty() && self.udp.is_empty() && self.aside.is_empty()
    }

    /// Whether a socket of `proto` is followed (open, or set aside): the next
    /// look needs the kernel's listing of `proto`.
    pub fn follows(&self, proto: Transport) -> bool {
        match proto {
            Transport::Tcp => !self.open.is_empty() || !self.aside.is_empty(),
            Transport::Udp => !self.udp.is_empty(),
        }
    }

    /// Compare with the kernel's sockets (`listing`, taken at `now` after the
    /// ring buffer was drained): the sockets of a protocol listed that are absent
    /// from this listing and from the one before are closed, and those set aside
    /// before the last look; their close events (`range` to classify their ports)
    /// are returned. The others absent now are looked at again next time.
    pub fn reconcile(
        &mut self,
        listing: &Listing,
        now: DateTime<Utc>,
        range: EphemeralRange,
    ) -> Vec<ConnEvent> {
        let now_ns = now.timestamp_nanos_opt().unwrap_or(1);
        let mut gone = Vec::new();
        if let Some(alive) = &listing.tcp {
            gone.extend(take_absent_twice(&mut self.open, alive, now_ns));
        }
        if let Some(alive) = &listing.udp {
            gone.extend(take_absent_twice(&mut self.udp, alive, now_ns));
        }
        let mut closes: Vec<ConnEvent> = gone
            .into_iter()
            // Closed at its first absence at the latest.
            .map(|open| {
                let time = DateTime::from_timestamp_nanos(open.absent_ns);
                closed_event(open, time, range)
            })
            .collect();
        // Set aside before the last look: their own close did not come since.
        let aged: Vec<u64> = self
            .aside
            .iter_mut()
            .filter_map(|(id, aside)| std::mem::replace(&mut aside.looked, true).then_some(*id))
            .collect();
        for aside in aged.iter().filter_map(|id| self.aside.remove(id)) {
            closes.push(closed_event(aside.open, aside.by, range));
        }
        closes
    }
}

/// The inferred close of `open`, which had closed by `time`: a UDP socket as it
/// was at its first event (the peer of its first flow).
fn closed_event(open: Open, time: DateTime<Utc>, range: EphemeralRange) -> ConnEvent {
    let opened = DateTime::from_timestamp_nanos(open.opened_ns);
    let proto = open.proto;
    let mut event = ConnEvent {
        time,
        kind: EventKind::Close,
        role: open.role,
        proto,
        family: open.family,
        owner: open.owner.map(|o| (*o).clone()),
        pid_exact: open.pid_exact,
        local: endpoint(addr_of(&open.local), open.local.1, range, proto),
        remote: endpoint(addr_of(&open.remote), open.remote.1, range, proto),
        state: TcpState::Close,
        old_state: match proto {
            Transport::Udp => open.state,
            Transport::Tcp if open.role == Role::Listener => TcpState::Listen,
            Transport::Tcp => TcpState::Established,
        },
        sock_id: open.sock_id,
        cookie_id: open.cookie_id,
        netns: (open.netns != 0).then_some(open.netns),
        duration: (time - opened).to_std().ok(),
        error: None,
        process: None,
        notes: Vec::new(),
        lifetime: None,
        inferred: true,
    };
    event.notes = notes::notes(&event, range);
    event
}

#[cfg(test)]
mod tests;
