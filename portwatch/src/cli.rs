//! Command-line arguments.
use clap::{Parser, Subcommand};
use portwatch_common::RINGBUF_DEFAULT_BYTES;

use crate::{loader::AttachChoice, output::Format};

/// Live TCP connection tracing from the kernel: which process opened which port,
/// in which role, and what kind of port it is.
#[derive(Debug, Parser)]
#[command(name = "portwatch", version)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,

    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Table, global = true)]
    pub format: Format,

    /// How to attach: fentry/fexit, kprobes, tracepoints only, or the first of
    /// those that this kernel allows.
    #[arg(long, value_enum, default_value_t = AttachChoice::Auto)]
    pub attach: AttachChoice,

    /// Ring buffer size in bytes: a power of two, at least 4096.
    #[arg(long, default_value_t = RINGBUF_DEFAULT_BYTES, value_parser = parse_ringbuf_size)]
    pub ringbuf_size: u32,
}

#[derive(Debug, PartialEq, Eq, Subcommand)]
pub enum Command {
    /// Check what this host allows: kernel, BTF, tracefs, privileges, ring buffer,
    /// and whether each attach mode loads here (and why not).
    Doctor,
}

fn parse_ringbuf_size(text: &str) -> Result<u32, String> {
    let n: u32 = text
        .parse()
        .map_err(|_| format!("`{text}` is not a whole number of bytes"))?;
    if n < 4096 || !n.is_power_of_two() {
        return Err(format!("{n} is not a power of two of at least 4096"));
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults() {
        let cli = Cli::try_parse_from(["portwatch"]).unwrap();
        assert_eq!(cli.format, Format::Table);
        assert_eq!(cli.ringbuf_size, RINGBUF_DEFAULT_BYTES);
        assert_eq!(cli.attach, AttachChoice::Auto);
    }

    #[test]
    fn attach_modes() {
        for (arg, want) in [
            ("auto", AttachChoice::Auto),
            ("fentry", AttachChoice::Fentry),
            ("kprobe", AttachChoice::Kprobe),
            ("tracepoint", AttachChoice::Tracepoint),
        ] {
            let cli = Cli::try_parse_from(["portwatch", "--attach", arg]).unwrap();
            assert_eq!(cli.attach, want);
        }
        let err = Cli::try_parse_from(["portwatch", "--attach", "uprobe"]).unwrap_err();
        assert_eq!(err.exit_code(), 2);
    }

    #[test]
    fn json_and_ringbuf_size() {
        let cli = Cli::try_parse_from(["portwatch", "--format", "json", "--ringbuf-size", "65536"])
            .unwrap();
        assert_eq!(cli.format, Format::Json);
        assert_eq!(cli.ringbuf_size, 65536);
    }

    #[test]
    fn doctor_subcommand_takes_the_format() {
        let cli = Cli::try_parse_from(["portwatch", "doctor", "--format", "json"]).unwrap();
        assert_eq!(cli.command, Some(Command::Doctor));
        assert_eq!(cli.format, Format::Json);
        assert_eq!(Cli::try_parse_from(["portwatch"]).unwrap().command, None);
    }

    #[test]
    fn bad_values_are_usage_errors() {
        for args in [
            &["portwatch", "--format", "xml"][..],
            &["portwatch", "--ringbuf-size", "1000"],
            &["portwatch", "--ringbuf-size", "lots"],
            &["portwatch", "--bogus"],
        ] {
            let err = Cli::try_parse_from(args).unwrap_err();
            assert_eq!(err.exit_code(), 2, "{args:?}");
        }
    }
}
