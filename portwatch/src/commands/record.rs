//! `portwatch record`: trace as live mode does, and keep every socket's lifetime
//! in the history database. The writer runs on its own thread; the run's counts
//! (lost, skipped, not stored) go into its `runs` row and the closing line.
use std::{io, sync::mpsc, thread};

use super::trace::{report_end, session, SessionOptions};
use crate::{
    cli::{Cli, RecordArgs},
    error::Error,
    event::filter::Filter,
    history::{
        recorder::{Dropped, Message, Recorder},
        retention::Retention,
        schema,
        writer::{RunRow, Totals, Writer},
    },
    output::{self, Printer, RunInfo},
};

/// Events waiting for the writer at most (about 30 MB at worst): a second and more
/// of this machine's highest connection rate.
const QUEUE: usize = 131_072;

pub fn run(cli: &Cli, filter: &Filter, args: &RecordArgs, mut info: RunInfo) -> Result<(), Error> {
    // Read (or refused) before anything is attached.
    let options = SessionOptions::from_cli(cli)?;
    // Refused before the database is made: a run that cannot trace leaves no
    // empty history behind.
    if !crate::kernel::inspect::has_privileges() {
        return Err(crate::kernel::error::LoadError::Privileges.into());
    }
    let conn = schema::open_for_recording(&args.db)?;
    let uname = nix::sys::utsname::uname().map_err(io::Error::from)?;
    let (host, kernel) = (
        uname.nodename().to_string_lossy().into_owned(),
        uname.release().to_string_lossy().into_owned(),
    );
    let (queue, events) = mpsc::sync_channel::<Message>(QUEUE);
    let dropped = Dropped::default();
    let retention = Retention {
        retain: args.retain,
        max_size: args.max_size,
    };
    let mut writer_thread = None;
    let traced =
        session(cli, filter, options, |tracer| {
            let mode = tracer.mode.name();
            let run = RunRow {
                host: &host,
                kernel: &kernel,
                mode,
            };
            let writer = Writer::start(conn, &args.db, &run, dropped.clone(), retention)?;
            eprintln!(
                "portwatch: recording to {} (run {})",
                args.db.display(),
                writer.run_id()
            );
            writer_thread = Some(thread::Builder::new().name("history".into()).spawn(
                move || {
                    let written = writer.run(events);
                    if written.is_err() {
                        // End the run now rather than at the next event: the reader
                        // stops on SIGTERM as on any, and the writer's error is what
                        // the run then reports.
                        let _ = nix::sys::signal::kill(
                            nix::unistd::getpid(),
                            nix::sys::signal::Signal::SIGTERM,
                        );
                    }
                    written
                },
            )?);
            info.attach_mode = mode.to_string();
            let print: Option<Box<dyn Printer>> = match args.print {
                Some(format) => Some(output::printer(format, io::stdout().lock(), info)?),
                None => None,
            };
            Ok(Box::new(Recorder::new(
                queue.clone(),
                dropped.clone(),
                print,
            )))
        });
    let Some(writer_thread) = writer_thread else {
        // Never attached: nothing was recorded.
        return traced.map(|_| ());
    };
    let (lost, skipped) = match &traced {
        Ok((_, stats)) => (stats.lost, stats.skipped),
        Err(_) => (0, 0),
    };
    // The writer may be gone already (its error comes with the join).
    let _ = queue.send(Message::Stop { lost, skipped });
    drop(queue);
    let written = writer_thread
        .join()
        .unwrap_or_else(|_| Err(schema::HistoryError::WriterPanicked));
    // A writer's failure is the reason the run stopped: say that one.
    let totals = written?;
    let (ended, stats) = traced?;
    report_end(ended, &stats);
    report_stored(&args.db, &totals);
    Ok(())
}

fn report_stored(db: &std::path::Path, totals: &Totals) {
    eprintln!(
        "portwatch: recorded {} sockets in run {} to {}{}",
        totals.sockets,
        totals.run_id,
        db.display(),
        if totals.dropped > 0 {
            format!(
                "; {} events not stored (the history writer fell behind)",
                totals.dropped
            )
        } else {
            String::new()
        }
    );
}
