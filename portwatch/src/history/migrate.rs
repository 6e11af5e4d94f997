//! Older history databases brought to this portwatch's layout, in place: each
//! step takes a database from one version to the next in its own transaction and
//! keeps every row already recorded. A new database is made as version 1 and
//! taken through every step, so a migrated database and a new one are the same.
//!
//! A reader that may not write (`portwatch query`) leaves an older database as it
//! is: it reads it through temporary views that give its rows the columns added
//! since, with the values the steps would have given them.
use rusqlite::{Connection, Transaction, TransactionBehavior};

/// The oldest version the steps start from.
pub const OLDEST: i32 = 1;

/// Version `from`'s change to `from + 1`.
struct Step {
    from: i32,
    sql: &'static str,
    /// Temporary views (they come before the file's tables of the same name)
    /// that show a database still at `from` as it is after this step.
    read_as_next: &'static str,
}

const STEPS: [Step; 1] = [
    // 2: the transport of each socket (IPPROTO_TCP 6, IPPROTO_UDP 17); every
    // socket recorded before it was TCP.
    Step {
        from: 1,
        sql: "ALTER TABLE sockets ADD COLUMN proto INTEGER NOT NULL DEFAULT 6;",
        read_as_next: "CREATE TEMP VIEW sockets AS SELECT *, 6 AS proto FROM main.sockets;",
    },
];

/// The version the steps end at (they follow each other from [`OLDEST`]).
pub const LATEST: i32 = OLDEST + STEPS.len() as i32;

/// Take a database at `version` through every step after it, each in its own
/// transaction (an interrupted migration leaves a database at the version of its
/// last whole step, taken on from there the next time).
pub fn upgrade(conn: &Connection, version: i32) -> rusqlite::Result<()> {
    for step in STEPS.iter().filter(|s| s.from >= version) {
        // The write lock first, then the version again: another portwatch may
        // have taken this step meanwhile.
        let tx = Transaction::new_unchecked(conn, TransactionBehavior::Immediate)?;
        let now: i32 = tx.pragma_query_value(None, "user_version", |r| r.get(0))?;
        if now == step.from {
            tx.execute_batch(step.sql)?;
            tx.pragma_update(None, "user_version", step.from + 1)?;
        }
        tx.commit()?;
    }
    Ok(())
}

