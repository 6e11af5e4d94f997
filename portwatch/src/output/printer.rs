//! What every printer is: the trait, and the run facts and reports it is given.
use std::io;

use crate::{baseline::check::Drift, event::model::ConnEvent};

/// Facts about the run, and how to print it.
#[derive(Clone, Debug, Default)]
pub struct RunInfo {
    /// How the programs are attached (for example `tracepoint`); empty for a
    /// snapshot, which attaches nothing.
    pub attach_mode: String,
    /// Table: add the seed document's sentence under each row.
    pub explain: bool,
    /// Table: ANSI colors.
    pub color: bool,
}

/// Events the kernel side could not deliver since the last report.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LossReport {
    pub time: chrono::DateTime<chrono::Utc>,
    pub lost: u64,
    pub lost_total: u64,
    /// Total lost per CPU.
    pub per_cpu: Vec<u64>,
    /// Program runs the kernel skipped so far (recursion guard); each may have
    /// been an event.
    pub skipped_total: u64,
}

/// Counters for `--stats`.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct StatsReport {
    #[serde(serialize_with = "rfc3339")]
    pub time: chrono::DateTime<chrono::Utc>,
    pub received: u64,
    pub printed: u64,
    pub lost_total: u64,
    /// Program runs the kernel skipped (recursion guard), an upper bound of the
    /// events that may be missing.
    pub skipped_total: u64,
    /// Of those, the state changes the BTF state program's twin handled after
    /// the kernel skipped the first program: not lost.
    pub nested_caught: u64,
    /// Where socket owners are kept: `socket storage` or `LRU map`.
    pub socket_store: &'static str,
    /// Entries of the owner map in use (the LRU map, or accepted connections
    /// waiting for their socket storage), and its cap (null: no map).
    pub socket_map_entries: u64,
    pub socket_map_cap: Option<u32>,
    pub listener_map_entries: u64,
    pub process_cache_entries: u64,
    /// Sockets shown open and followed until their close.
    pub open_sockets: u64,
    /// Closes shown that the kernel never reported (inferred).
    pub inferred_closes: u64,
    pub rss_kb: u64,
}

fn rfc3339<S: serde::Serializer>(
    t: &chrono::DateTime<chrono::Utc>,
    s: S,
) -> Result<S::Ok, S::Error> {
    s.serialize_str(&t.to_rfc3339_opts(chrono::SecondsFormat::Nanos, true))
}

pub trait Printer {
    fn event(&mut self, event: &ConnEvent) -> io::Result<()>;
    /// Push what was printed so far to the reader.
    fn flush(&mut self) -> io::Result<()>;
    /// Losses: JSON puts a record in the stream; a table leaves it to the stderr
    /// warning.
    fn lost(&mut self, _report: &LossReport) -> io::Result<()> {
        Ok(())
    }
    /// `--stats`: JSON puts a record in the stream; a table writes it to stderr.
    fn stats(&mut self, report: &StatsReport) -> io::Result<()> {
        stderr_stats(report)
    }
    /// A departure from the baseline (`--baseline`): a line of its own.
    fn drift(&mut self, d: &Drift) -> io::Result<()> {
        stderr_drift(d)
    }
}

/// A drift as a stderr line (where no printer prints: a recording without
/// `--print`).
pub fn stderr_drift(d: &Drift) -> io::Result<()> {
    let who = d
        .trigger
        .as_ref()
        .and_then(|e| e.owner.as_ref())
        .map(|o| {
            format!(
                " (pid {} {})",
                o.pid,
                super::escape::escape_control(&o.comm)
            )
        })
        .unwrap_or_default();
    eprintln!(
        "portwatch: drift: {}: {}{who}",
        d.kind.name(),
        super::escape::escape_control(&d.reason)
    );
    Ok(())
}

/// `--stats` as a stderr line (the table's way, and a recording's).
pub fn stderr_stats(report: &StatsReport) -> io::Result<()> {
    eprintln!(
        "portwatch: stats: {} received, {} printed, {} lost, {} skipped ({} of them caught by the twin program), owners in {} ({} map entries of {}), {} listeners tracked in the kernel, {} processes cached, {} sockets open, {} closes inferred, RSS {} kB",
        report.received,
        report.printed,
        report.lost_total,
        report.skipped_total,
        report.nested_caught,
        report.socket_store,
        report.socket_map_entries,
        report
            .socket_map_cap
            .map_or_else(|| "no cap".to_string(), |c| c.to_string()),
        report.listener_map_entries,
        report.process_cache_entries,
        report.open_sockets,
        report.inferred_closes,
        report.rss_kb
    );
    Ok(())
}
