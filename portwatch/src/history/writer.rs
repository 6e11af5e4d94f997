//! The history writer: its own thread, fed by the recorder's bounded queue. It
//! turns events into socket lifetimes (one row per socket: inserted when it opens
//! or is first seen, updated when it closes) and keeps each process once per run,
//! in transactions of at most a second: `kill -9` loses at most the last second,
//! and SQLite's WAL keeps the file whole.
use std::{
    collections::HashMap,
    net::IpAddr,
    sync::mpsc::{Receiver, RecvTimeoutError},
    time::{Duration, Instant},
};

use rusqlite::{params, Connection, OptionalExtension, Transaction};

use super::{
    recorder::{Dropped, Message},
    retention::Retention,
    schema::{
        span, HistoryError, OUTCOME_CLOSED, OUTCOME_CONNECT_FAILED, ROLE_CLIENT, ROLE_LISTENER,
        ROLE_SERVER, SPAN_OPEN,
    },
    time::to_ns,
};
use crate::event::model::{ConnEvent, EventKind, Family, Role};

/// The longest a batch stays uncommitted.
const BATCH_TIME: Duration = Duration::from_millis(500);
/// The most events in one transaction.
const BATCH_EVENTS: usize = 20_000;
/// How often retention runs while recording.
const RETENTION_EVERY: Duration = Duration::from_secs(60);

/// What a run is, for its row in `runs`.
pub struct RunRow<'a> {
    pub host: &'a str,
    pub kernel: &'a str,
    pub mode: &'a str,
}

/// How a run's recording ended.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Totals {
    pub run_id: i64,
    /// Sockets stored (rows inserted).
    pub sockets: u64,
    /// Events the queue could not take.
    pub dropped: u64,
}

pub struct Writer {
    conn: Connection,
    path: std::path::PathBuf,
    run_id: i64,
    /// Open sockets of this run: sock_id -> (row, seen).
    open: HashMap<u64, (i64, i64)>,
    /// Sockets first seen in the snapshot, by endpoints (their live events may name
    /// them by another id): (local, remote) -> (row, seen).
    existing: HashMap<(IpAddr, u16, IpAddr, u16), (i64, i64)>,
    /// Processes of this run: (pid, start_ns) -> row.
    processes: HashMap<(u32, u64), i64>,
    dropped: Dropped,
    retention: Retention,
    lost: u64,
    skipped: u64,
    sockets: u64,
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

pub fn addr_bytes(addr: IpAddr) -> Vec<u8> {
    match addr {
        IpAddr::V4(a) => a.octets().to_vec(),
        IpAddr::V6(a) => a.octets().to_vec(),
    }
}

fn now_ns() -> i64 {
    to_ns(chrono::Utc::now())
}

impl Writer {
    /// A new run in `conn` (opened by `schema::open_for_recording`).
    pub fn start(
        conn: Connection,
        path: &std::path::Path,
        run: &RunRow<'_>,
        dropped: Dropped,
        retention: Retention,
    ) -> Result<Writer, HistoryError> {
        let now = now_ns();
        conn.execute(
            "INSERT INTO runs (host, kernel, mode, version, started, heartbeat) VALUES (?1, ?2, ?3, ?4, ?5, ?5)",
            params![run.host, run.kernel, run.mode, env!("CARGO_PKG_VERSION"), now],
        )
        .map_err(|e| HistoryError::Sqlite(path.into(), e))?;
        let run_id = conn.last_insert_rowid();
        let mut writer = Writer {
            conn,
            path: path.into(),
            run_id,
            open: HashMap::new(),
            existing: HashMap::new(),
            processes: HashMap::new(),
            dropped,
            retention,
            lost: 0,
            skipped: 0,
            sockets: 0,
        };
        writer.enforce_retention()?;
        Ok(writer)
    }

    pub fn run_id(&self) -> i64 {
        self.run_id
    }

