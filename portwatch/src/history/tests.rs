//! Events written by the writer's batches into a real database and read back by
//! `query`: UDP rows, their closes, the snapshot's, `--proto`.
use std::{net::IpAddr, path::Path, time::Duration};

use rusqlite::Connection;

use super::{
    query::{self, Query},
    schema::{self, OUTCOME_CLOSED, OUTCOME_CLOSED_INFERRED, PROTO_TCP, PROTO_UDP},
    scratch::ScratchDb,
    sockets::Sockets,
    summary,
    time::{from_ns, to_ns},
};
use crate::event::{
    classify::{endpoint, EphemeralRange},
    decode::tests::sample_event,
    model::{ConnEvent, EventKind, Role, TcpState, Transport},
};

const RANGE: EphemeralRange = EphemeralRange::LINUX_DEFAULT;
const HOST: [u8; 4] = [192, 0, 2, 1];
const PEER_A: [u8; 4] = [198, 51, 100, 7];
const PEER_B: [u8; 4] = [198, 51, 100, 8];
const SECOND: i64 = 1_000_000_000;

/// A database with one run, and the writer's state for it (the database lasts
/// as long as the `ScratchDb`).
fn recording() -> (ScratchDb, Connection, Sockets) {
    let db = ScratchDb::new();
    let conn = schema::open_for_recording(&db.path()).unwrap();
    conn.execute(
        "INSERT INTO runs (host, kernel, mode, version, started, heartbeat) VALUES ('h', 'k', 'fentry', 'test', 0, 0)",
        [],
    )
    .unwrap();
    let run = conn.last_insert_rowid();
    (db, conn, Sockets::new(run))
}

/// One batch (one transaction) of `events`.
fn write(conn: &mut Connection, sockets: &mut Sockets, events: Vec<ConnEvent>) {
    let tx = conn.transaction().unwrap();
    let mut batch = sockets.batch(&tx, Path::new("test.db"));
    for e in events {
        batch.event(Box::new(e)).unwrap();
    }
    batch.finish().unwrap();
    tx.commit().unwrap();
}

/// An event of `proto` at second `at`: `local` port on HOST, `remote` (address,
/// port; unspecified for a listener).
fn event(
    proto: Transport,
    kind: EventKind,
    role: Role,
    local: u16,
    remote: ([u8; 4], u16),
    sock_id: u64,
    at: i64,
) -> ConnEvent {
    let mut e = sample_event();
    e.proto = proto;
    e.kind = kind;
    e.role = role;
    e.local = endpoint(IpAddr::from(HOST), local, RANGE, proto);
    e.remote = endpoint(IpAddr::from(remote.0), remote.1, RANGE, proto);
    e.sock_id = sock_id;
    e.time = from_ns(at * SECOND);
    e.duration = None;
    e.inferred = false;
    e
}

fn udp(
    kind: EventKind,
    role: Role,
    local: u16,
    remote: ([u8; 4], u16),
    sock: u64,
    at: i64,
) -> ConnEvent {
    event(Transport::Udp, kind, role, local, remote, sock, at)
}

const NOBODY: ([u8; 4], u16) = ([0, 0, 0, 0], 0);

/// Every row, sorted: (proto, role, remote port, closed, outcome).
fn rows(conn: &Connection) -> Vec<(i64, i64, u16, Option<i64>, i64)> {
    let mut stmt = conn
        .prepare(
            "SELECT proto, role, remote_port, closed, outcome FROM sockets ORDER BY 1, 2, 3, 4, 5",
        )
        .unwrap();
    let rows = stmt
        .query_map([], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
        })
        .unwrap();
    rows.map(Result::unwrap).collect()
}

#[test]
fn udp_rows_are_stored_and_read_back_as_udp() {
    let (_db, mut conn, mut sockets) = recording();
    write(
        &mut conn,
        &mut sockets,
        vec![
            event(
                Transport::Tcp,
                EventKind::Listen,
                Role::Listener,
                514,
                NOBODY,
                7,
                1,
            ),
            udp(EventKind::Listen, Role::Listener, 514, NOBODY, 7, 2),
            udp(EventKind::Accept, Role::Server, 514, (PEER_A, 40000), 7, 3),
            udp(EventKind::Connect, Role::Client, 41000, (PEER_B, 53), 9, 4),
        ],
    );
    let all = query::sockets(&conn, &Query::default()).unwrap();
    let seen: Vec<(Transport, Role, u16)> = all
        .iter()
        .map(|e| (e.proto, e.role, e.remote.port))
        .collect();
    assert_eq!(
        seen,
        [
            (Transport::Tcp, Role::Listener, 0),
            (Transport::Udp, Role::Listener, 0),
            (Transport::Udp, Role::Server, 40000),
            (Transport::Udp, Role::Client, 53),
        ]
    );
    // The same port number, told apart, each named from its own registry.
    let on_514 = Query {
        ports: vec![514],
        ..Query::default()
    };
    let listeners: Vec<ConnEvent> = query::sockets(&conn, &on_514)
        .unwrap()
        .into_iter()
        .filter(|e| e.role == Role::Listener)
        .collect();
    assert_eq!(listeners.len(), 2);
    assert_eq!(listeners[0].local.service, Some("shell"));
    assert_eq!(listeners[0].state_text(), "LISTEN");
    assert_eq!(listeners[1].local.service, Some("syslog"));
    assert_eq!(listeners[1].state_text(), "UNCONN");
    assert_eq!(listeners[1].kind, EventKind::Listen);
    assert_eq!(all[3].remote.service, Some("domain"));
    assert_eq!(all[3].state, TcpState::Established);
    assert_eq!(all[2].kind, EventKind::Accept);
}

