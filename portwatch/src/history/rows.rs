//! The writer's statements: socket rows inserted and updated, process rows made
//! once per run (`ProcessRows` keeps the recent ones' ids). Each statement is
//! prepared once per connection (SQLite's statement cache).
use std::{net::IpAddr, num::NonZeroUsize};

use lru::LruCache;
use rusqlite::{params, Transaction};

use super::schema::{proto_code, span, ROLE_CLIENT, ROLE_LISTENER, ROLE_SERVER, SPAN_OPEN};
use crate::event::model::{ConnEvent, Family, Role};

/// Processes whose row ids the writer keeps at hand.
const PROCESS_CACHE: NonZeroUsize = NonZeroUsize::new(16_384).unwrap();

fn role_code(role: Role) -> i64 {
    match role {
        Role::Listener => ROLE_LISTENER,
        Role::Server => ROLE_SERVER,
        Role::Client => ROLE_CLIENT,
    }
}

fn family_code(family: Family) -> i64 {
    match family {
        Family::Ipv4 => 4,
        Family::Ipv6 => 6,
    }
}

/// The address's bytes (4 or 16), without allocating.
fn addr_bytes(addr: &IpAddr) -> ([u8; 16], usize) {
    let mut bytes = [0u8; 16];
    match addr {
        IpAddr::V4(a) => {
            bytes[..4].copy_from_slice(&a.octets());
            (bytes, 4)
        }
        IpAddr::V6(a) => (a.octets(), 16),
    }
}

/// The process rows of one run.
pub struct ProcessRows {
    run_id: i64,
    /// Recent processes: (pid, start_ns) -> row. Bounded: a process not found
    /// here is looked up (or added) by its unique key.
    recent: LruCache<(u32, u64), i64>,
}

impl ProcessRows {
    pub fn new(run_id: i64) -> ProcessRows {
        ProcessRows {
            run_id,
            recent: LruCache::new(PROCESS_CACHE),
        }
    }

    /// The process row of the event's owner, made once per run.
    pub fn of(&mut self, tx: &Transaction<'_>, e: &ConnEvent) -> rusqlite::Result<Option<i64>> {
        let Some(owner) = &e.owner else {
            return Ok(None);
        };
        let key = (owner.pid, owner.start_ns.unwrap_or(0));
        if let Some(&id) = self.recent.get(&key) {
            return Ok(Some(id));
        }
        let details = e.process.as_deref();
        let cmdline = details
            .and_then(|d| d.cmdline.as_deref())
            .map(|c| serde_json::to_string(c).unwrap_or_default());
        let id: i64 = tx
            .prepare_cached(
                "INSERT INTO processes (run_id, pid, start_ns, comm, exe, cmdline, user, uid, ppid, cgroup, container_id)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)
                 ON CONFLICT (run_id, pid, start_ns) DO UPDATE SET exe = coalesce(exe, excluded.exe)
                 RETURNING id",
            )?
            .query_row(
                params![
                    self.run_id,
                    owner.pid,
                    key.1 as i64,
                    owner.comm,
                    details.and_then(|d| d.exe.as_deref()),
                    cmdline,
                    details.and_then(|d| d.user.as_deref()),
                    owner.uid,
                    owner.ppid,
                    details.and_then(|d| d.cgroup.as_deref()),
                    details.and_then(|d| d.container_id.as_deref()),
                ],
                |r| r.get(0),
            )?;
        self.recent.put(key, id);
        Ok(Some(id))
    }
}

/// When a socket row's socket lived, as far as known.
pub struct Times {
    pub seen: i64,
    /// None: before recording.
    pub opened: Option<i64>,
    pub established: Option<i64>,
    /// When it already ended: (closed, outcome, errno).
    pub ended: Option<(i64, i64, Option<i32>)>,
}

/// A socket row for `e`, owned by the process row `process`, of the run `run_id`.
pub fn insert_socket(
    tx: &Transaction<'_>,
    run_id: i64,
    process: Option<i64>,
    e: &ConnEvent,
    times: Times,
) -> rusqlite::Result<i64> {
    let (closed, outcome, errno, life) = match times.ended {
        Some((c, o, n)) => (Some(c), o, n, span(c - times.seen)),
        None => (None, 0, None, SPAN_OPEN),
    };
    let (local, local_len) = addr_bytes(&e.local.addr);
    let (remote, remote_len) = addr_bytes(&e.remote.addr);
    tx.prepare_cached(
        "INSERT INTO sockets (run_id, process_id, pid_exact, role, family, local_addr, local_port,
           remote_addr, remote_port, seen, opened, established, closed, outcome, errno, sock_id, span, proto)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18)",
    )?
    .insert(params![
        run_id,
        process,
        e.pid_exact,
        role_code(e.role),
        family_code(e.family),
        &local[..local_len],
        e.local.port,
        &remote[..remote_len],
        e.remote.port,
        times.seen,
        times.opened,
        times.established,
        closed,
        outcome,
        errno,
        e.sock_id as i64,
        life,
        proto_code(e.proto),
    ])
}

/// A row of the snapshot gets its opening (`opened`, `established`) and exact
/// owner from `e`.
pub fn set_opening(
    tx: &Transaction<'_>,
    row: i64,
    process: Option<i64>,
    e: &ConnEvent,
    opened: i64,
    established: Option<i64>,
) -> rusqlite::Result<()> {
    tx.prepare_cached(
        "UPDATE sockets SET seen = min(seen, ?2), opened = ?2, established = ?3,
           process_id = ?4, pid_exact = ?5, sock_id = ?6 WHERE id = ?1",
    )?
    .execute(params![
        row,
        opened,
        established,
        process,
        e.pid_exact,
        e.sock_id as i64
    ])
    .map(drop)
}

pub fn set_owner(
    tx: &Transaction<'_>,
    row: i64,
    process: Option<i64>,
    pid_exact: bool,
) -> rusqlite::Result<()> {
    tx.prepare_cached("UPDATE sockets SET process_id = ?2, pid_exact = ?3 WHERE id = ?1")?
        .execute(params![row, process, pid_exact])
        .map(drop)
}

/// A row written open (first seen at `seen`) closed at `t`.
pub fn set_closed(
    tx: &Transaction<'_>,
    row: i64,
    seen: i64,
    t: i64,
    outcome: i64,
) -> rusqlite::Result<()> {
    tx.prepare_cached("UPDATE sockets SET closed = ?2, outcome = ?3, span = ?4 WHERE id = ?1")?
        .execute(params![row, t, outcome, span(t - seen)])
        .map(drop)
}
