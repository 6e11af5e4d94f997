//! The event stream, from the kernel's records (or the sockets that already exist)
//! to the printer: decode -> classify -> enrich -> filter -> output. Every output
//! is fed from here.
pub mod reader;
pub mod reconcile;
pub mod snapshot;

use std::io::{self, Write};

use crate::{
    baseline::{check::Checker, learn},
    enrich::procinfo::Enricher,
    event::{
        classify::EphemeralRange,
        decode::{parse_record, Clock, Decoder},
        filter::Filter,
        model::{ConnEvent, EventKind},
    },
    output::Printer,
};
use reconcile::OpenSockets;

/// Test hook (`PORTWATCH_FAULT_DROP_CLOSES=N`): every Nth close record read from
/// the kernel is dropped unseen, as if the kernel had never reported it, to check
/// that its close is still inferred.
const FAULT_DROP_CLOSES: &str = "PORTWATCH_FAULT_DROP_CLOSES";

/// What went through the pipeline.
#[derive(Debug, Default)]
pub struct Stats {
    /// Records read from the ring buffer.
    pub received: u64,
    /// Events printed (received and passing the userspace filters).
    pub events: u64,
    pub lost: u64,
    /// Program runs the kernel skipped (recursion guard), each possibly an event.
    pub skipped: u64,
    pub undecodable: u64,
    /// Accepts whose exact owner the kernel side could not keep (its map full).
    pub accepts_unrecorded: u64,
    /// Socket owners the kernel side could not store.
    pub owners_unstored: u64,
    /// Kernel-side runs dropped because a kernel read failed.
    pub unreadable: u64,
    /// Events printed that name no process: their sockets were opened before
    /// tracing began, or their owner was not kept (evicted from the LRU map, or
    /// not stored).
    pub without_process: u64,
    /// Closes shown that the kernel side never reported: the kernel no longer had
    /// the socket (`reconcile`).
    pub inferred: u64,
}

pub struct Pipeline<'p> {
    printer: &'p mut dyn Printer,
    filter: &'p Filter,
    enricher: Enricher,
    decoder: Decoder,
    stats: Stats,
    /// `--baseline`: every event shown is checked against it.
    checker: Option<Checker>,
    /// The sockets shown open and not yet closed.
    open: OpenSockets,
    /// `--metrics`: every event shown is counted there.
    metrics: Option<crate::export::metrics::Metrics>,
    /// `--otlp-endpoint`: every event, drift and loss report shown is sent there.
    otlp: Option<crate::export::otlp::Otlp>,
    /// The fault injection hook's period, and the closes read so far.
    drop_closes: Option<(u64, u64)>,
}

