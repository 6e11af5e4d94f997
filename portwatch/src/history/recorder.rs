//! The pipeline's history output: each event goes to the writer thread through a
//! bounded queue, never waiting for it. What does not fit is counted (the run's
//! `dropped`), warned about on stderr like ring-buffer loss, and never blocks the
//! ring-buffer reader. With `--print`, events are printed too.
use std::{
    io,
    sync::{
        atomic::{AtomicU64, Ordering},
        mpsc::{SyncSender, TrySendError},
        Arc,
    },
    time::Instant,
};

use crate::{
    baseline::check::Drift,
    event::model::ConnEvent,
    output::{LossReport, Printer, StatsReport},
};

/// What the writer is handed.
pub enum Message {
    Event(Box<ConnEvent>),
    /// Totals so far of events lost in the ring buffer and runs skipped.
    Loss {
        lost: u64,
        skipped: u64,
    },
    /// The run ended with these totals: write them, commit, stop.
    Stop {
        lost: u64,
        skipped: u64,
    },
}

/// Events the queue could not take, shared with the writer (it records them).
#[derive(Clone, Default)]
pub struct Dropped(Arc<AtomicU64>);

impl Dropped {
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
    fn add(&self) -> u64 {
        self.0.fetch_add(1, Ordering::Relaxed) + 1
    }
}

pub struct Recorder {
    queue: SyncSender<Message>,
    dropped: Dropped,
    /// The last drop count said on stderr, and when.
    warned: (u64, Option<Instant>),
    print: Option<Box<dyn Printer>>,
}

impl Recorder {
    pub fn new(
        queue: SyncSender<Message>,
        dropped: Dropped,
        print: Option<Box<dyn Printer>>,
    ) -> Recorder {
        Recorder {
            queue,
            dropped,
            warned: (0, None),
            print,
        }
    }

    /// At most one warning a second while drops go on.
    fn warn_dropped(&mut self, total: u64) {
        if self.warned.1.is_some_and(|t| t.elapsed().as_secs() < 1) {
            return;
        }
        eprintln!(
            "portwatch: warning: {} events not stored (the history writer fell behind), {total} in total",
            total - self.warned.0
        );
        self.warned = (total, Some(Instant::now()));
    }
}

/// The writer is gone: it failed, and says why when it is joined.
fn writer_gone() -> io::Error {
    io::Error::other("the history writer stopped")
}

impl Printer for Recorder {
    fn event(&mut self, event: &ConnEvent) -> io::Result<()> {
        match self.queue.try_send(Message::Event(Box::new(event.clone()))) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => {
                let total = self.dropped.add();
                self.warn_dropped(total);
            }
            Err(TrySendError::Disconnected(_)) => return Err(writer_gone()),
        }
        match &mut self.print {
            Some(p) => p.event(event),
            None => Ok(()),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match &mut self.print {
            Some(p) => p.flush(),
            None => Ok(()),
        }
    }

    fn lost(&mut self, report: &LossReport) -> io::Result<()> {
        // The final totals come with Stop; a full queue only delays these.
        let _ = self.queue.try_send(Message::Loss {
            lost: report.lost_total,
            skipped: report.skipped_total,
        });
        match &mut self.print {
            Some(p) => p.lost(report),
            None => Ok(()),
        }
    }

    fn drift(&mut self, d: &Drift) -> io::Result<()> {
        match &mut self.print {
            Some(p) => p.drift(d),
            None => crate::output::stderr_drift(d),
        }
    }

    fn stats(&mut self, report: &StatsReport) -> io::Result<()> {
        match &mut self.print {
            Some(p) => p.stats(report),
            None => crate::output::stderr_stats(report),
        }
    }
}
