//! The bounded spool between the reader and the sender thread: the reader only
//! appends (never waits on the network); what does not fit is dropped, counted,
//! and its sequence number left as a gap. Records in flight (taken by the sender,
//! not yet delivered) count against the capacity, so the memory held is bounded
//! by `capacity` records whatever the collector does.
use std::{
    collections::VecDeque,
    sync::{Condvar, Mutex, MutexGuard},
    time::{Duration, Instant},
};

use prometheus_client::metrics::{counter::Counter, gauge::Gauge};

use super::record::Item;

/// Each record's fate, counted exactly: every record numbered is, in the end,
/// delivered or counted in one of the dropped counters.
#[derive(Clone, Default)]
pub struct Counters {
    /// Records numbered (given to the exporter).
    pub produced: Counter,
    /// Records the collector accepted.
    pub delivered: Counter,
    /// Dropped because the spool was full (the collector down or slow too long).
    pub dropped_full: Counter,
    /// Dropped because the collector refused them for good (a 4xx other than 408
    /// and 429): sending them again would fail again.
    pub dropped_rejected: Counter,
    /// Still undelivered when the run ended and the exit deadline passed.
    pub dropped_at_exit: Counter,
    /// Records in the spool or in flight now.
    pub spooled: Gauge,
}

struct State {
    items: VecDeque<(u64, Item)>,
    /// Taken by the sender and not yet delivered or dropped.
    in_flight: usize,
    next_seq: u64,
    /// The run ended: deliver what is left until this instant.
    closing: Option<Instant>,
    /// Whether drops have begun in the current outage (said once per outage).
    dropping: bool,
    /// The run's end gave up waiting for the sender: everything was counted
    /// dropped at exit, and what the sender still reports is not counted again.
    abandoned: bool,
}

pub struct Spool {
    state: Mutex<State>,
    wake: Condvar,
    capacity: usize,
    batch: usize,
    pub counters: Counters,
}

/// What the sender gets: a batch to send, or the end.
pub enum Take {
    Batch(Vec<(u64, Item)>),
    Closed,
}

