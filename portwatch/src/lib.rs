//! portwatch: live TCP connection tracing from the kernel.
//!
//! The binary only wires these modules together. Classification, decoding and
//! printing are pure and test without root; `loader` and `trace` hold everything
//! that touches the kernel.
pub mod classify;
pub mod cli;
pub mod decode;
pub mod doctor;
pub mod kernel_btf;
pub mod loader;
pub mod model;
pub mod output;
pub mod trace;
pub mod tracefs;

use std::{ffi::OsString, io, process::ExitCode};

use clap::Parser;

/// Anything that ends a run with an error; printed as one line.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Load(#[from] loader::LoadError),
    #[error("{0}")]
    Io(#[from] io::Error),
}

/// Parse arguments and run. Usage errors exit 2 (clap prints them), runtime errors 1.
pub fn main_with_args(args: impl IntoIterator<Item = OsString>) -> ExitCode {
    let cli = match cli::Cli::try_parse_from(args) {
        Ok(cli) => cli,
        Err(e) => {
            let code = e.exit_code();
            let _ = e.print();
            return ExitCode::from(code as u8);
        }
    };
    let result = match cli.command {
        Some(cli::Command::Doctor) => {
            doctor::run(cli.format, &mut io::stdout().lock()).map_err(Error::from)
        }
        None => run(cli),
    };
    match result {
        Err(Error::Io(e)) if e.kind() == io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("portwatch: error: {}", loader::error_chain(&e));
            ExitCode::from(1)
        }
    }
}

fn run(cli: cli::Cli) -> Result<(), Error> {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn"))
        .format_timestamp(None)
        .init();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let mut tracer = loader::load(&loader::LoadOptions {
            ringbuf_bytes: cli.ringbuf_size,
            attach: cli.attach,
        })?;
        for w in &tracer.warnings {
            eprintln!("portwatch: warning: {w}");
        }
        let stdout = io::stdout().lock();
        let info = output::RunInfo {
            attach_mode: tracer.mode.name().to_string(),
        };
        let mut printer = match output::printer(cli.format, stdout, info) {
            Ok(p) => p,
            Err(e) if e.kind() == io::ErrorKind::BrokenPipe => return Ok(()),
            Err(e) => return Err(e.into()),
        };
        eprintln!(
            "portwatch: attached (mode {}): {}",
            tracer.mode.name(),
            tracer.attached.join(", ")
        );
        let (ended, stats) = trace::run(&mut tracer, printer.as_mut()).await?;
        drop(printer);
        // Dropping the tracer detaches every program.
        drop(tracer);
        if ended == trace::Ended::Signal {
            eprintln!(
                "portwatch: detached; {} events, {} lost{}",
                stats.events,
                stats.lost,
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
