//! The history database: one SQLite file in WAL mode. Its layout is documented in
//! the README (History); `SCHEMA_VERSION` is stored in `PRAGMA user_version` and the
//! file is marked as portwatch's with `PRAGMA application_id`.
use std::{
    fs,
    os::unix::fs::{DirBuilderExt, PermissionsExt},
    path::{Path, PathBuf},
};

use rusqlite::{Connection, OpenFlags};

use super::migrate;
use crate::event::model::Transport;

/// Where `record` and `query` look without `--db`.
pub const DEFAULT_DB: &str = "/var/lib/portwatch/portwatch.db";

/// `PRAGMA application_id` of a portwatch database ("PWCH").
pub const APPLICATION_ID: i32 = 0x5057_4348;

/// The layout this portwatch writes and reads: version 1's tables (`SCHEMA_V1`)
/// and the steps of `migrate` since.
pub const SCHEMA_VERSION: i32 = 2;

/// Role codes in `sockets.role`.
pub const ROLE_LISTENER: i64 = 0;
pub const ROLE_SERVER: i64 = 1;
pub const ROLE_CLIENT: i64 = 2;

/// Outcome codes in `sockets.outcome`.
pub const OUTCOME_OPEN: i64 = 0;
pub const OUTCOME_CLOSED: i64 = 1;
pub const OUTCOME_CONNECT_FAILED: i64 = 2;
/// Closed, the close inferred: the kernel never reported it (see
/// `pipeline::reconcile`).
pub const OUTCOME_CLOSED_INFERRED: i64 = 3;

/// Transport codes in `sockets.proto` (the IP protocol numbers).
pub const PROTO_TCP: i64 = 6;
pub const PROTO_UDP: i64 = 17;

pub fn proto_code(proto: Transport) -> i64 {
    match proto {
        Transport::Tcp => PROTO_TCP,
        Transport::Udp => PROTO_UDP,
    }
}

/// The transport of a `sockets.proto` code (TCP for any code not UDP's).
pub fn proto_of(code: i64) -> Transport {
    match code {
        PROTO_UDP => Transport::Udp,
        _ => Transport::Tcp,
    }
}

/// `sockets.span` of a socket not closed (yet): its end is its run's end.
pub const SPAN_OPEN: i64 = 63;

/// `sockets.span`: the bit length of a closed socket's known life in ns (from
/// `seen` to `closed`), so its life is shorter than `1 << span`. With the index on
/// (span, seen), "open at T" reads, for each span, only the sockets first seen
/// within `1 << span` before T, instead of every socket seen before T.
/// (Lives of 2^62 ns, 146 years, and more count as span 62.)
pub fn span(life_ns: i64) -> i64 {
    (64 - i64::from(life_ns.max(0).leading_zeros())).min(SPAN_OPEN - 1)
}

