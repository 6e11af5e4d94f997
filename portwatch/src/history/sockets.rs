//! Events turned into socket rows, one transaction's worth at a time: one row per
//! socket lifetime, its owner's process row made once.
//!
//! A socket that opens and closes within one batch (most connections) is written
//! once, closed, at its close: one insert instead of an insert and an update, half
//! the index work. What is still open when the batch ends is written open, so a
//! crash loses no more than the batch being written.
use std::{collections::HashMap, net::IpAddr, num::NonZeroUsize, path::Path};

use lru::LruCache;
use rusqlite::{params, Transaction};

use super::schema::{
    span, HistoryError, OUTCOME_CLOSED, OUTCOME_CLOSED_INFERRED, OUTCOME_CONNECT_FAILED,
    ROLE_CLIENT, ROLE_LISTENER, ROLE_SERVER, SPAN_OPEN,
};
use crate::{
    event::model::{ConnEvent, EventKind, Family, Role},
    history::time::to_ns,
};

/// Processes whose row ids the writer keeps at hand.
const PROCESS_CACHE: NonZeroUsize = NonZeroUsize::new(16_384).unwrap();

/// A socket's two ends, as the snapshot and live events both give them.
type Ends = (IpAddr, u16, IpAddr, u16);

fn ends(e: &ConnEvent) -> Ends {
    (e.local.addr, e.local.port, e.remote.addr, e.remote.port)
}

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

/// What the writer remembers between batches.
pub struct Sockets {
    run_id: i64,
    /// Open sockets written so far: sock_id -> (row, seen).
    open: HashMap<u64, (i64, i64)>,
    /// Sockets first seen in the snapshot, by their ends (their live events may
    /// name them by another id): ends -> (row, seen).
    existing: HashMap<Ends, (i64, i64)>,
    /// Recent processes of this run: (pid, start_ns) -> row. Bounded: a process
    /// not found here is looked up (or added) by its unique key.
    processes: LruCache<(u32, u64), i64>,
    /// Rows written.
    pub written: u64,
}

impl Sockets {
    pub fn new(run_id: i64) -> Sockets {
        Sockets {
            run_id,
            open: HashMap::new(),
            existing: HashMap::new(),
            processes: LruCache::new(PROCESS_CACHE),
            written: 0,
        }
    }

    /// One transaction's work on these sockets.
    pub fn batch<'a, 't>(&'a mut self, tx: &'a Transaction<'t>, path: &'a Path) -> Batch<'a, 't> {
        Batch {
            tx,
            path,
            sockets: self,
            pending: HashMap::new(),
        }
    }
}

/// A socket opened in this batch, not written yet.
struct Pending {
    event: Box<ConnEvent>,
    /// When it opened (also when it was first seen).
    opened: i64,
    established: Option<i64>,
}

/// One transaction's view. [`Batch::finish`] writes what is still pending.
pub struct Batch<'a, 't> {
    tx: &'a Transaction<'t>,
    path: &'a Path,
    sockets: &'a mut Sockets,
    pending: HashMap<u64, Pending>,
}