    fn err(&self) -> impl Fn(rusqlite::Error) -> HistoryError + '_ {
        move |e| match e.sqlite_error_code() {
            Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked) => {
                HistoryError::Locked(self.path.clone())
            }
            _ => HistoryError::Sqlite(self.path.clone(), e),
        }
    }

    /// Write what comes until `Stop` (or the queue closes), in batches.
    pub fn run(mut self, queue: Receiver<Message>) -> Result<Totals, HistoryError> {
        let mut last_retention = Instant::now();
        loop {
            let first = match queue.recv_timeout(BATCH_TIME) {
                Ok(m) => Some(m),
                Err(RecvTimeoutError::Timeout) => None,
                Err(RecvTimeoutError::Disconnected) => return self.finish(),
            };
            let deadline = Instant::now() + BATCH_TIME;
            let mut batch = Vec::new();
            batch.extend(first);
            while batch.len() < BATCH_EVENTS {
                match queue.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
                    Ok(m) => batch.push(m),
                    Err(_) => break,
                }
            }
            let stop = self.write_batch(batch)?;
            if stop {
                return self.finish();
            }
            if last_retention.elapsed() >= RETENTION_EVERY {
                self.enforce_retention()?;
                last_retention = Instant::now();
            }
        }
    }

    /// One transaction: the events, then the run's counters. Whether Stop came.
    fn write_batch(&mut self, batch: Vec<Message>) -> Result<bool, HistoryError> {
        let mut stop = false;
        let tx = self
            .conn
            .transaction()
            .map_err(|e| HistoryError::Sqlite(self.path.clone(), e))?;
        let mut state = Batch {
            tx: &tx,
            path: &self.path,
            run_id: self.run_id,
            open: &mut self.open,
            existing: &mut self.existing,
            processes: &mut self.processes,
            sockets: &mut self.sockets,
        };
        for message in batch {
            match message {
                Message::Event(e) => state.event(&e)?,
                Message::Loss { lost, skipped } => {
                    self.lost = self.lost.max(lost);
                    self.skipped = self.skipped.max(skipped);
                }
                Message::Stop { lost, skipped } => {
                    self.lost = self.lost.max(lost);
                    self.skipped = self.skipped.max(skipped);
                    stop = true;
                }
            }
        }
        let counts = [self.lost, self.skipped, self.dropped.get()];
        update_run(&tx, self.run_id, counts, false)
            .map_err(|e| HistoryError::Sqlite(self.path.clone(), e))?;
        tx.commit()
            .map_err(|e| HistoryError::Sqlite(self.path.clone(), e))?;
        Ok(stop)
    }

    fn finish(self) -> Result<Totals, HistoryError> {
        let err = self.err();
        let counts = [self.lost, self.skipped, self.dropped.get()];
        update_run(&self.conn, self.run_id, counts, true).map_err(&err)?;
        // Fold the WAL back into the file: a copied database is then whole.
        let _ = self.conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE);");
        Ok(Totals {
            run_id: self.run_id,
            sockets: self.sockets,
            dropped: self.dropped.get(),
        })
    }

    fn enforce_retention(&mut self) -> Result<(), HistoryError> {
        self.retention
            .enforce(&self.conn, now_ns())
            .map_err(|e| HistoryError::Sqlite(self.path.clone(), e))
    }
}

/// The run's row: alive now (its heartbeat), its counts (lost, skipped, dropped),
/// and when `stopped`, its end.
fn update_run(
    conn: &Connection,
    run: i64,
    counts: [u64; 3],
    stopped: bool,
) -> rusqlite::Result<usize> {
    let [lost, skipped, dropped] = counts.map(|n| n as i64);
    conn.execute(
        "UPDATE runs SET heartbeat = ?2, stopped = CASE WHEN ?6 THEN ?2 END,
           lost = ?3, skipped = ?4, dropped = ?5 WHERE id = ?1",
        params![run, now_ns(), lost, skipped, dropped, stopped],
    )
}

/// One transaction's view of the writer.
struct Batch<'a, 't> {
    tx: &'a Transaction<'t>,
    path: &'a std::path::Path,
    run_id: i64,
    open: &'a mut HashMap<u64, (i64, i64)>,
    existing: &'a mut HashMap<(IpAddr, u16, IpAddr, u16), (i64, i64)>,
    processes: &'a mut HashMap<(u32, u64), i64>,
    sockets: &'a mut u64,
}