/// Version 1, as the first portwatch made it; `migrate` has the changes since.
/// Times are nanoseconds since the Unix epoch (UTC); addresses are 4 or 16 bytes.
pub(super) const SCHEMA_V1: &str = "
CREATE TABLE runs (
    id        INTEGER PRIMARY KEY,
    host      TEXT NOT NULL,
    kernel    TEXT NOT NULL,
    mode      TEXT NOT NULL,
    version   TEXT NOT NULL,
    started   INTEGER NOT NULL,
    heartbeat INTEGER NOT NULL,
    stopped   INTEGER,
    lost      INTEGER NOT NULL DEFAULT 0,
    skipped   INTEGER NOT NULL DEFAULT 0,
    dropped   INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE processes (
    id           INTEGER PRIMARY KEY,
    run_id       INTEGER NOT NULL REFERENCES runs(id),
    pid          INTEGER NOT NULL,
    start_ns     INTEGER NOT NULL,
    comm         TEXT NOT NULL,
    exe          TEXT,
    cmdline      TEXT,
    user         TEXT,
    uid          INTEGER NOT NULL,
    ppid         INTEGER,
    cgroup       TEXT,
    container_id TEXT,
    UNIQUE (run_id, pid, start_ns)
);
CREATE TABLE sockets (
    id          INTEGER PRIMARY KEY,
    run_id      INTEGER NOT NULL REFERENCES runs(id),
    process_id  INTEGER REFERENCES processes(id),
    pid_exact   INTEGER NOT NULL,
    role        INTEGER NOT NULL,
    family      INTEGER NOT NULL,
    local_addr  BLOB NOT NULL,
    local_port  INTEGER NOT NULL,
    remote_addr BLOB NOT NULL,
    remote_port INTEGER NOT NULL,
    seen        INTEGER NOT NULL,
    opened      INTEGER,
    established INTEGER,
    closed      INTEGER,
    outcome     INTEGER NOT NULL DEFAULT 0,
    errno       INTEGER,
    sock_id     INTEGER NOT NULL,
    span        INTEGER NOT NULL
);
CREATE INDEX sockets_span ON sockets (span, seen);
CREATE INDEX sockets_local_port ON sockets (local_port, seen);
CREATE INDEX sockets_remote_port ON sockets (remote_port, seen);
CREATE INDEX sockets_process ON sockets (process_id);
";

/// Why the database cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum HistoryError {
    #[error("{}: cannot create its directory", .0.display())]
    CreateDir(PathBuf, #[source] std::io::Error),
    #[error("{}: no such database", .0.display())]
    Missing(PathBuf),
    #[error("{}: not a portwatch database", .0.display())]
    NotPortwatch(PathBuf),
    #[error("{}: written by a newer portwatch (schema {found}, this one knows up to {SCHEMA_VERSION}); use that version", path.display())]
    Newer { path: PathBuf, found: i32 },
    #[error("{}: written by a much older portwatch (schema {found}): `portwatch record` into it once upgrades it", path.display())]
    Older { path: PathBuf, found: i32 },
    #[error("{}: read-only (no write permission, or a read-only file system): cannot record into it", .0.display())]
    ReadOnly(PathBuf, #[source] nix::Error),
    #[error("{}: locked by another writer (is another `portwatch record` running on it?)", .0.display())]
    Locked(PathBuf),
    #[error("{}", .0.display())]
    Sqlite(PathBuf, #[source] rusqlite::Error),
    #[error("the history writer panicked")]
    WriterPanicked,
}

impl HistoryError {
    /// The error for `path`, with SQLite's "not a database" and "locked" told apart.
    pub(super) fn sqlite(path: &Path) -> impl Fn(rusqlite::Error) -> HistoryError + '_ {
        move |e| match e.sqlite_error_code() {
            Some(rusqlite::ErrorCode::NotADatabase) => HistoryError::NotPortwatch(path.into()),
            Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked) => {
                HistoryError::Locked(path.into())
            }
            _ => HistoryError::Sqlite(path.into(), e),
        }
    }
}

/// Open (creating it and its 0700 directory when missing) for recording: the
/// schema made or checked, WAL mode, and this connection the only writer.
pub fn open_for_recording(path: &Path) -> Result<Connection, HistoryError> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        if !dir.exists() {
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .map_err(|e| HistoryError::CreateDir(dir.into(), e))?;
        }
    }
    // SQLite would open a read-only file read-only, and fail later less clearly.
    for writable in [Some(path), path.parent()].into_iter().flatten() {
        if writable.exists() && !writable.as_os_str().is_empty() {
            nix::unistd::access(writable, nix::unistd::AccessFlags::W_OK)
                .map_err(|e| HistoryError::ReadOnly(writable.into(), e))?;
        }
    }
    let fresh = !path.exists() || fs::metadata(path).is_ok_and(|m| m.len() == 0);
    let err = HistoryError::sqlite(path);
    let conn = Connection::open(path).map_err(&err)?;
    conn.busy_timeout(std::time::Duration::from_secs(2))
        .map_err(&err)?;
    if fresh {
        let _ = fs::set_permissions(path, fs::Permissions::from_mode(0o600));
    }
    check_or_create(&conn, path)?;
    conn.pragma_update(None, "journal_mode", "WAL")
        .map_err(&err)?;
    // Each batch is durable at the next checkpoint; a crash loses at most the
    // batch being written, never the file's consistency.
    conn.pragma_update(None, "synchronous", "NORMAL")
        .map_err(&err)?;
    // The port indexes take inserts all over: a page cache of 32 MiB (instead of
    // SQLite's 2) keeps their working set in memory.
    conn.pragma_update(None, "cache_size", -32_768)
        .map_err(&err)?;
    // An exclusive writer: a second recorder is told at once.
    conn.execute_batch("BEGIN IMMEDIATE; COMMIT;")
        .map_err(&err)?;
    Ok(conn)
}

/// Open for reading only (no root needed, only read access to the file).
///
/// A reader that may not write the file's directory cannot share SQLite's WAL
/// index with a recorder: it then reads the file alone (`immutable`), which holds
/// everything of a stopped recording (its stop checkpoints the WAL) and, of one
/// in progress, what its last checkpoint wrote.
pub fn open_for_query(path: &Path) -> Result<Connection, HistoryError> {
    if !path.exists() {
        return Err(HistoryError::Missing(path.into()));
    }
    let err = HistoryError::sqlite(path);
    let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let shared = Connection::open_with_flags(path, flags).and_then(|conn| {
        conn.busy_timeout(std::time::Duration::from_secs(2))?;
        let found = identity(&conn)?;
        Ok((conn, found))
    });
    let (conn, (app, version)) = match shared {
        Err(e) if cannot_share_wal(&e) => {
            let conn = Connection::open_with_flags(
                immutable_uri(path),
                flags | OpenFlags::SQLITE_OPEN_URI,
            )
            .map_err(&err)?;
            let found = identity(&conn).map_err(&err)?;
            (conn, found)
        }
        other => other.map_err(&err)?,
    };
    if app != APPLICATION_ID {
        return Err(HistoryError::NotPortwatch(path.into()));
    }
    if version > SCHEMA_VERSION {
        return Err(HistoryError::Newer {
            path: path.into(),
            found: version,
        });
    }
    if !migrate::read_as_latest(&conn, version).map_err(&err)? {
        return Err(HistoryError::Older {
            path: path.into(),
            found: version,
        });
    }
    Ok(conn)
}

