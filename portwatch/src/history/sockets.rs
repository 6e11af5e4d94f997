//! Events turned into socket rows, one transaction's worth at a time: one row per
//! socket lifetime (a UDP socket: one per flow, and one while it listens; see
//! `socket_rows`), its owner's process row made once.
//!
//! A socket that opens and closes within one batch (most connections) is written
//! once, closed, at its close: one insert instead of an insert and an update, half
//! the index work. What is still open when the batch ends is written open, so a
//! crash loses no more than the batch being written.
use std::{collections::HashMap, net::IpAddr, path::Path};

use rusqlite::Transaction;

use super::{
    rows::{self, ProcessRows, Times},
    schema::{HistoryError, OUTCOME_CLOSED, OUTCOME_CLOSED_INFERRED, OUTCOME_CONNECT_FAILED},
    socket_rows::{BySocket, RowKey},
};
use crate::{
    event::model::{ConnEvent, EventKind, Role, Transport},
    history::time::to_ns,
};

/// A socket's two ends, as the snapshot and live events both give them.
type Ends = (IpAddr, u16, IpAddr, u16);

fn ends(e: &ConnEvent) -> Ends {
    (e.local.addr, e.local.port, e.remote.addr, e.remote.port)
}

fn close_outcome(e: &ConnEvent) -> i64 {
    if e.inferred {
        OUTCOME_CLOSED_INFERRED
    } else {
        OUTCOME_CLOSED
    }
}

/// A row written open.
#[derive(Clone, Copy)]
struct OpenRow {
    row: i64,
    seen: i64,
    /// First seen in the snapshot, its opening not known (yet). A UDP socket's
    /// live events name it as the snapshot did (its inode), and the first that
    /// opens this row gives it.
    from_snapshot: bool,
}

/// What the writer remembers between batches.
pub struct Sockets {
    run_id: i64,
    /// Rows written open so far.
    open: BySocket<OpenRow>,
    /// TCP sockets first seen in the snapshot, by their ends (their live events
    /// may name them by another id): ends -> (row, seen).
    existing: HashMap<Ends, (i64, i64)>,
    processes: ProcessRows,
    /// Rows written.
    pub written: u64,
}

impl Sockets {
    pub fn new(run_id: i64) -> Sockets {
        Sockets {
            run_id,
            open: BySocket::default(),
            existing: HashMap::new(),
            processes: ProcessRows::new(run_id),
            written: 0,
        }
    }

    /// One transaction's work on these sockets.
    pub fn batch<'a, 't>(&'a mut self, tx: &'a Transaction<'t>, path: &'a Path) -> Batch<'a, 't> {
        Batch {
            tx,
            path,
            sockets: self,
            pending: BySocket::default(),
        }
    }
}

/// A socket row opened in this batch, not written yet.
struct Pending {
    event: Box<ConnEvent>,
    /// When it opened (also when it was first seen).
    opened: i64,
    established: Option<i64>,
}

impl Pending {
    /// Its row's times, ended or not.
    fn times(&self, ended: Option<(i64, i64, Option<i32>)>) -> Times {
        Times {
            seen: self.opened,
            opened: Some(self.opened),
            established: self.established,
            ended,
        }
    }
}

/// What an opening event is to the rows known (`Batch::opens`).
enum Opens {
    /// The row the snapshot wrote for it.
    SnapshotRow(i64),
    NewRow,
    /// A UDP flow reported again (the kernel's bounded table of flows reported
    /// once forgot it): its row stands.
    KnownFlow,
}

