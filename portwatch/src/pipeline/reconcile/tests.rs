//! The reconciler against hand-made events and listings.
use super::*;
use std::net::IpAddr;

use crate::event::decode::tests::sample_event;

/// An event of `kind` from a process of this network namespace (`netns`:
/// another one).
fn event(kind: EventKind, netns: Option<u32>) -> ConnEvent {
    let mut e = sample_event();
    e.kind = kind;
    e.netns = netns.or_else(crate::enrich::procfs::own_netns);
    // Ids from the kernel's cookie, as with socket storage.
    e.cookie_id = true;
    e
}

fn key(e: &ConnEvent) -> u64 {
    fingerprint(
        &end(e.local.addr, e.local.port),
        &end(e.remote.addr, e.remote.port),
    )
}

/// A listing of TCP sockets only.
fn listing(sockets: &[&ConnEvent]) -> Listing {
    Listing {
        tcp: Some(sockets.iter().map(|e| key(e)).collect()),
        udp: None,
    }
}

fn look(open: &mut OpenSockets, alive: &[&ConnEvent], now: DateTime<Utc>) -> Vec<ConnEvent> {
    open.reconcile(&listing(alive), now, EphemeralRange::of_host())
}

#[test]
fn a_socket_absent_twice_is_closed_once() {
    let mut open = OpenSockets::default();
    let e = event(EventKind::Connect, None);
    open.follow(&e);
    let now = Utc::now();
    assert!(look(&mut open, &[&e], now).is_empty());
    // Gone once: looked at again, not closed yet.
    assert!(look(&mut open, &[], now).is_empty());
    let closed = look(&mut open, &[], now + chrono::Duration::seconds(5));
    let [close] = closed.as_slice() else {
        panic!("{closed:?}")
    };
    assert_eq!(close.kind, EventKind::Close);
    assert!(close.inferred);
    assert_eq!((close.sock_id, close.netns), (e.sock_id, e.netns));
    // Closed at the first listing without it.
    assert_eq!(close.time, now);
    assert_eq!(
        (close.local.port, close.remote.port),
        (e.local.port, e.remote.port)
    );
    assert_eq!(close.owner, e.owner);
    assert!(open.is_empty());
    assert!(look(&mut open, &[], now).is_empty());
}

#[test]
fn a_socket_back_in_the_listing_or_closed_by_its_event_is_not_closed() {
    let mut open = OpenSockets::default();
    let e = event(EventKind::Listen, None);
    open.follow(&e);
    let now = Utc::now();
    // Absent once (a listener is listed only once hashed), then there.
    assert!(look(&mut open, &[], now).is_empty());
    assert!(look(&mut open, &[&e], now).is_empty());
    assert!(look(&mut open, &[], now).is_empty());
    // Its close came between two listings.
    let mut close = e.clone();
    close.kind = EventKind::Close;
    open.follow(&close);
    assert!(look(&mut open, &[], now).is_empty());
    assert!(open.is_empty());
}

#[test]
fn sockets_of_another_network_namespace_or_unknown_are_not_followed() {
    let mut open = OpenSockets::default();
    open.follow(&event(EventKind::Accept, Some(1)));
    let mut unknown = sample_event();
    unknown.kind = EventKind::Accept;
    unknown.netns = None;
    open.follow(&unknown);
    assert!(open.is_empty());
    // A snapshot's socket is of this namespace: sock_diag listed it.
    unknown.kind = EventKind::Snapshot;
    open.follow(&unknown);
    assert_eq!(open.len(), 1);
}

#[test]
fn endpoints_taken_by_another_socket_close_the_first_unless_its_close_comes() {
    let now = Utc::now();
    let mut open = OpenSockets::default();
    let a = event(EventKind::Accept, None);
    open.follow(&a);
    // B opens with A's endpoints: A is set aside.
    let mut b = a.clone();
    b.sock_id ^= 1;
    b.time += chrono::Duration::seconds(1);
    open.follow(&b);
    assert!(look(&mut open, &[&b], now).is_empty());
    // Its own close did not come by the look after: inferred, at B's time.
    let closed = look(&mut open, &[&b], now);
    let [close] = closed.as_slice() else {
        panic!("{closed:?}")
    };
    assert_eq!((close.sock_id, close.time), (a.sock_id, b.time));
    assert_eq!(open.len(), 1);
    // C takes B's endpoints, and B's close comes after C's opening: nothing
    // inferred; C is still open.
    let mut c = b.clone();
    c.sock_id ^= 2;
    open.follow(&c);
    let mut b_close = b.clone();
    b_close.kind = EventKind::Close;
    open.follow(&b_close);
    assert!(look(&mut open, &[&c], now).is_empty());
    assert!(look(&mut open, &[&c], now).is_empty());
    assert_eq!(open.len(), 1);
    // A close with an owner naming another socket than C: C closed too.
    open.follow(&b_close);
    assert_eq!(open.len(), 0);
    assert!(look(&mut open, &[], now).is_empty());
    let closed = look(&mut open, &[], now);
    assert_eq!(
        closed.iter().map(|e| e.sock_id).collect::<Vec<_>>(),
        vec![c.sock_id]
    );
}