/// Make `conn`, a read-only connection to a database at `version`, read it as the
/// latest version. Views over views of one name cannot be stacked: only a
/// database one step behind can be read this way; Ok(false) for one older still.
pub fn read_as_latest(conn: &Connection, version: i32) -> rusqlite::Result<bool> {
    if version >= LATEST {
        return Ok(true);
    }
    match STEPS.iter().find(|s| s.from == version) {
        Some(step) if step.from + 1 == LATEST => {
            conn.execute_batch(step.read_as_next)?;
            Ok(true)
        }
        _ => Ok(false),
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use rusqlite::{params, Connection, OpenFlags};

    use super::*;
    use crate::history::scratch::ScratchDb;
    use crate::{
        event::{
            model::{ConnEvent, Role, Transport},
            services::service_name,
        },
        history::{
            query::{self, Query},
            schema::{
                self, open_for_query, open_for_recording, HistoryError, OUTCOME_CLOSED, PROTO_TCP,
                SCHEMA_VERSION,
            },
        },
    };

    const SECOND: i64 = 1_000_000_000;

    /// A database as version 1 wrote it: its tables, one run, one closed socket and
    /// one open listener.
    fn version_1(path: &Path) {
        let conn = Connection::open(path).unwrap();
        conn.execute_batch(&format!(
            "{} PRAGMA application_id = {}; PRAGMA user_version = 1;",
            schema::SCHEMA_V1,
            schema::APPLICATION_ID
        ))
        .unwrap();
        let run = "INSERT INTO runs (host, kernel, mode, version, started, heartbeat, stopped)
            VALUES ('h', 'k', 'fentry', '0.1.0', 0, ?1, ?1)";
        conn.execute(run, [100 * SECOND]).unwrap();
        let socket = "INSERT INTO sockets (run_id, pid_exact, role, family, local_addr, local_port,
            remote_addr, remote_port, seen, opened, closed, outcome, sock_id, span)
            VALUES (1, 0, ?1, 4, ?2, ?3, ?4, ?5, ?6, ?6, ?7, ?8, ?9, ?10)";
        let (host, peer) = (vec![192u8, 0, 2, 1], vec![198u8, 51, 100, 7]);
        conn.execute(
            socket,
            params![
                2,
                host,
                40000,
                peer,
                443,
                SECOND,
                2 * SECOND,
                OUTCOME_CLOSED,
                1,
                31
            ],
        )
        .unwrap();
        let (none, open) = (Option::<i64>::None, schema::SPAN_OPEN);
        conn.execute(
            socket,
            params![0, host, 53, vec![0u8; 4], 0, SECOND, none, 0, 2, open],
        )
        .unwrap();
    }

    fn as_read(events: &[ConnEvent]) -> Vec<(Transport, Role, u16, Option<&'static str>)> {
        events
            .iter()
            .map(|e| (e.proto, e.role, e.local.port, e.local.service))
            .collect()
    }

    #[test]
    fn a_version_1_database_is_read_as_tcp_and_upgraded_in_place() {
        assert_eq!(LATEST, SCHEMA_VERSION);
        let scratch = ScratchDb::new();
        let path = scratch.path();
        version_1(&path);
        let want = [
            (
                Transport::Tcp,
                Role::Client,
                40000,
                service_name(40000, Transport::Tcp),
            ),
            (Transport::Tcp, Role::Listener, 53, Some("domain")),
        ];
        // Read as it is, without writing to it.
        let reader = open_for_query(&path).unwrap();
        assert_eq!(
            as_read(&query::sockets(&reader, &Query::default()).unwrap()),
            want
        );
        let udp = Query {
            protos: vec![Transport::Udp],
            ..Query::default()
        };
        let udp_only = query::sockets(&reader, &udp).unwrap();
        assert!(udp_only.is_empty());
        let at = Query {
            at: Some(SECOND + SECOND / 2),
            ..Query::default()
        };
        assert_eq!(as_read(&query::sockets(&reader, &at).unwrap()), want);
        drop(reader);
        // Also when it may only be read as a file alone (a directory it may not write).
        let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_URI;
        let alone =
            Connection::open_with_flags(format!("file:{}?immutable=1", path.display()), flags)
                .unwrap();
        assert!(read_as_latest(&alone, 1).unwrap());
        assert_eq!(
            as_read(&query::sockets(&alone, &Query::default()).unwrap()),
            want
        );
        drop(alone);
        let version: i32 = Connection::open(&path)
            .unwrap()
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .unwrap();
        assert_eq!(version, 1);
        // Recording into it upgrades it, every row kept.
        drop(open_for_recording(&path).unwrap());
        let reader = open_for_query(&path).unwrap();
        let version: i32 = reader
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .unwrap();
        assert_eq!(version, SCHEMA_VERSION);
        assert_eq!(
            as_read(&query::sockets(&reader, &Query::default()).unwrap()),
            want
        );
        let protos: Vec<i64> = reader
            .prepare("SELECT proto FROM sockets ORDER BY id")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        assert_eq!(protos, [PROTO_TCP, PROTO_TCP]);
        // Upgraded, it is laid out as a new one.
        let layout = |conn: &Connection| -> Vec<String> {
            conn.prepare("SELECT sql FROM sqlite_master WHERE sql IS NOT NULL ORDER BY name")
                .unwrap()
                .query_map([], |r| r.get(0))
                .unwrap()
                .map(Result::unwrap)
                .collect()
        };
        let scratch_new = ScratchDb::new();
        let new = scratch_new.path();
        drop(open_for_recording(&new).unwrap());
        assert_eq!(layout(&reader), layout(&Connection::open(&new).unwrap()));
    }

    #[test]
    fn versions_before_the_first_are_refused() {
        let scratch = ScratchDb::new();
        let path = scratch.path();
        version_1(&path);
        Connection::open(&path)
            .unwrap()
            .pragma_update(None, "user_version", 0)
            .unwrap();
        assert!(matches!(
            open_for_recording(&path),
            Err(HistoryError::NotPortwatch(_))
        ));
    }

    #[test]
    fn a_newer_schema_is_refused() {
        let scratch = ScratchDb::new();
        let path = scratch.path();
        drop(open_for_recording(&path).unwrap());
        Connection::open(&path)
            .unwrap()
            .pragma_update(None, "user_version", SCHEMA_VERSION + 1)
            .unwrap();
        assert!(matches!(
            open_for_recording(&path),
            Err(HistoryError::Newer { .. })
        ));
        assert!(matches!(
            open_for_query(&path),
            Err(HistoryError::Newer { .. })
        ));
    }
}