#[test]
fn proto_narrows_queries_and_summaries() {
    let (_db, mut conn, mut sockets) = recording();
    write(
        &mut conn,
        &mut sockets,
        vec![
            event(
                Transport::Tcp,
                EventKind::Listen,
                Role::Listener,
                53,
                NOBODY,
                5,
                1,
            ),
            udp(EventKind::Listen, Role::Listener, 53, NOBODY, 5, 1),
            udp(EventKind::Accept, Role::Server, 53, (PEER_A, 40000), 5, 2),
        ],
    );
    let q = Query::default();
    let of = |protos: Vec<Transport>| Query {
        protos,
        ..Query::default()
    };
    let only = |p| query::sockets(&conn, &of(vec![p])).unwrap();
    assert!(only(Transport::Udp)
        .iter()
        .all(|e| e.proto == Transport::Udp));
    assert_eq!(only(Transport::Udp).len(), 2);
    assert_eq!(only(Transport::Tcp).len(), 1);
    let both = query::sockets(&conn, &of(vec![Transport::Tcp, Transport::Udp])).unwrap();
    assert_eq!(both.len(), 3);
    let summary = summary::summarize(&conn, &q).unwrap();
    assert_eq!(summary.len(), 1);
    assert_eq!(summary[0].listen_ports, [53]);
    assert_eq!(summary[0].udp_listen_ports, [53]);
    assert_eq!(summary[0].connections_in, 1);
    let tcp_only = summary::summarize(&conn, &of(vec![Transport::Tcp])).unwrap();
    assert!(tcp_only[0].udp_listen_ports.is_empty());
    assert_eq!(tcp_only[0].connections_in, 0);
}

#[test]
fn a_udp_close_closes_every_row_of_its_socket() {
    let (_db, mut conn, mut sockets) = recording();
    // Written open in a first batch: the listener and one flow.
    write(
        &mut conn,
        &mut sockets,
        vec![
            udp(EventKind::Listen, Role::Listener, 5353, NOBODY, 11, 1),
            udp(
                EventKind::Accept,
                Role::Server,
                5353,
                (PEER_A, 40000),
                11,
                2,
            ),
            // A TCP socket whose id is the same number: left alone.
            event(
                Transport::Tcp,
                EventKind::Connect,
                Role::Client,
                40001,
                (PEER_A, 80),
                11,
                2,
            ),
            // Another UDP socket: left alone.
            udp(EventKind::Connect, Role::Client, 41000, (PEER_A, 53), 12, 2),
        ],
    );
    // A second flow, reported again, pending in the batch of the close.
    let mut close = udp(EventKind::Close, Role::Listener, 5353, NOBODY, 11, 9);
    close.inferred = true;
    write(
        &mut conn,
        &mut sockets,
        vec![
            udp(
                EventKind::Accept,
                Role::Server,
                5353,
                (PEER_B, 40000),
                11,
                3,
            ),
            udp(
                EventKind::Accept,
                Role::Server,
                5353,
                (PEER_B, 40000),
                11,
                4,
            ),
            udp(
                EventKind::Accept,
                Role::Server,
                5353,
                (PEER_A, 40000),
                11,
                5,
            ),
            close,
        ],
    );
    let nine = Some(9 * SECOND);
    let inferred = OUTCOME_CLOSED_INFERRED;
    assert_eq!(
        rows(&conn),
        [
            (PROTO_TCP, 2, 80, None, 0),
            (PROTO_UDP, 0, 0, nine, inferred),
            (PROTO_UDP, 1, 40000, nine, inferred),
            (PROTO_UDP, 1, 40000, nine, inferred),
            (PROTO_UDP, 2, 53, None, 0),
        ]
    );
    let all = query::sockets(&conn, &Query::default()).unwrap();
    let listener = all.iter().find(|e| e.role == Role::Listener).unwrap();
    assert!(listener.inferred);
    assert_eq!(listener.duration, Some(Duration::from_secs(8)));
    assert_eq!(listener.state_text(), "UNCONN");
    // The kernel's close of the other socket, in one batch with its opening.
    write(
        &mut conn,
        &mut sockets,
        vec![
            udp(
                EventKind::Connect,
                Role::Client,
                41000,
                (PEER_B, 53),
                12,
                10,
            ),
            udp(EventKind::Close, Role::Client, 41000, (PEER_B, 53), 12, 11),
        ],
    );
    let closed: Vec<_> = rows(&conn)
        .into_iter()
        .filter(|r| r.0 == PROTO_UDP && r.3 == Some(11 * SECOND))
        .collect();
    assert_eq!(
        closed,
        [(PROTO_UDP, 2, 53, Some(11 * SECOND), OUTCOME_CLOSED); 2]
    );
}

#[test]
fn a_udp_socket_of_the_snapshot_gets_its_opening_from_its_live_event() {
    let (_db, mut conn, mut sockets) = recording();
    write(
        &mut conn,
        &mut sockets,
        vec![
            udp(EventKind::Snapshot, Role::Listener, 123, NOBODY, 21, 5),
            udp(
                EventKind::Snapshot,
                Role::Client,
                41000,
                (PEER_A, 123),
                22,
                5,
            ),
        ],
    );
    write(
        &mut conn,
        &mut sockets,
        vec![
            udp(EventKind::Listen, Role::Listener, 123, NOBODY, 21, 4),
            udp(
                EventKind::Connect,
                Role::Client,
                41000,
                (PEER_A, 123),
                22,
                4,
            ),
        ],
    );
    let all = query::sockets(&conn, &Query::default()).unwrap();
    let kinds: Vec<EventKind> = all.iter().map(|e| e.kind).collect();
    assert_eq!(kinds, [EventKind::Listen, EventKind::Connect]);
    assert!(all.iter().all(|e| to_ns(e.time) == 4 * SECOND));
}