impl Spool {
    pub fn new(capacity: usize, batch: usize) -> Spool {
        Spool {
            state: Mutex::new(State {
                items: VecDeque::new(),
                in_flight: 0,
                next_seq: 1,
                closing: None,
                dropping: false,
                abandoned: false,
            }),
            wake: Condvar::new(),
            capacity,
            batch,
            counters: Counters::default(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic elsewhere while holding the lock leaves a consistent queue.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Number `item` and append it; when the spool is full it is dropped and
    /// counted. Whether this is the first drop of an outage (to be said once).
    pub fn push(&self, item: Item) -> bool {
        let mut s = self.lock();
        let seq = s.next_seq;
        s.next_seq += 1;
        self.counters.produced.inc();
        if s.items.len() + s.in_flight >= self.capacity {
            self.counters.dropped_full.inc();
            let first = !s.dropping;
            s.dropping = true;
            return first;
        }
        s.items.push_back((seq, item));
        self.counters.spooled.inc();
        // Wake the sender when a batch is ready; a partial batch is sent when the
        // sender's linger time ends.
        if s.items.len() == 1 || s.items.len() == self.batch {
            self.wake.notify_one();
        }
        false
    }

    /// The next batch: a full one at once, a partial one after `linger`, what is
    /// left once closing. `Closed` when the run ended and nothing is left (or the
    /// exit deadline passed: what is left is counted dropped).
    pub fn take(&self, linger: Duration) -> Take {
        let mut s = self.lock();
        let mut waiting_since: Option<Instant> = None;
        loop {
            if let Some(deadline) = s.closing {
                if s.items.is_empty() || Instant::now() >= deadline {
                    return self.close_out(&mut s);
                }
                return Take::Batch(self.take_batch(&mut s));
            }
            if s.items.len() >= self.batch {
                return Take::Batch(self.take_batch(&mut s));
            }
            let wait = if s.items.is_empty() {
                Duration::from_secs(3600)
            } else {
                let since = *waiting_since.get_or_insert_with(Instant::now);
                match linger.checked_sub(since.elapsed()) {
                    Some(left) if !left.is_zero() => left,
                    _ => return Take::Batch(self.take_batch(&mut s)),
                }
            };
            s = self
                .wake
                .wait_timeout(s, wait)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }

    fn take_batch(&self, s: &mut State) -> Vec<(u64, Item)> {
        let n = s.items.len().min(self.batch);
        s.in_flight += n;
        s.items.drain(..n).collect()
    }

    /// The end: whatever is still spooled is counted dropped.
    fn close_out(&self, s: &mut State) -> Take {
        let left = s.items.len() as u64;
        s.items.clear();
        self.counters.dropped_at_exit.inc_by(left);
        self.counters.spooled.dec_by(left as i64);
        Take::Closed
    }

    /// A batch taken is done with: `delivered` or dropped as `rejected`.
    pub fn done(&self, n: usize, delivered: bool) {
        let mut s = self.lock();
        if s.abandoned {
            return;
        }
        s.in_flight -= n;
        if delivered {
            self.counters.delivered.inc_by(n as u64);
            s.dropping = false;
        } else {
            self.counters.dropped_rejected.inc_by(n as u64);
        }
        self.counters.spooled.dec_by(n as i64);
    }

    /// A batch in flight the run's end gave up on.
    pub fn abandon(&self, n: usize) {
        let mut s = self.lock();
        if s.abandoned {
            return;
        }
        s.in_flight -= n;
        self.counters.dropped_at_exit.inc_by(n as u64);
        self.counters.spooled.dec_by(n as i64);
    }

    /// The sender did not finish in time (a request hangs): everything spooled
    /// or in flight is counted dropped at exit, once.
    pub fn abandon_all(&self) {
        let mut s = self.lock();
        if s.abandoned {
            return;
        }
        let n = (s.items.len() + s.in_flight) as u64;
        s.items.clear();
        s.in_flight = 0;
        s.abandoned = true;
        self.counters.dropped_at_exit.inc_by(n);
        self.counters.spooled.dec_by(n as i64);
    }

    /// The run ended: deliver what is left until `deadline`.
    pub fn close(&self, deadline: Instant) {
        self.lock().closing = Some(deadline);
        self.wake.notify_all();
    }

    /// The exit deadline, once closing.
    pub fn deadline(&self) -> Option<Instant> {
        self.lock().closing
    }

    /// Sleep `pause` before sending again, or less if the run ends meanwhile.
    pub fn pause(&self, pause: Duration) {
        let s = self.lock();
        if s.closing.is_some() {
            return;
        }
        let _ = self.wake.wait_timeout(s, pause);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::output::LossReport;

    fn item() -> Item {
        Item::Lost(LossReport {
            time: chrono::Utc::now(),
            lost: 1,
            lost_total: 1,
            per_cpu: vec![1],
            skipped_total: 0,
        })
    }

    #[test]
    fn a_full_spool_drops_and_numbers_every_record() {
        let spool = Spool::new(3, 2);
        for _ in 0..5 {
            spool.push(item());
        }
        let c = &spool.counters;
        assert_eq!(
            (c.produced.get(), c.dropped_full.get(), c.spooled.get()),
            (5, 2, 3)
        );
        let Take::Batch(b) = spool.take(Duration::ZERO) else {
            panic!("a batch was ready");
        };
        assert_eq!(b.iter().map(|(s, _)| *s).collect::<Vec<_>>(), [1, 2]);
        // In flight still counts: the spool stays full until the batch is done.
        spool.push(item());
        assert_eq!(c.dropped_full.get(), 3);
        spool.done(2, true);
        spool.push(item());
        spool.close(Instant::now());
        let Take::Closed = spool.take(Duration::ZERO) else {
            panic!("closing with an expired deadline");
        };
        assert_eq!(
            c.delivered.get() + c.dropped_full.get() + c.dropped_at_exit.get(),
            c.produced.get()
        );
        assert_eq!(c.spooled.get(), 0);
    }

    #[test]
    fn abandoning_counts_spooled_and_in_flight_once() {
        let spool = Spool::new(10, 2);
        for _ in 0..5 {
            spool.push(item());
        }
        let Take::Batch(b) = spool.take(Duration::ZERO) else {
            panic!("a batch was ready");
        };
        spool.abandon_all();
        // The sender's late report of the batch it held is not counted again.
        spool.done(b.len(), true);
        spool.abandon_all();
        let c = &spool.counters;
        assert_eq!(
            (c.delivered.get(), c.dropped_at_exit.get(), c.spooled.get()),
            (0, 5, 0)
        );
    }
}
