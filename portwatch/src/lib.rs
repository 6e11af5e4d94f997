//! portwatch: live TCP connection tracing from the kernel.
//!
//! The binary only wires these modules together. Classification, decoding, notes,
//! filtering and printing are pure and test without root; `loader`, `trace`,
//! `snapshot` and `procinfo` hold everything that touches the kernel or /proc.
pub mod bpf_sys;
pub mod cgroups;
pub mod classify;
pub mod cli;
pub mod decode;
pub mod doctor;
pub mod explain;
pub mod filter;
pub mod kernel_btf;
pub mod loader;
pub mod model;
pub mod notes;
pub mod output;
pub mod procinfo;
pub mod services;
pub mod snapshot;
pub mod trace;
pub mod tracefs;

use std::{
    ffi::OsString,
    io::{self, IsTerminal, Write},
    process::ExitCode,
};

use clap::Parser;

use crate::{classify::EphemeralRange, cli::Command, output::Printer};

/// Anything that ends a run with an error; printed as one line.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Load(#[from] loader::LoadError),
    #[error("reading the existing sockets: {0}")]
    Snapshot(io::Error),
    #[error("{0}")]
    Io(#[from] io::Error),
}

/// Parse arguments and run. Usage errors exit 2 (clap prints them), runtime errors
/// 1, a closed stdout 0.
pub fn main_with_args(args: impl IntoIterator<Item = OsString>) -> ExitCode {
    let parsed = cli::Cli::try_parse_from(args).and_then(|cli| cli.filter().map(|f| (cli, f)));
    let (cli, filter) = match parsed {
        Ok(p) => p,
        Err(e) => {
            let code = e.exit_code();
            let _ = e.print();
            return ExitCode::from(code as u8);
        }
    };
    let info = output::RunInfo {
        attach_mode: String::new(),
        explain: cli.explain,
        color: cli.color.enabled(
            io::stdout().is_terminal(),
            std::env::var_os("NO_COLOR").is_some(),
        ),
    };
    let result = match &cli.command {
        Some(Command::Doctor) => {
            doctor::run(cli.format, &mut io::stdout().lock()).map_err(Error::from)
        }
        Some(Command::Explain { ports }) => explain_ports(ports, cli.format),
        Some(Command::Snapshot) => snapshot_once(&cli, &filter, info),
        None => trace_live(&cli, filter, info),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(Error::Io(e)) if e.kind() == io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("portwatch: error: {}", loader::error_chain(&e));
            ExitCode::from(1)
        }
    }
}

fn explain_ports(ports: &[u16], format: output::Format) -> Result<(), Error> {
    let range = EphemeralRange::of_host();
    let list: Vec<_> = ports.iter().map(|p| explain::explain(*p, range)).collect();
    let mut out = io::stdout().lock();
    match format {
        output::Format::Table => explain::render_text(&list, &mut out)?,
        output::Format::Json => {
            for e in &list {
                serde_json::to_writer(&mut out, e).map_err(io::Error::from)?;
                writeln!(out)?;
            }
        }
    }
    out.flush()?;
    Ok(())
}

/// The existing sockets, enriched and filtered, through `printer`.
fn print_snapshot(
    printer: &mut dyn Printer,
    filter: &filter::Filter,
    enricher: &mut procinfo::Enricher,
) -> Result<(), Error> {
    let range = EphemeralRange::of_host();
    let sockets = snapshot::tcp_sockets().map_err(Error::Snapshot)?;
    for mut event in snapshot::events(&sockets, range) {
        enricher.enrich(&mut event);
        if filter.matches(&event) {
            printer.event(&event)?;
        }
    }
    printer.flush()?;
    Ok(())
}

fn snapshot_once(
    cli: &cli::Cli,
    filter: &filter::Filter,
    info: output::RunInfo,
) -> Result<(), Error> {
    let mut printer = output::printer(cli.format, io::stdout().lock(), info)?;
    print_snapshot(printer.as_mut(), filter, &mut procinfo::Enricher::new())
}

fn trace_live(
    cli: &cli::Cli,
    filter: filter::Filter,
    mut info: output::RunInfo,
) -> Result<(), Error> {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn"))
        .format_timestamp(None)
        .init();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        // Signals are caught from the start: one that comes while loading still
        // ends the run cleanly (exit 0, everything detached).
        let signals = trace::Signals::new()?;
        let mut tracer = loader::load(&loader::LoadOptions {
            ringbuf_bytes: cli.ringbuf_size,
            wakeup_events: cli.wakeup_events,
            attach: cli.attach,
            accept_syscalls: !cli.inexact_accept,
            filter: filter.clone(),
        })?;
        for w in &tracer.warnings {
            eprintln!("portwatch: warning: {w}");
        }
        // Loading parsed kernel BTF and ELF: hand that memory back before tracing.
        // SAFETY: malloc_trim only releases free heap memory.
        unsafe { libc::malloc_trim(0) };
        info.attach_mode = tracer.mode.name().to_string();
        let mut printer = output::printer(cli.format, io::stdout().lock(), info)?;
        eprintln!(
            "portwatch: attached (mode {}): {}",
            tracer.mode.name(),
            tracer.attached.join(", ")
        );
        let mut enricher = procinfo::Enricher::new();
        // Attached first, then the sockets that already exist: nothing falls between.
        // Tracing goes on without them if they cannot be read.
        if !cli.no_snapshot {
            match print_snapshot(printer.as_mut(), &filter, &mut enricher) {
                Err(Error::Snapshot(e)) => {
                    eprintln!("portwatch: warning: existing sockets not listed: {e}")
                }
                other => other?,
            }
        }
        let stats_every = cli.stats.map(std::time::Duration::from_secs);
        let (ended, stats) = trace::run(
            &mut tracer,
            printer.as_mut(),
            &filter,
            enricher,
            stats_every,
            signals,
        )
        .await?;
        drop(printer);
        // Dropping the tracer detaches every program.
        drop(tracer);
        if ended == trace::Ended::StdoutClosed && stats.lost + stats.skipped > 0 {
            eprintln!(
                "portwatch: {} events lost and {} program runs skipped in total",
                stats.lost, stats.skipped
            );
        }
        if ended == trace::Ended::Signal {
            eprintln!(
                "portwatch: detached; {} events, {} lost, {} skipped, {} received from the kernel{}",
                stats.events,
                stats.lost,
                stats.skipped,
                stats.received,
                if stats.undecodable > 0 {
                    format!(", {} undecodable", stats.undecodable)
                } else {
                    String::new()
                }
            );
        }
        Ok(())
    })
}
