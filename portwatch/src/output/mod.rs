//! Printers. Each writes to any `impl Write`, so it tests without a terminal. They
//! do not flush per event: the caller hands them a buffered writer and calls
//! `flush` when a batch is done (the ring buffer drained), so output stays live
//! when piped while a storm costs one write per batch, not one per line.
use std::io::{self, Write};

use crate::event::model::ConnEvent;

mod append;
mod escape;
mod json;
mod sentence;
mod table;
mod time_text;

pub use escape::escape_control;
pub use json::JsonPrinter;
pub use sentence::sentence;

pub use table::TablePrinter;

/// Output formats (`--format`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// netstat-like columns, one line per event.
    Table,
    /// JSON Lines: one object per event.
    Json,
}

/// `--color`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum ColorChoice {
    Auto,
    Always,
    Never,
}

impl ColorChoice {
    /// Auto: only on a terminal, and never with NO_COLOR set (to anything).
    pub fn enabled(self, is_terminal: bool, no_color: bool) -> bool {
        match self {
            ColorChoice::Always => true,
            ColorChoice::Never => false,
            ColorChoice::Auto => is_terminal && !no_color,
        }
    }
}

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
    pub socket_map_entries: u64,
    pub listener_map_entries: u64,
    pub process_cache_entries: u64,
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
        eprintln!(
            "portwatch: stats: {} received, {} printed, {} lost, {} sockets and {} listeners tracked in the kernel, {} processes cached, RSS {} kB",
            report.received,
            report.printed,
            report.lost_total,
            report.socket_map_entries,
            report.listener_map_entries,
            report.process_cache_entries,
            report.rss_kb
        );
        Ok(())
    }
}

/// How much output is gathered before it is written, at most, between flushes.
pub const OUTPUT_BUFFER_BYTES: usize = 64 * 1024;

/// A printer for `format` writing to `out` through a buffer of
/// [`OUTPUT_BUFFER_BYTES`].
pub fn printer<'w, W: Write + 'w>(
    format: Format,
    out: W,
    info: RunInfo,
) -> io::Result<Box<dyn Printer + 'w>> {
    let out = io::BufWriter::with_capacity(OUTPUT_BUFFER_BYTES, out);
    Ok(match format {
        Format::Table => Box::new(TablePrinter::new(out, info)?),
        Format::Json => Box::new(JsonPrinter::new(out, info)),
    })
}

#[cfg(test)]
mod tests {
    use super::ColorChoice;

    #[test]
    fn colors_only_on_a_terminal_and_never_with_no_color() {
        assert!(ColorChoice::Auto.enabled(true, false));
        assert!(!ColorChoice::Auto.enabled(false, false));
        assert!(!ColorChoice::Auto.enabled(true, true));
        assert!(ColorChoice::Always.enabled(false, true));
        assert!(!ColorChoice::Never.enabled(true, false));
    }
}