/// One transaction's view. [`Batch::finish`] writes what is still pending.
pub struct Batch<'a, 't> {
    tx: &'a Transaction<'t>,
    path: &'a Path,
    sockets: &'a mut Sockets,
    pending: BySocket<Pending>,
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
            EventKind::Accept if e.proto == Transport::Tcp => self.accepted(e, t),
            // A UDP server's first datagram to a new peer: a flow that opens.
            EventKind::Accept => self.opening(e, t, Some(t)),
            EventKind::ConnectFailed => {
                let opened = began.unwrap_or(t);
                let errno = e.error.as_ref().map(|x| x.errno);
                let key = RowKey::of(&e);
                self.sockets.open.remove(&key);
                self.pending.remove(&key);
                let times = Times {
                    seen: opened,
                    opened: Some(opened),
                    established: None,
                    ended: Some((t, OUTCOME_CONNECT_FAILED, errno)),
                };
                self.insert(&e, times).map(drop)
            }
            EventKind::Close if e.proto == Transport::Udp => self.close_udp(&e, t, began),
            EventKind::Close => self.close(&e, t, began),
            EventKind::Snapshot => self.snapshot(&e, t),
        }
    }

    /// A socket that existed when tracing began: written open, its opening not
    /// known. A UDP row a live event already gave (it came first) is not written
    /// twice.
    fn snapshot(&mut self, e: &ConnEvent, t: i64) -> Result<(), HistoryError> {
        let key = RowKey::of(e);
        if e.proto == Transport::Udp
            && (self.pending.contains(&key) || self.sockets.open.contains(&key))
        {
            return Ok(());
        }
        let times = Times {
            seen: t,
            opened: None,
            established: None,
            ended: None,
        };
        let row = self.insert(e, times)?;
        let open = OpenRow {
            row,
            seen: t,
            from_snapshot: true,
        };
        self.sockets.open.insert(key, open);
        if e.proto == Transport::Tcp {
            self.sockets.existing.insert(ends(e), (row, t));
        }
        Ok(())
    }

    /// Write what is still open at the end of the batch.
    pub fn finish(mut self) -> Result<(), HistoryError> {
        let pending: Vec<(RowKey, Pending)> = self.pending.drain().collect();
        for (key, p) in pending {
            let row = self.insert(&p.event, p.times(None))?;
            let open = OpenRow {
                row,
                seen: p.opened,
                from_snapshot: false,
            };
            self.sockets.open.insert(key, open);
        }
        Ok(())
    }

    /// A TCP accept: the exact owner of a socket known already (a replayed id),
    /// or a socket that opens.
    fn accepted(&mut self, e: Box<ConnEvent>, t: i64) -> Result<(), HistoryError> {
        let key = RowKey::of(&e);
        if let Some(p) = self.pending.get_mut(&key) {
            p.event = e;
            return Ok(());
        }
        match self.sockets.open.get_mut(&key) {
            Some(open) => {
                let row = open.row;
                self.set_owner(row, &e)
            }
            None => self.opening(e, t, Some(t)),
        }
    }

    /// What the opening event `e` is to the rows known: a snapshot row it opens
    /// (taken: TCP's by its ends, UDP's by its socket and peer), a new row, or
    /// a UDP flow known already.
    fn opens(&mut self, e: &ConnEvent) -> Opens {
        if e.proto == Transport::Tcp {
            return match self.sockets.existing.remove(&ends(e)) {
                Some((row, _)) => Opens::SnapshotRow(row),
                None => Opens::NewRow,
            };
        }
        let key = RowKey::of(e);
        let flow = e.role != Role::Listener;
        match self.sockets.open.get_mut(&key) {
            Some(open) if open.from_snapshot => {
                open.from_snapshot = false;
                Opens::SnapshotRow(open.row)
            }
            Some(_) if flow => Opens::KnownFlow,
            _ if flow && self.pending.contains(&key) => Opens::KnownFlow,
            _ => Opens::NewRow,
        }
    }

    /// A socket row that opened at `opened` (listen, connect, accept): pending
    /// until its close or the batch's end, unless the snapshot taken as tracing
    /// began listed it already (it opened between the attach and the snapshot):
    /// that row gets its opening and exact owner.
    fn opening(
        &mut self,
        e: Box<ConnEvent>,
        opened: i64,
        established: Option<i64>,
    ) -> Result<(), HistoryError> {
        let key = RowKey::of(&e);
        let row = match self.opens(&e) {
            Opens::SnapshotRow(row) => row,
            Opens::KnownFlow => return Ok(()),
            Opens::NewRow => {
                let pending = Pending {
                    event: e,
                    opened,
                    established,
                };
                self.pending.insert(key, pending);
                return Ok(());
            }
        };
        let process = self.process(&e)?;
        rows::set_opening(self.tx, row, process, &e, opened, established).map_err(self.sqlite())?;
        let open = OpenRow {
            row,
            seen: opened,
            from_snapshot: false,
        };
        self.sockets.open.insert(key, open);
        Ok(())
    }

    /// A TCP socket's close.
    fn close(&mut self, e: &ConnEvent, t: i64, began: Option<i64>) -> Result<(), HistoryError> {
        let outcome = close_outcome(e);
        let key = RowKey::of(e);
        if let Some(p) = self.pending.remove(&key) {
            return self.insert_closed(p, t, outcome);
        }
        let by_ends = ends(e);
        let row = match self.sockets.open.remove(&key) {
            Some(open) => Some((open.row, open.seen)),
            None => self.sockets.existing.remove(&by_ends),
        };
        self.sockets.existing.remove(&by_ends);
        match row {
            Some((row, seen)) => self.set_closed(row, seen, t, outcome),
            None => self.closed_unseen(e, t, began, outcome),
        }
    }

    /// A UDP socket's close (the kernel's, or inferred): every row of it, its
    /// flows and its listener, closes.
    fn close_udp(&mut self, e: &ConnEvent, t: i64, began: Option<i64>) -> Result<(), HistoryError> {
        let outcome = close_outcome(e);
        let pending: Vec<Pending> = self.pending.remove_udp_socket(e.sock_id).collect();
        let open: Vec<OpenRow> = self.sockets.open.remove_udp_socket(e.sock_id).collect();
        if pending.is_empty() && open.is_empty() {
            return self.closed_unseen(e, t, began, outcome);
        }
        for p in pending {
            self.insert_closed(p, t, outcome)?;
        }
        for o in open {
            self.set_closed(o.row, o.seen, t, outcome)?;
        }
        Ok(())
    }

    /// A row opened in this batch, written closed at `t`.
    fn insert_closed(&mut self, p: Pending, t: i64, outcome: i64) -> Result<(), HistoryError> {
        self.insert(&p.event, p.times(Some((t, outcome, None))))
            .map(drop)
    }

    /// A row written open, closed at `t`.
    fn set_closed(
        &mut self,
        row: i64,
        seen: i64,
        t: i64,
        outcome: i64,
    ) -> Result<(), HistoryError> {
        rows::set_closed(self.tx, row, seen, t, outcome).map_err(self.sqlite())
    }

    /// The close of a socket opened before recording and not in the snapshot (or
    /// a connection closed before anyone accepted it): its lifetime from the close.
    fn closed_unseen(
        &mut self,
        e: &ConnEvent,
        t: i64,
        began: Option<i64>,
        outcome: i64,
    ) -> Result<(), HistoryError> {
        let times = Times {
            seen: began.unwrap_or(t),
            opened: began,
            established: None,
            ended: Some((t, outcome, None)),
        };
        self.insert(e, times).map(drop)
    }

    /// The process row of the event's owner, made once per run.
    fn process(&mut self, e: &ConnEvent) -> Result<Option<i64>, HistoryError> {
        self.sockets.processes.of(self.tx, e).map_err(self.sqlite())
    }

    fn set_owner(&mut self, row: i64, e: &ConnEvent) -> Result<(), HistoryError> {
        let process = self.process(e)?;
        rows::set_owner(self.tx, row, process, e.pid_exact).map_err(self.sqlite())
    }

    /// A socket row for `e`.
    fn insert(&mut self, e: &ConnEvent, times: Times) -> Result<i64, HistoryError> {
        let process = self.process(e)?;
        let row = rows::insert_socket(self.tx, self.sockets.run_id, process, e, times)
            .map_err(self.sqlite())?;
        self.sockets.written += 1;
        Ok(row)
    }
}
