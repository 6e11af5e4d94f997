//! Printers. Each writes to any `impl Write`, so it tests without a terminal. They
//! do not flush per event: the caller hands them a buffered writer and calls
//! `flush` when a batch is done (the ring buffer drained), so output stays live
//! when piped while a storm costs one write per batch, not one per line.
use std::io::{self, Write};

mod append;
mod drift;
mod escape;
mod json;
mod json_object;
mod printer;
mod sentence;
mod table;
mod table_row;
mod time_text;

pub use escape::escape_control;
pub use json::JsonPrinter;
pub use printer::{stderr_drift, stderr_stats, LossReport, Printer, RunInfo, StatsReport};
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
