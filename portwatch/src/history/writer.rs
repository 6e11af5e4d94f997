//! The history writer: its own thread, fed by the recorder's bounded queue, in
//! transactions of at most half a second (`sockets` turns the events into rows):
//! `kill -9` loses at most the last of them, and SQLite's WAL keeps the file whole.
//! It also keeps the run's row and runs retention.
use std::{
    sync::mpsc::{Receiver, RecvTimeoutError},
    time::{Duration, Instant},
};

use rusqlite::{params, Connection};

use super::{
    recorder::{Dropped, Message},
    retention::Retention,
    schema::HistoryError,
    sockets::Sockets,
    time::to_ns,
};

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
    /// The sockets and processes written, and those still open.
    sockets: Sockets,
    dropped: Dropped,
    retention: Retention,
    lost: u64,
    skipped: u64,
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
            sockets: Sockets::new(run_id),
            dropped,
            retention,
            lost: 0,
            skipped: 0,
        };
        writer.enforce_retention()?;
        Ok(writer)
    }

    pub fn run_id(&self) -> i64 {
        self.run_id
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
        let mut state = self.sockets.batch(&tx, &self.path);
        for message in batch {
            match message {
                Message::Event(e) => state.event(e)?,
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
        state.finish()?;
        let counts = [self.lost, self.skipped, self.dropped.get()];
        update_run(&tx, self.run_id, counts, false)
            .map_err(|e| HistoryError::Sqlite(self.path.clone(), e))?;
        tx.commit()
            .map_err(|e| HistoryError::Sqlite(self.path.clone(), e))?;
        Ok(stop)
    }

    fn finish(self) -> Result<Totals, HistoryError> {
        let err = HistoryError::sqlite(&self.path);
        let counts = [self.lost, self.skipped, self.dropped.get()];
        update_run(&self.conn, self.run_id, counts, true).map_err(&err)?;
        // Fold the WAL back into the file: a copied database is then whole.
        let _ = self.conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE);");
        Ok(Totals {
            run_id: self.run_id,
            sockets: self.sockets.written,
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