impl<'p> Pipeline<'p> {
    pub fn new(printer: &'p mut dyn Printer, filter: &'p Filter) -> Pipeline<'p> {
        Pipeline {
            printer,
            filter,
            enricher: Enricher::new(),
            decoder: Decoder::new(Clock::now(), EphemeralRange::of_host()),
            stats: Stats::default(),
            checker: None,
            open: OpenSockets::default(),
            metrics: None,
            otlp: None,
            drop_closes: std::env::var(FAULT_DROP_CLOSES)
                .ok()
                .and_then(|n| n.parse().ok())
                .filter(|n| *n > 0)
                .map(|n| (n, 0)),
        }
    }

    /// Count every event shown in `metrics`.
    pub fn with_metrics(mut self, metrics: Option<crate::export::metrics::Metrics>) -> Self {
        self.metrics = metrics;
        self
    }

    /// Send every event, drift and loss report shown to `otlp`.
    pub fn with_otlp(mut self, otlp: Option<crate::export::otlp::Otlp>) -> Self {
        self.otlp = otlp;
        self
    }

    /// The metrics events are counted in, if any.
    pub fn metrics(&self) -> Option<&crate::export::metrics::Metrics> {
        self.metrics.as_ref()
    }

    /// Check every event shown against a baseline, and report drift.
    pub fn with_baseline(mut self, checker: Option<Checker>) -> Self {
        self.checker = checker;
        self
    }

    /// One ring-buffer record; one that cannot be decoded is counted and said on
    /// `err`, never fatal.
    pub fn record(&mut self, bytes: &[u8], err: &mut impl Write) -> io::Result<()> {
        self.stats.received += 1;
        let decoded = parse_record(bytes).and_then(|raw| self.decoder.decode(&raw));
        if self.dropped_by_fault(&decoded) {
            return Ok(());
        }
        match decoded {
            Ok(event) => {
                let unowned = event.owner.is_none();
                if self.deliver(event)? {
                    self.stats.events += 1;
                    self.stats.without_process += u64::from(unowned);
                }
                Ok(())
            }
            Err(e) => {
                self.stats.undecodable += 1;
                let _ = writeln!(err, "portwatch: skipping a kernel record: {e}");
                Ok(())
            }
        }
    }

    /// Whether the fault injection hook drops this record.
    fn dropped_by_fault(
        &mut self,
        decoded: &Result<ConnEvent, crate::event::decode::DecodeError>,
    ) -> bool {
        let Some((every, seen)) = self.drop_closes.as_mut() else {
            return false;
        };
        if !matches!(decoded, Ok(e) if e.kind == EventKind::Close) {
            return false;
        }
        *seen += 1;
        *seen % *every == 0
    }

    /// A decoded event: enriched, filtered and printed. Whether it was printed.
    fn deliver(&mut self, mut event: ConnEvent) -> io::Result<bool> {
        if self.open.is_udp_listener(&event) {
            // A UDP server bound before tracing began answers a new peer: the
            // kernel side could not know the socket was a server's.
            crate::event::notes::as_udp_reply(&mut event, self.decoder.range());
        }
        self.enricher.enrich(&mut event);
        if !self.filter.matches(&event) {
            return Ok(false);
        }
        self.printer.event(&event)?;
        self.open.follow(&event);
        if let Some(m) = &self.metrics {
            m.observe(&event);
        }
        if let Some(o) = &self.otlp {
            o.event(&event);
        }
        if let Some(drift) = self.checker.as_mut().and_then(|c| c.check(&event)) {
            self.drift(&drift)?;
        }
        Ok(true)
    }

    /// A departure from the baseline, to every output.
    fn drift(&mut self, drift: &crate::baseline::check::Drift) -> io::Result<()> {
        if let Some(o) = &self.otlp {
            o.drift(drift);
        }
        self.printer.drift(drift)
    }

    /// Events the kernel side lost, to every output.
    pub fn lost(&mut self, report: &crate::output::LossReport) -> io::Result<()> {
        if let Some(o) = &self.otlp {
            o.lost(report);
        }
        self.printer.lost(report)?;
        self.printer.flush()
    }

    /// SIGHUP: read the baseline file again. The new one is checked at once
    /// against the listeners that exist now (listed by `existing`, only once the
    /// file is read); one that cannot be read is said on stderr and the one in
    /// use is kept.
    pub fn reload_baseline(
        &mut self,
        path: Option<&std::path::Path>,
        existing: impl FnOnce() -> Vec<ConnEvent>,
    ) -> io::Result<()> {
        let Some(path) = path else {
            eprintln!("portwatch: SIGHUP: nothing to reload (no --baseline)");
            return Ok(());
        };
        let expected = match crate::baseline::file::load(path) {
            Ok((_, expected)) => expected,
            Err(e) => {
                eprintln!(
                    "portwatch: warning: SIGHUP: baseline not reloaded, the one in use is kept: {e}"
                );
                return Ok(());
            }
        };
        eprintln!("portwatch: SIGHUP: baseline {} reloaded", path.display());
        let mut checker = Checker::new(expected);
        for event in &mut existing() {
            self.enricher.enrich(event);
            if !self.filter.matches(event) {
                continue;
            }
            if let Some(drift) = checker.check(event) {
                self.drift(&drift)?;
            }
        }
        self.checker = Some(checker);
        self.printer.flush()
    }

    /// The listeners the baseline expects that are gone (`existing`: the sockets
    /// that exist now) at this look and the one before, each reported once per run.
    pub fn missing_listeners(&mut self, mut existing: Vec<ConnEvent>) -> io::Result<()> {
        let Some(checker) = self.checker.as_mut() else {
            return Ok(());
        };
        for event in &mut existing {
            self.enricher.enrich(event);
        }
        let missing = learn::missing(checker.expected(), &existing, &self.filter.ports);
        for drift in checker.confirm_missing(missing) {
            self.drift(&drift)?;
        }
        self.printer.flush()
    }

    /// The sockets that existed before tracing (not counted as kernel events),
    /// then a flush.
    pub fn existing(&mut self, events: Vec<ConnEvent>) -> io::Result<()> {
        for event in events {
            self.deliver(event)?;
        }
        self.printer.flush()
    }

    /// Compare the sockets shown open with those the kernel has (`listing`, taken
    /// after the ring buffer was drained): a close the kernel never reported is
    /// shown, inferred, once the socket is missing from two listings in a row.
    pub fn reconcile(&mut self, listing: &reconcile::Listing) -> io::Result<()> {
        let range = self.decoder.range();
        for close in self.open.reconcile(listing, chrono::Utc::now(), range) {
            let unowned = close.owner.is_none();
            if self.deliver(close)? {
                self.stats.events += 1;
                self.stats.inferred += 1;
                self.stats.without_process += u64::from(unowned);
            }
        }
        self.printer.flush()
    }

    /// Whether a socket of `proto` is followed (open, or set aside until its
    /// close is inferred): the next look needs the kernel's `proto` sockets.
    pub fn follows(&self, proto: crate::event::model::Transport) -> bool {
        self.open.follows(proto)
    }

    /// Sockets shown open and not closed yet.
    pub fn open_sockets(&self) -> usize {
        self.open.len()
    }

    /// Processes described in the enrichment cache now.
    pub fn cached_processes(&self) -> u64 {
        self.enricher.cached_processes()
    }
}