/// SQLite's "read-only directory" or "cannot open" (the WAL index it may not
/// create).
fn cannot_share_wal(e: &rusqlite::Error) -> bool {
    const SQLITE_READONLY_DIRECTORY: i32 = 1544;
    match e {
        rusqlite::Error::SqliteFailure(f, _) => {
            f.extended_code == SQLITE_READONLY_DIRECTORY
                || f.code == rusqlite::ErrorCode::CannotOpen
                || f.code == rusqlite::ErrorCode::ReadOnly
        }
        _ => false,
    }
}

/// `file:PATH?immutable=1`, the path percent-encoded where a URI needs it.
fn immutable_uri(path: &Path) -> String {
    use std::os::unix::ffi::OsStrExt;
    let mut uri = String::from("file:");
    for &b in path.as_os_str().as_bytes() {
        if b.is_ascii_alphanumeric() || b"/-._~".contains(&b) {
            uri.push(b as char);
        } else {
            uri.push_str(&format!("%{b:02X}"));
        }
    }
    uri.push_str("?immutable=1");
    uri
}

fn identity(conn: &Connection) -> rusqlite::Result<(i32, i32)> {
    let app: i32 = conn.pragma_query_value(None, "application_id", |r| r.get(0))?;
    let version: i32 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
    Ok((app, version))
}

/// A new file gets the schema; a portwatch database of an older version is
/// migrated in place (`migrate`); anything else is refused untouched.
fn check_or_create(conn: &Connection, path: &Path) -> Result<(), HistoryError> {
    let err = HistoryError::sqlite(path);
    let (app, version) = identity(conn).map_err(&err)?;
    let tables: i64 = conn
        .query_row("SELECT count(*) FROM sqlite_master", [], |r| r.get(0))
        .map_err(&err)?;
    if app == 0 && version == 0 && tables == 0 {
        let ddl = format!(
            "BEGIN; {SCHEMA_V1} PRAGMA application_id = {APPLICATION_ID}; PRAGMA user_version = {}; COMMIT;",
            migrate::OLDEST
        );
        conn.execute_batch(&ddl).map_err(&err)?;
        return migrate::upgrade(conn, migrate::OLDEST).map_err(&err);
    }
    if app != APPLICATION_ID {
        return Err(HistoryError::NotPortwatch(path.into()));
    }
    match version {
        SCHEMA_VERSION => Ok(()),
        v if v > SCHEMA_VERSION => Err(HistoryError::Newer {
            path: path.into(),
            found: v,
        }),
        v if v >= migrate::OLDEST => migrate::upgrade(conn, v).map_err(&err),
        _ => Err(HistoryError::NotPortwatch(path.into())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::scratch::ScratchDb;

    #[test]
    fn a_new_database_is_made_and_reopened() {
        let scratch = ScratchDb::new();
        let path = scratch.nested();
        drop(open_for_recording(&path).unwrap());
        let mode = fs::metadata(path.parent().unwrap())
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o700);
        drop(open_for_recording(&path).unwrap());
        let conn = open_for_query(&path).unwrap();
        assert_eq!(identity(&conn).unwrap(), (APPLICATION_ID, SCHEMA_VERSION));
    }

    #[test]
    fn other_files_are_refused_untouched() {
        let scratch = ScratchDb::new();
        let path = scratch.nested();
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(&path, b"not a database at all, just text that is long enough......................................................").unwrap();
        let before = fs::read(&path).unwrap();
        assert!(matches!(
            open_for_recording(&path),
            Err(HistoryError::NotPortwatch(_))
        ));
        assert!(matches!(
            open_for_query(&path),
            Err(HistoryError::NotPortwatch(_))
        ));
        assert_eq!(fs::read(&path).unwrap(), before);
        // Another application's SQLite database.
        let other = path.with_file_name("other.db");
        Connection::open(&other)
            .unwrap()
            .execute_batch("CREATE TABLE t (x);")
            .unwrap();
        assert!(matches!(
            open_for_recording(&other),
            Err(HistoryError::NotPortwatch(_))
        ));
    }

    #[test]
    fn a_span_bounds_the_life() {
        for life in [0, 1, 2, 3, 1_000, 1 << 40, (1 << 40) + 1, (1 << 61) + 5] {
            let s = span(life);
            assert!(life < 1 << s, "{life} {s}");
            assert!(s == 0 || life >= 1 << (s - 1), "{life} {s}");
        }
        assert_eq!(span(i64::MAX), SPAN_OPEN - 1);
        assert_eq!(span(-5), 0);
    }

    #[test]
    fn immutable_uris_escape_what_uris_reserve() {
        assert_eq!(
            immutable_uri(Path::new("/var/lib/a b/x?#%.db")),
            "file:/var/lib/a%20b/x%3F%23%25.db?immutable=1"
        );
    }

    #[test]
    fn a_missing_file_is_not_created_by_query() {
        let scratch = ScratchDb::new();
        let path = scratch.nested();
        assert!(matches!(
            open_for_query(&path),
            Err(HistoryError::Missing(_))
        ));
        assert!(!path.exists());
    }
}