impl Batch<'_, '_> {
    fn sqlite(&self) -> impl Fn(rusqlite::Error) -> HistoryError + '_ {
        |e| HistoryError::Sqlite(self.path.to_path_buf(), e)
    }

    pub fn event(&mut self, e: Box<ConnEvent>) -> Result<(), HistoryError> {
        let t = to_ns(e.time);
        let began = e.duration.map(|d| t.saturating_sub(d.as_nanos() as i64));
        match e.kind {
            EventKind::Listen => self.opening(e, t, None),
            EventKind::Connect => self.opening(e, began.unwrap_or(t), Some(t)),
            EventKind::Accept => self.accepted(e, t),
            EventKind::ConnectFailed => {
                let opened = began.unwrap_or(t);
                let errno = e.error.as_ref().map(|x| x.errno);
                self.sockets.open.remove(&e.sock_id);
                self.pending.remove(&e.sock_id);
                let ended = Some((t, OUTCOME_CONNECT_FAILED, errno));
                self.insert(&e, opened, Some(opened), None, ended).map(drop)
            }
            EventKind::Close => self.close(&e, t, began),
            EventKind::Snapshot => {
                let row = self.insert(&e, t, None, None, None)?;
                self.sockets.open.insert(e.sock_id, (row, t));
                self.sockets.existing.insert(ends(&e), (row, t));
                Ok(())
            }
        }
    }

    /// Write what is still open at the end of the batch.
    pub fn finish(mut self) -> Result<(), HistoryError> {
        for (sock_id, p) in std::mem::take(&mut self.pending) {
            let row = self.insert(&p.event, p.opened, Some(p.opened), p.established, None)?;
            self.sockets.open.insert(sock_id, (row, p.opened));
        }
        Ok(())
    }

    /// An accept: the exact owner of a socket known already (a replayed id), or a
    /// socket that opens.
    fn accepted(&mut self, e: Box<ConnEvent>, t: i64) -> Result<(), HistoryError> {
        if let Some(p) = self.pending.get_mut(&e.sock_id) {
            p.event = e;
            return Ok(());
        }
        match self.sockets.open.get(&e.sock_id) {
            Some(&(row, _)) => self.set_owner(row, &e),
            None => self.opening(e, t, Some(t)),
        }
    }

    /// A socket that opened at `opened` (listen, connect, accept): pending until its
    /// close or the batch's end, unless the snapshot taken as tracing began listed
    /// it already (it opened between the attach and the snapshot): that row gets
    /// its opening and exact owner.
    fn opening(
        &mut self,
        e: Box<ConnEvent>,
        opened: i64,
        established: Option<i64>,
    ) -> Result<(), HistoryError> {
        let Some((row, _)) = self.sockets.existing.remove(&ends(&e)) else {
            let pending = Pending {
                event: e,
                opened,
                established,
            };
            self.pending.insert(pending.event.sock_id, pending);
            return Ok(());
        };
        let process = self.process(&e)?;
        self.tx
            .prepare_cached(
                "UPDATE sockets SET seen = min(seen, ?2), opened = ?2, established = ?3,
                   process_id = ?4, pid_exact = ?5, sock_id = ?6 WHERE id = ?1",
            )
            .and_then(|mut s| {
                s.execute(params![
                    row,
                    opened,
                    established,
                    process,
                    e.pid_exact,
                    e.sock_id as i64
                ])
            })
            .map_err(self.sqlite())?;
        self.sockets.open.insert(e.sock_id, (row, opened));
        Ok(())
    }

    fn close(&mut self, e: &ConnEvent, t: i64, began: Option<i64>) -> Result<(), HistoryError> {
        let outcome = if e.inferred {
            OUTCOME_CLOSED_INFERRED
        } else {
            OUTCOME_CLOSED
        };
        if let Some(p) = self.pending.remove(&e.sock_id) {
            let ended = Some((t, outcome, None));
            return self
                .insert(&p.event, p.opened, Some(p.opened), p.established, ended)
                .map(drop);
        }
        let by_ends = ends(e);
        let row = match self.sockets.open.remove(&e.sock_id) {
            Some(row) => Some(row),
            None => self.sockets.existing.remove(&by_ends),
        };
        self.sockets.existing.remove(&by_ends);
        match row {
            Some((row, seen)) => {
                self.tx
                    .prepare_cached(
                        "UPDATE sockets SET closed = ?2, outcome = ?3, span = ?4 WHERE id = ?1",
                    )
                    .and_then(|mut s| s.execute(params![row, t, outcome, span(t - seen)]))
                    .map_err(self.sqlite())?;
                Ok(())
            }
            // Opened before recording and not in the snapshot (or a connection
            // closed before anyone accepted it): its lifetime from the close.
            None => {
                let ended = Some((t, outcome, None));
                self.insert(e, began.unwrap_or(t), began, None, ended)
                    .map(drop)
            }
        }
    }

    /// The process row of the event's owner, made once per run.
    fn process(&mut self, e: &ConnEvent) -> Result<Option<i64>, HistoryError> {
        let Some(owner) = &e.owner else {
            return Ok(None);
        };
        let key = (owner.pid, owner.start_ns.unwrap_or(0));
        if let Some(&id) = self.sockets.processes.get(&key) {
            return Ok(Some(id));
        }
        let details = e.process.as_deref();
        let cmdline = details
            .and_then(|d| d.cmdline.as_deref())
            .map(|c| serde_json::to_string(c).unwrap_or_default());
        let id: i64 = self
            .tx
            .prepare_cached(
                "INSERT INTO processes (run_id, pid, start_ns, comm, exe, cmdline, user, uid, ppid, cgroup, container_id)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)
                 ON CONFLICT (run_id, pid, start_ns) DO UPDATE SET exe = coalesce(exe, excluded.exe)
                 RETURNING id",
            )
            .and_then(|mut s| {
                s.query_row(
                    params![
                        self.sockets.run_id,
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
                )
            })
            .map_err(self.sqlite())?;
        self.sockets.processes.put(key, id);
        Ok(Some(id))
    }

    fn set_owner(&mut self, row: i64, e: &ConnEvent) -> Result<(), HistoryError> {
        let process = self.process(e)?;
        self.tx
            .prepare_cached("UPDATE sockets SET process_id = ?2, pid_exact = ?3 WHERE id = ?1")
            .and_then(|mut s| s.execute(params![row, process, e.pid_exact]))
            .map_err(self.sqlite())?;
        Ok(())
    }

    /// A socket row: first `seen`, `opened` (None: before recording),
    /// `established`, and when it already ended, (closed, outcome, errno).
    fn insert(
        &mut self,
        e: &ConnEvent,
        seen: i64,
        opened: Option<i64>,
        established: Option<i64>,
        ended: Option<(i64, i64, Option<i32>)>,
    ) -> Result<i64, HistoryError> {
        let process = self.process(e)?;
        let (closed, outcome, errno, life) = match ended {
            Some((c, o, n)) => (Some(c), o, n, span(c - seen)),
            None => (None, 0, None, SPAN_OPEN),
        };
        let (local, local_len) = addr_bytes(&e.local.addr);
        let (remote, remote_len) = addr_bytes(&e.remote.addr);
        let row = self
            .tx
            .prepare_cached(
                "INSERT INTO sockets (run_id, process_id, pid_exact, role, family, local_addr, local_port,
                   remote_addr, remote_port, seen, opened, established, closed, outcome, errno, sock_id, span)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17)",
            )
            .and_then(|mut s| {
                s.insert(params![
                    self.sockets.run_id,
                    process,
                    e.pid_exact,
                    role_code(e.role),
                    family_code(e.family),
                    &local[..local_len],
                    e.local.port,
                    &remote[..remote_len],
                    e.remote.port,
                    seen,
                    opened,
                    established,
                    closed,
                    outcome,
                    errno,
                    e.sock_id as i64,
                    life,
                ])
            })
            .map_err(self.sqlite())?;
        self.sockets.written += 1;
        Ok(row)
    }
}