#[test]
fn an_id_not_from_the_cookie_may_differ_between_one_sockets_events() {
    // The LRU store names a socket whose entry was evicted differently; an accept
    // program that found no cookie yet makes an id of its own.
    let now = Utc::now();
    let mut open = OpenSockets::default();
    let e = event(EventKind::Accept, None);
    open.follow(&e);
    let mut close = e.clone();
    close.kind = EventKind::Close;
    close.sock_id ^= 1;
    close.cookie_id = false;
    open.follow(&close);
    assert!(open.is_empty());
    assert!(look(&mut open, &[], now).is_empty() && look(&mut open, &[], now).is_empty());
    // A snapshot's id is the cookie; a live event's on the LRU store is not.
    let mut snap = e.clone();
    snap.kind = EventKind::Snapshot;
    open.follow(&snap);
    let mut live = e.clone();
    live.sock_id ^= 2;
    live.cookie_id = false;
    open.follow(&live);
    assert!(look(&mut open, &[&live], now).is_empty());
    assert!(look(&mut open, &[&live], now).is_empty());
    assert_eq!(open.len(), 1);
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

#[test]
fn without_exact_ids_endpoints_alone_name_the_socket() {
    // The LRU store: the same socket's close may carry another id, owner or not.
    let now = Utc::now();
    let mut open = OpenSockets::default();
    let mut e = event(EventKind::Accept, None);
    e.cookie_id = false;
    open.follow(&e);
    let mut close = e.clone();
    close.kind = EventKind::Close;
    close.sock_id ^= 1;
    open.follow(&close);
    assert!(open.is_empty());
    assert!(look(&mut open, &[], now).is_empty() && look(&mut open, &[], now).is_empty());
}

#[test]
fn without_exact_ids_another_opening_still_proves_the_first_socket_closed() {
    let now = Utc::now();
    let mut open = OpenSockets::default();
    let mut a = event(EventKind::Connect, None);
    a.cookie_id = false;
    open.follow(&a);
    let mut b = a.clone();
    b.sock_id ^= 1;
    open.follow(&b);
    // A's close comes late, under yet another id: taken as A's, not B's.
    let mut a_close = a.clone();
    a_close.kind = EventKind::Close;
    a_close.sock_id ^= 4;
    open.follow(&a_close);
    assert_eq!(open.len(), 1);
    assert!(look(&mut open, &[&b], now).is_empty() && look(&mut open, &[&b], now).is_empty());
    // Without its close, A would have been inferred closed.
    let mut c = b.clone();
    c.sock_id ^= 8;
    open.follow(&c);
    assert!(look(&mut open, &[&c], now).is_empty());
    let closed = look(&mut open, &[&c], now);
    assert_eq!(
        closed.iter().map(|e| e.sock_id).collect::<Vec<_>>(),
        vec![b.sock_id]
    );
}

/// An event of the UDP socket with inode `inode`, of this network namespace:
/// `peer` 0 for none (bound and unconnected).
fn udp_event(kind: EventKind, role: Role, inode: u64, peer: u16) -> ConnEvent {
    let range = EphemeralRange::LINUX_DEFAULT;
    let mut e = event(kind, None);
    e.proto = Transport::Udp;
    e.role = role;
    e.sock_id = inode;
    e.cookie_id = false;
    e.local = endpoint(e.local.addr, 5353, range, Transport::Udp);
    e.remote = endpoint(e.remote.addr, peer, range, Transport::Udp);
    e.state = TcpState::Close;
    e.old_state = TcpState::Close;
    e
}

/// A listing of UDP sockets only, by inode.
fn udp_look(open: &mut OpenSockets, inodes: &[u64], now: DateTime<Utc>) -> Vec<ConnEvent> {
    let listing = Listing {
        tcp: None,
        udp: Some(inodes.iter().copied().collect()),
    };
    open.reconcile(&listing, now, EphemeralRange::LINUX_DEFAULT)
}

#[test]
fn several_flows_of_one_udp_socket_are_one_socket_closed_once() {
    let now = Utc::now();
    let mut open = OpenSockets::default();
    let mut listen = udp_event(EventKind::Listen, Role::Listener, 77, 0);
    listen.time = now - chrono::Duration::seconds(10);
    open.follow(&listen);
    // Its first datagram to each of two peers, and the start-up snapshot's row.
    open.follow(&udp_event(EventKind::Accept, Role::Server, 77, 40001));
    open.follow(&udp_event(EventKind::Accept, Role::Server, 77, 40002));
    open.follow(&udp_event(EventKind::Snapshot, Role::Listener, 77, 0));
    assert_eq!(open.len(), 1);
    assert!(open.follows(Transport::Udp) && !open.follows(Transport::Tcp));
    assert!(udp_look(&mut open, &[77], now).is_empty());
    assert!(udp_look(&mut open, &[], now).is_empty());
    let closed = udp_look(&mut open, &[], now + chrono::Duration::seconds(5));
    let [close] = closed.as_slice() else {
        panic!("{closed:?}")
    };
    // As it was at its first event: a listener on 5353 without a peer.
    assert_eq!(
        (close.kind, close.proto, close.role, close.sock_id),
        (EventKind::Close, Transport::Udp, Role::Listener, 77)
    );
    assert!(close.inferred && !close.cookie_id);
    assert!(close.state == TcpState::Close && close.old_state == TcpState::Close);
    assert_eq!((close.local.port, close.remote.port), (5353, 0));
    assert_eq!(close.local.service, Some("mdns"));
    assert_eq!(close.owner, listen.owner);
    // Closed at the first listing without it, 10 s after it opened.
    assert_eq!(close.time, now);
    assert_eq!(close.duration, Some(std::time::Duration::from_secs(10)));
    assert!(open.is_empty() && !open.follows(Transport::Udp));

    // A connected socket: closed as connected, to the peer of its first flow.
    let mut first = udp_event(EventKind::Connect, Role::Client, 78, 53);
    first.state = TcpState::Established;
    first.old_state = TcpState::Established;
    open.follow(&first);
    open.follow(&udp_event(EventKind::Connect, Role::Client, 78, 123));
    assert!(udp_look(&mut open, &[], now).is_empty());
    let closed = udp_look(&mut open, &[], now);
    let [close] = closed.as_slice() else {
        panic!("{closed:?}")
    };
    assert_eq!(
        (close.role, close.remote.port, close.old_state),
        (Role::Client, 53, TcpState::Established)
    );
    assert_eq!(close.remote.service, Some("domain"));
}

/// The owner of a UDP socket's inferred close.
fn udp_close_owner(open: &mut OpenSockets, inode: u64) -> Option<u32> {
    let now = Utc::now();
    assert!(udp_look(open, &[], now).is_empty());
    let closed = udp_look(open, &[], now);
    let [close] = closed.as_slice() else {
        panic!("{closed:?}")
    };
    assert_eq!(close.sock_id, inode);
    close.owner.as_ref().map(|o| o.pid)
}

#[test]
fn a_udp_socket_takes_its_owner_from_its_first_event_or_the_kernels_listen_after_the_snapshot() {
    let owned = |kind, role, pid| {
        let mut e = udp_event(kind, role, 81, 0);
        e.owner.as_mut().expect("sample owner").pid = pid;
        e
    };
    // Listed by the start-up snapshot, then the kernel's own listen: the listen's.
    let mut open = OpenSockets::default();
    open.follow(&owned(EventKind::Snapshot, Role::Listener, 10));
    open.follow(&owned(EventKind::Listen, Role::Listener, 11));
    open.follow(&owned(EventKind::Listen, Role::Listener, 12));
    assert_eq!(udp_close_owner(&mut open, 81), Some(11));
    // Opened live: later events, listens among them, leave its owner.
    open.follow(&owned(EventKind::Listen, Role::Listener, 20));
    open.follow(&owned(EventKind::Listen, Role::Listener, 21));
    open.follow(&owned(EventKind::Snapshot, Role::Listener, 22));
    assert_eq!(udp_close_owner(&mut open, 81), Some(20));
}

#[test]
fn the_kernels_udp_close_stops_inference() {
    let now = Utc::now();
    let mut open = OpenSockets::default();
    open.follow(&udp_event(EventKind::Connect, Role::Client, 79, 53));
    open.follow(&udp_event(EventKind::Connect, Role::Client, 80, 53));
    // Another socket's close on the same endpoints closes only that one.
    open.follow(&udp_event(EventKind::Close, Role::Client, 80, 53));
    assert_eq!(open.len(), 1);
    assert!(udp_look(&mut open, &[79], now).is_empty());
    // Absent once, then the kernel's close (mode fentry or kprobe).
    assert!(udp_look(&mut open, &[], now).is_empty());
    open.follow(&udp_event(EventKind::Close, Role::Client, 79, 53));
    assert!(open.is_empty());
    assert!(udp_look(&mut open, &[], now).is_empty() && udp_look(&mut open, &[], now).is_empty());
}

#[test]
fn a_udp_socket_still_listed_or_not_looked_at_is_not_closed() {
    let now = Utc::now();
    let mut open = OpenSockets::default();
    open.follow(&udp_event(EventKind::Listen, Role::Listener, 81, 0));
    assert!(udp_look(&mut open, &[81, 82], now).is_empty());
    // Absent once, listed again: looked at afresh.
    assert!(udp_look(&mut open, &[], now).is_empty());
    assert!(udp_look(&mut open, &[81], now).is_empty());
    assert!(udp_look(&mut open, &[], now).is_empty());
    // Looks that list TCP only say nothing of it.
    assert!(look(&mut open, &[], now).is_empty());
    assert!(look(&mut open, &[], now).is_empty());
    assert_eq!(open.len(), 1);
    // Another network namespace's UDP socket is not followed.
    let mut elsewhere = udp_event(EventKind::Connect, Role::Client, 83, 53);
    elsewhere.netns = Some(1);
    open.follow(&elsewhere);
    assert_eq!(open.len(), 1);
}

#[test]
fn tcp_sockets_are_followed_apart_from_udp_ones() {
    let now = Utc::now();
    let mut open = OpenSockets::default();
    let tcp = event(EventKind::Connect, None);
    // A UDP socket with the TCP socket's endpoints, its id its TCP cookie.
    let mut udp = udp_event(EventKind::Connect, Role::Client, tcp.sock_id, 0);
    udp.local = tcp.local.clone();
    udp.remote = tcp.remote.clone();
    open.follow(&tcp);
    open.follow(&udp);
    assert_eq!(open.len(), 2);
    assert!(open.follows(Transport::Tcp) && open.follows(Transport::Udp));
    // The UDP socket's close does not close the TCP one, nor the other way.
    let mut udp_close = udp.clone();
    udp_close.kind = EventKind::Close;
    open.follow(&udp_close);
    assert!(open.follows(Transport::Tcp) && !open.follows(Transport::Udp));
    open.follow(&udp);
    let mut tcp_close = tcp.clone();
    tcp_close.kind = EventKind::Close;
    open.follow(&tcp_close);
    assert!(!open.follows(Transport::Tcp) && open.follows(Transport::Udp));
    open.follow(&tcp);
    // A listing of both: the TCP socket gone, the UDP one there; its inode does
    // not keep the TCP socket.
    let listing = Listing {
        tcp: Some(Keys::default()),
        udp: Some([udp.sock_id, key(&tcp)].into_iter().collect()),
    };
    let range = EphemeralRange::LINUX_DEFAULT;
    assert!(open.reconcile(&listing, now, range).is_empty());
    let closed = open.reconcile(&listing, now, range);
    let [close] = closed.as_slice() else {
        panic!("{closed:?}")
    };
    assert_eq!(
        (close.proto, close.sock_id, close.old_state, close.cookie_id),
        (Transport::Tcp, tcp.sock_id, TcpState::Established, true)
    );
    assert!(!open.follows(Transport::Tcp) && open.follows(Transport::Udp));
}

#[test]
fn listed_keys_by_protocol() {
    use crate::kernel::sockdiag::DiagSocket;
    let mut s = DiagSocket {
        proto: Transport::Udp,
        state: TcpState::Close as u8,
        local: (IpAddr::from([127, 0, 0, 1]), 5353),
        remote: (IpAddr::from([0, 0, 0, 0]), 0),
        inode: 4242,
        uid: 0,
        cookie: 9,
    };
    // UDP: the inode, whatever the state (CLOSE is unconnected).
    assert_eq!(listed(&s), Some(4242));
    // TCP: the endpoints' fingerprint, unless closed.
    s.proto = Transport::Tcp;
    assert_eq!(listed(&s), None);
    s.state = TcpState::Listen as u8;
    assert_eq!(
        listed(&s),
        Some(fingerprint(&end(s.local.0, 5353), &end(s.remote.0, 0)))
    );
}
