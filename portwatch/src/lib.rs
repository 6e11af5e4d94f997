//! portwatch: live TCP connection tracing from the kernel.
//!
//! The folders are the architecture: `commands` (one per command) drive `kernel`
//! (loading, attaching, reading what the kernel knows), `pipeline` (kernel records
//! -> `event` (decode, classify, notes, filter) -> `enrich` (/proc, cgroups) ->
//! `output` (printers)). Imports run that way only.
pub mod baseline;
pub mod cli;
pub mod commands;
pub mod enrich;
pub mod error;
pub mod event;
pub mod export;
pub mod history;
pub mod kernel;
pub mod output;
pub mod pipeline;

use std::{
    ffi::OsString,
    io::{self, IsTerminal},
    process::ExitCode,
};

use clap::Parser;

use crate::{cli::Command, error::Error, kernel::error::one_line};

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
            commands::doctor::run(cli.format, &mut io::stdout().lock()).map_err(Error::from)
        }
        Some(Command::Explain { ports, udp }) => {
            let bare = if *udp {
                event::services::Transport::Udp
            } else {
                event::services::Transport::Tcp
            };
            let ports: Vec<_> = ports
                .iter()
                .map(|p| (p.port, p.transport.unwrap_or(bare)))
                .collect();
            commands::explain::run(&ports, cli.format, &mut io::stdout().lock())
                .map_err(Error::from)
        }
        Some(Command::Snapshot) => commands::snapshot::run(&cli, &filter, info),
        Some(Command::Record(args)) => commands::record::run(&cli, &filter, args, info),
        Some(Command::Query(args)) => commands::query::run(&cli, &filter, args, info),
        Some(Command::Baseline(args)) => match commands::baseline::run(&cli, &filter, args, info) {
            // Drift found by `baseline check`: exit 1, like diff.
            Ok(false) => return ExitCode::from(1),
            other => other.map(drop),
        },
        None => commands::trace::run(&cli, &filter, info),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if e.is_closed_output() => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("portwatch: error: {}", one_line(&e));
            ExitCode::from(e.exit_code())
        }
    }
}
