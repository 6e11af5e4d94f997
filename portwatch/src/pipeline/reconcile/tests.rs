//! The reconciler against hand-made events and listings.
use super::*;
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

fn listing(sockets: &[&ConnEvent]) -> Fingerprints {
    sockets.iter().map(|e| key(e)).collect()
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