impl Batch<'_, '_> {
    fn sqlite(&self) -> impl Fn(rusqlite::Error) -> HistoryError + '_ {
        |e| HistoryError::Sqlite(self.path.to_path_buf(), e)
    }

    fn event(&mut self, e: &ConnEvent) -> Result<(), HistoryError> {
        let t = to_ns(e.time);
        let began = e.duration.map(|d| t.saturating_sub(d.as_nanos() as i64));
        match e.kind {
            EventKind::Listen => self.opening(e, t, None)?,
            EventKind::Connect => self.opening(e, began.unwrap_or(t), Some(t))?,
            EventKind::Accept => match self.open.get(&e.sock_id) {
                // Known already (a replayed id): only the exact owner is new.
                Some(&(row, _)) => self.set_owner(row, e)?,
                None => self.opening(e, t, Some(t))?,
            },
            EventKind::ConnectFailed => {
                let opened = began.unwrap_or(t);
                let errno = e.error.as_ref().map(|x| x.errno);
                self.insert(
                    e,
                    opened,
                    Some(opened),
                    None,
                    Some((t, OUTCOME_CONNECT_FAILED, errno)),
                )?;
                self.open.remove(&e.sock_id);
            }
            EventKind::Close => self.close(e, t, began)?,
            EventKind::Snapshot => {
                let row = self.insert(e, t, None, None, None)?;
                self.open.insert(e.sock_id, (row, t));
                self.existing.insert(
                    (e.local.addr, e.local.port, e.remote.addr, e.remote.port),
                    (row, t),
                );
            }
        }
        Ok(())
    }

    /// A socket that opened at `opened` (listen, connect, accept): a new row, unless
    /// the snapshot taken as tracing began listed it already (it opened between
    /// the attach and the snapshot): that row gets its opening and exact owner.
    fn opening(
        &mut self,
        e: &ConnEvent,
        opened: i64,
        established: Option<i64>,
    ) -> Result<(), HistoryError> {
        let ends = (e.local.addr, e.local.port, e.remote.addr, e.remote.port);
        let row = match self.existing.remove(&ends) {
            Some((row, _)) => {
                let process = self.process(e)?;
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
                row
            }
            None => self.insert(e, opened, Some(opened), established, None)?,
        };
        self.open.insert(e.sock_id, (row, opened));
        Ok(())
    }

    fn close(&mut self, e: &ConnEvent, t: i64, began: Option<i64>) -> Result<(), HistoryError> {
        let by_ends = (e.local.addr, e.local.port, e.remote.addr, e.remote.port);
        let row = match self.open.remove(&e.sock_id) {
            Some(row) => Some(row),
            None => self.existing.remove(&by_ends),
        };
        self.existing.remove(&by_ends);
        match row {
            Some((row, seen)) => {
                self.tx
                    .prepare_cached(
                        "UPDATE sockets SET closed = ?2, outcome = ?3, span = ?4 WHERE id = ?1",
                    )
                    .and_then(|mut s| s.execute(params![row, t, OUTCOME_CLOSED, span(t - seen)]))
                    .map_err(self.sqlite())?;
            }
            // Opened before recording and not in the snapshot (or a connection
            // closed before anyone accepted it): its lifetime from the close.
            None => {
                self.insert(
                    e,
                    began.unwrap_or(t),
                    began,
                    None,
                    Some((t, OUTCOME_CLOSED, None)),
                )?;
            }
        }
        Ok(())
    }

    /// The process row of the event's owner, made once per run.
    fn process(&mut self, e: &ConnEvent) -> Result<Option<i64>, HistoryError> {
        let Some(owner) = &e.owner else {
            return Ok(None);
        };
        let key = (owner.pid, owner.start_ns.unwrap_or(0));
        if let Some(&id) = self.processes.get(&key) {
            return Ok(Some(id));
        }
        let details = e.process.as_deref();
        let cmdline = details
            .and_then(|d| d.cmdline.as_deref())
            .map(|c| serde_json::to_string(c).unwrap_or_default());
        let tx = self.tx;
        let id: i64 = tx
            .prepare_cached(
                "INSERT INTO processes (run_id, pid, start_ns, comm, exe, cmdline, user, uid, ppid, cgroup, container_id)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)
                 ON CONFLICT (run_id, pid, start_ns) DO UPDATE SET exe = coalesce(exe, excluded.exe)
                 RETURNING id",
            )
            .and_then(|mut s| {
                s.query_row(
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
                )
            })
            .map_err(self.sqlite())?;
        self.processes.insert(key, id);
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
        let row = self
            .tx
            .prepare_cached(
                "INSERT INTO sockets (run_id, process_id, pid_exact, role, family, local_addr, local_port,
                   remote_addr, remote_port, seen, opened, established, closed, outcome, errno, sock_id, span)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17)",
            )
            .and_then(|mut s| {
                s.insert(params![
                    self.run_id,
                    process,
                    e.pid_exact,
                    role_code(e.role),
                    family_code(e.family),
                    addr_bytes(e.local.addr),
                    e.local.port,
                    addr_bytes(e.remote.addr),
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
        *self.sockets += 1;
        Ok(row)
    }
}

/// Whether the database already holds a run (for tests and `query`).
pub fn run_count(conn: &Connection) -> rusqlite::Result<i64> {
    conn.query_row("SELECT count(*) FROM runs", [], |r| r.get(0))
        .optional()
        .map(|n| n.unwrap_or(0))
}
