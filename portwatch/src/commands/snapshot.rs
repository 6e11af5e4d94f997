//! `portwatch snapshot`: the sockets that exist now, with their processes, then
//! exit.
use std::io;

use crate::{
    cli::Cli,
    error::Error,
    event::{classify::EphemeralRange, filter::Filter},
    kernel::sockdiag,
    output::{self, RunInfo},
    pipeline::{snapshot, Pipeline},
};

pub fn run(cli: &Cli, filter: &Filter, info: RunInfo) -> Result<(), Error> {
    let mut printer = output::printer(cli.format, io::stdout().lock(), info)?;
    print_existing(&mut Pipeline::new(printer.as_mut(), filter))
}

/// The TCP and UDP sockets that exist now, through `pipeline` (whose filter
/// keeps the protocols asked for).
pub fn print_existing(pipeline: &mut Pipeline<'_>) -> Result<(), Error> {
    let sockets = sockdiag::tcp_and_udp_sockets().map_err(Error::Snapshot)?;
    pipeline.existing(snapshot::events(&sockets, EphemeralRange::of_host()))?;
    Ok(())
}
