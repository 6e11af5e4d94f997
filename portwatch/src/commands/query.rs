//! `portwatch query`: questions to a recorded database, answered in the live
//! output's formats (JSON adds each socket's `opened` and `closed`).
use std::io::{self, Write};

use crate::{
    cli::{Cli, QueryArgs},
    error::Error,
    event::filter::Filter,
    history::{
        query::{self, Query},
        schema::{self, HistoryError},
        summary,
        time::to_ns,
    },
    output::{self, Format, RunInfo},
};

/// The query the arguments and the shared filters ask.
fn query_of(args: &QueryArgs, filter: &Filter) -> Query {
    Query {
        at: args.at.map(to_ns),
        since: args.since.map(to_ns),
        until: args.until.map(to_ns),
        ports: filter.ports.clone(),
        local_ports: args.local_ports.clone(),
        remote: args.remote,
        pids: filter.pids.clone(),
        comms: filter.comms.clone(),
        exes: args.exes.clone(),
        users: args
            .users
            .iter()
            .cloned()
            .chain(filter.uids.iter().map(u32::to_string))
            .collect(),
        roles: filter.roles.clone(),
        events: args.events.clone(),
        containers: filter.containers.clone(),
        protos: filter.protos.clone(),
    }
}

pub fn run(cli: &Cli, filter: &Filter, args: &QueryArgs, info: RunInfo) -> Result<(), Error> {
    let conn = schema::open_for_query(&args.db)?;
    let q = query_of(args, filter);
    let failed = |e| HistoryError::Sqlite(args.db.clone(), e);
    let mut out = io::stdout().lock();
    if args.summary {
        let rows = summary::summarize(&conn, &q).map_err(failed)?;
        match cli.format {
            Format::Json => summary::write_json(&rows, &mut out)?,
            Format::Table => summary::write_table(&rows, &mut out)?,
        }
        return Ok(out.flush()?);
    }
    let events = query::sockets(&conn, &q).map_err(failed)?;
    let mut printer = output::printer(cli.format, out, info)?;
    for event in events.iter().filter(|e| filter.matches(e)) {
        printer.event(event)?;
    }
    Ok(printer.flush()?)
}
