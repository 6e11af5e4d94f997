//! `portwatch baseline learn` and `portwatch baseline check`.
use std::{
    io::{self, Write},
    path::Path,
};

use super::trace::{session, SessionOptions};
use crate::{
    baseline::{
        check::{drift_of, Checker},
        file::{self, Written},
        learn::{self, Learnt},
    },
    cli::{BaselineAction, BaselineArgs, Cli},
    enrich::procinfo::Enricher,
    error::Error,
    event::{classify::EphemeralRange, filter::Filter, model::ConnEvent},
    kernel::sockdiag,
    output::{self, LossReport, Printer, RunInfo},
    pipeline::snapshot,
};

/// Ok(true): done, no drift; Ok(false): `check` found drift.
pub fn run(cli: &Cli, filter: &Filter, args: &BaselineArgs, info: RunInfo) -> Result<bool, Error> {
    match &args.action {
        BaselineAction::Learn {
            out,
            update,
            duration,
            outbound,
        } => {
            let learnt = learn_from_host(cli, filter, *duration)?;
            match (out, update) {
                (_, Some(existing)) => write_update(existing, &learnt, *outbound)?,
                (Some(new), None) => write_new(new, &learnt, *duration, *outbound)?,
                (None, None) => unreachable!("clap requires --out or --update"),
            }
            Ok(true)
        }
        BaselineAction::Check { file } => check(cli, filter, file, info),
    }
}

/// The sockets that exist now, as snapshot events with their processes.
fn sockets_now() -> Result<Vec<ConnEvent>, Error> {
    let sockets = sockdiag::tcp_and_udp_sockets().map_err(Error::Snapshot)?;
    let mut events = snapshot::events(&sockets, EphemeralRange::of_host());
    let mut enricher = Enricher::new();
    for e in &mut events {
        enricher.enrich(e);
    }
    Ok(events)
}

/// A printer that learns from what it is given.
struct Learner<'l>(&'l mut Learnt);

impl Printer for Learner<'_> {
    fn event(&mut self, event: &ConnEvent) -> io::Result<()> {
        self.0.see(event);
        Ok(())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
    fn lost(&mut self, _report: &LossReport) -> io::Result<()> {
        Ok(())
    }
}

fn learn_from_host(
    cli: &Cli,
    filter: &Filter,
    duration: Option<std::time::Duration>,
) -> Result<Learnt, Error> {
    let mut learnt = Learnt::default();
    match duration {
        None => {
            for e in sockets_now()?.iter().filter(|e| filter.matches(e)) {
                learnt.see(e);
            }
        }
        Some(d) => {
            let options = SessionOptions {
                checker: None,
                stop_after: Some(d),
            };
            let (_, stats) = session(cli, filter, options, |_| Ok(Box::new(Learner(&mut learnt))))?;
            let now: Vec<ConnEvent> = sockets_now()?
                .into_iter()
                .filter(|e| filter.matches(e))
                .collect();
            learnt.finish(&now);
            if stats.lost + stats.skipped > 0 {
                eprintln!(
                    "portwatch: warning: {} events lost and {} program runs skipped while learning: the baseline may miss what they were",
                    stats.lost, stats.skipped
                );
            }
        }
    }
    Ok(learnt)
}

fn host() -> String {
    nix::sys::utsname::uname()
        .map(|u| u.nodename().to_string_lossy().into_owned())
        .unwrap_or_else(|_| "this host".into())
}

/// Write `text` to `path` whole or not at all (a temporary file, then a rename).
fn write_file(path: &Path, text: &str) -> Result<(), Error> {
    let tmp = path.with_extension("tmp-portwatch");
    std::fs::write(&tmp, text)?;
    std::fs::rename(&tmp, path)?;
    Ok(())
}

fn entries(learnt: &Learnt) -> Vec<(file::Listener, Option<String>, bool)> {
    learnt.listeners(EphemeralRange::of_host())
}

fn written(entries: &[(file::Listener, Option<String>, bool)]) -> Vec<Written<'_>> {
    entries
        .iter()
        .map(|(listener, note, commented)| Written {
            listener,
            note: note.clone(),
            commented: *commented,
        })
        .collect()
}

fn write_new(
    path: &Path,
    learnt: &Learnt,
    duration: Option<std::time::Duration>,
    outbound: bool,
) -> Result<(), Error> {
    let listeners = entries(learnt);
    let outbound = if outbound {
        learnt.outbound()
    } else {
        Vec::new()
    };
    let source = match duration {
        Some(d) => format!(
            "the sockets that existed and {} of live events",
            humantime::format_duration(d)
        ),
        None => "the sockets that existed".to_string(),
    };
    let header = format!(
        "portwatch baseline of {}, learnt at {} from {source}.\n\
         Each [[listener]] is a program expected to listen on a port; each [[outbound]]\n\
         (if any) a destination port a program is expected to connect to. Review it,\n\
         then use it with `portwatch --baseline FILE` or `portwatch baseline check FILE`.",
        host(),
        chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
    );
    write_file(path, &file::write(&header, &written(&listeners), &outbound))?;
    report(path, &listeners, outbound.len());
    Ok(())
}

/// What was learnt and is not in `existing` yet, added at its end.
fn write_update(existing: &Path, learnt: &Learnt, outbound: bool) -> Result<(), Error> {
    let text = std::fs::read_to_string(existing)?;
    let (_, expected) = file::load(existing)?;
    let listeners: Vec<_> = entries(learnt)
        .into_iter()
        .filter(|(l, _, commented)| *commented || !learn::covered_listener(&expected, l))
        .collect();
    let outbound: Vec<_> = if outbound {
        learnt
            .outbound()
            .into_iter()
            .filter(|o| !learn::covered_outbound(&expected, o))
            .collect()
    } else {
        Vec::new()
    };
    let mut new = text.clone();
    if !listeners.is_empty() || !outbound.is_empty() {
        if !new.ends_with('\n') {
            new.push('\n');
        }
        new.push_str(&format!(
            "\n# Added by `portwatch baseline learn --update` on {} at {}.\n",
            host(),
            chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
        ));
        new.push_str(&file::write_entries(&written(&listeners), &outbound));
    }
    // What is written must still read (it cannot fail, unless the file was
    // edited meanwhile).
    file::parse(&new).map_err(|(line, what)| file::BaselineError {
        path: existing.into(),
        line,
        what,
    })?;
    write_file(existing, &new)?;
    report(existing, &listeners, outbound.len());
    Ok(())
}

fn report(path: &Path, listeners: &[(file::Listener, Option<String>, bool)], outbound: usize) {
    let commented = listeners.iter().filter(|(_, _, c)| *c).count();
    eprintln!(
        "portwatch: baseline: {} listeners ({commented} commented out: owner unknown) and {outbound} outbound destinations written to {}",
        listeners.len(),
        path.display()
    );
}

/// The sockets now against the baseline: each drift printed. Ok(false) when any.
fn check(cli: &Cli, filter: &Filter, path: &Path, info: RunInfo) -> Result<bool, Error> {
    let (_, expected) = file::load(path)?;
    let now = sockets_now()?;
    let mut checker = Checker::new(expected);
    let mut printer = output::printer(cli.format, io::stdout().lock(), info)?;
    let mut drifted = false;
    for e in now.iter().filter(|e| filter.matches(e)) {
        if let Some(d) = drift_of(checker.expected(), e).and_then(|d| checker.first(d)) {
            printer.event(e)?;
            printer.drift(&d)?;
            drifted = true;
        }
    }
    for d in learn::missing(checker.expected(), &now, &filter.ports) {
        printer.drift(&d)?;
        drifted = true;
    }
    printer.flush()?;
    io::stdout().flush()?;
    Ok(!drifted)
}
