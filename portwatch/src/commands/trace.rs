//! Live tracing (portwatch without a command): attach, list the sockets that
//! already exist, then print events until SIGINT/SIGTERM or a closed stdout.
use std::{io, os::fd::AsRawFd, time::Duration};

use super::snapshot::print_existing;
use crate::{
    baseline::{self, check::Checker},
    cli::Cli,
    error::Error,
    event::{filter::Filter, model::Family},
    export::{
        metrics::Metrics,
        otlp::{Otlp, OtlpConfig},
    },
    kernel::{
        filter::{KernelFamily, KernelFilter},
        load::{self, LoadOptions},
        ringfill::RingFill,
        tracer::Tracer,
    },
    output::{self, Printer, RunInfo},
    pipeline::{
        reader::{self, Ended, Reload, Signals, Timers},
        Pipeline, Stats,
    },
};

pub fn run(cli: &Cli, filter: &Filter, mut info: RunInfo) -> Result<(), Error> {
    let options = SessionOptions::from_cli(cli)?;
    let (ended, stats) = session(cli, filter, options, |tracer| {
        info.attach_mode = tracer.mode.name().to_string();
        Ok(output::printer(cli.format, io::stdout().lock(), info)?)
    })?;
    report_end(ended, &stats);
    Ok(())
}

/// What a session does beyond printing events.
#[derive(Default)]
pub struct SessionOptions {
    /// `--baseline`: events checked against it, and its listeners looked for.
    pub checker: Option<Checker>,
    /// End after this long, as on SIGINT.
    pub stop_after: Option<Duration>,
}

impl SessionOptions {
    /// `--baseline FILE`, read and checked before anything is attached.
    pub fn from_cli(cli: &Cli) -> Result<SessionOptions, Error> {
        let checker = match &cli.baseline {
            Some(path) => Some(Checker::new(baseline::file::load(path)?.1)),
            None => None,
        };
        Ok(SessionOptions {
            checker,
            stop_after: None,
        })
    }
}

/// One tracing session: attach, then the output `make_output` gives once attached
/// gets the sockets that already exist and every event until SIGINT/SIGTERM, a
/// closed output, or `options.stop_after`. Everything is detached when it returns.
pub fn session<'o>(
    cli: &Cli,
    filter: &Filter,
    options: SessionOptions,
    make_output: impl FnOnce(&Tracer) -> Result<Box<dyn Printer + 'o>, Error>,
) -> Result<(Ended, Stats), Error> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        // Signals are caught from the start: one that comes while loading still
        // ends the run cleanly (exit 0, everything detached).
        let signals = Signals::new()?;
        let mut tracer = attach(cli, filter)?;
        let mut printer = make_output(&tracer)?;
        let baseline_interval = options
            .checker
            .as_ref()
            .map(|_| Duration::from_secs(cli.baseline_interval));
        let (metrics, otlp) = exports(cli, &tracer)?;
        let mut pipeline = Pipeline::new(printer.as_mut(), filter)
            .with_baseline(options.checker)
            .with_metrics(metrics)
            .with_otlp(otlp.clone());
        // Attached first, then the sockets that already exist: nothing falls between.
        // Tracing goes on without them if they cannot be read.
        if !cli.no_snapshot {
            match print_existing(&mut pipeline) {
                Err(Error::Snapshot(e)) => eprintln!(
                    "portwatch: warning: existing sockets not listed: {}",
                    crate::kernel::error::one_line(&e)
                ),
                other => other?,
            }
        }
        let timers = Timers {
            stats: cli.stats.map(Duration::from_secs),
            missing_listeners: baseline_interval,
            stop_after: options.stop_after,
        };
        let reload = Reload {
            baseline: cli.baseline.clone(),
        };
        let (ended, stats) = reader::run(&mut tracer, pipeline, timers, reload, signals).await?;
        drop(printer);
        if let Some(otlp) = otlp {
            otlp.finish(crate::export::otlp::EXIT_DEADLINE);
        }
        // Dropping the tracer detaches every program.
        drop(tracer);
        Ok((ended, stats))
    })
}

/// `--metrics` served and `--otlp-endpoint` started, as asked (the exporter's
/// counters among the metrics).
fn exports(cli: &Cli, tracer: &Tracer) -> Result<(Option<Metrics>, Option<Otlp>), Error> {
    let attach_mode = tracer.mode.name();
    let mut metrics = cli.metrics.map(|addr| (addr, Metrics::new(attach_mode)));
    let otlp = match otlp_endpoint(cli) {
        Some(endpoint) => Some(Otlp::start(
            OtlpConfig {
                endpoint,
                capacity: cli.otlp_buffer as usize,
                attach_mode,
            },
            metrics.as_mut().map(|(_, (_, registry))| registry),
        )?),
        None => None,
    };
    let metrics = match metrics {
        Some((addr, (metrics, registry))) => {
            let fill = ring_fill(tracer);
            let scraped = metrics.clone();
            let before_scrape = Box::new(move || {
                if let Some(f) = &fill {
                    scraped.ringbuf_used(f.used_ratio());
                }
            });
            crate::export::metrics::serve(addr, registry, before_scrape)
                .map_err(|source| Error::Metrics { addr, source })?;
            Some(metrics)
        }
        None => None,
    };
    Ok((metrics, otlp))
}

/// The ring buffer's fill level, read at each scrape (none, said once, if it
/// cannot be mapped).
fn ring_fill(tracer: &Tracer) -> Option<RingFill> {
    let ring = tracer.events.as_ref()?;
    // SAFETY: the ring buffer's fd is open while the tracer lives; the mapping
    // made from it does not need the fd afterwards.
    let fd = unsafe { std::os::fd::BorrowedFd::borrow_raw(ring.as_raw_fd()) };
    RingFill::new(fd)
        .map_err(|e| {
            eprintln!("portwatch: warning: the ring buffer's fill level is not reported: {e}")
        })
        .ok()
}

/// Whether to export, and where: `--otlp-endpoint` (a base URL), else
/// OTEL_EXPORTER_OTLP_LOGS_ENDPOINT (a full URL, read by the exporter itself:
/// `Some(None)`), else OTEL_EXPORTER_OTLP_ENDPOINT (through clap, as the flag).
fn otlp_endpoint(cli: &Cli) -> Option<Option<String>> {
    let logs_var = std::env::var("OTEL_EXPORTER_OTLP_LOGS_ENDPOINT")
        .ok()
        .filter(|v| !v.is_empty());
    let generic_var = std::env::var("OTEL_EXPORTER_OTLP_ENDPOINT").ok();
    match &cli.otlp_endpoint {
        Some(flag) if logs_var.is_none() || generic_var.as_ref() != Some(flag) => {
            Some(Some(flag.clone()))
        }
        _ => logs_var.map(|_| None),
    }
}

/// Load and attach as the command line asks; say how on stderr.
fn attach(cli: &Cli, filter: &Filter) -> Result<Tracer, Error> {
    let tracer = load::load(&LoadOptions {
        ringbuf_bytes: cli.ringbuf_size,
        wakeup_events: cli.wakeup_events,
        attach: cli.attach,
        accept_syscalls: !cli.inexact_accept,
        filter: kernel_filter(filter),
        protos: filter.protos.clone(),
        store: cli.socket_store,
        max_sockets: cli.max_sockets,
        floor: cli.bench_floor,
    })?;
    for w in tracer
        .warnings
        .iter()
        .chain(&crate::kernel::inspect::missing_read_privileges())
    {
        eprintln!("portwatch: warning: {w}");
    }
    // Loading parsed kernel BTF and ELF: hand that memory back before tracing.
    // SAFETY: malloc_trim only releases free heap memory.
    unsafe { libc::malloc_trim(0) };
    eprintln!(
        "portwatch: attached (mode {}): {}",
        tracer.mode.name(),
        tracer.attached.join(", ")
    );
    Ok(tracer)
}

/// The part of the filters the kernel side applies.
fn kernel_filter(filter: &Filter) -> KernelFilter {
    KernelFilter {
        pids: filter.pids.clone(),
        uids: filter.uids.clone(),
        ports: filter.ports.clone(),
        family: filter.family.map(|f| match f {
            Family::Ipv4 => KernelFamily::Ipv4,
            Family::Ipv6 => KernelFamily::Ipv6,
        }),
    }
}

/// The closing stderr line: the counts a user (and the tests) check.
pub fn report_end(ended: Ended, stats: &Stats) {
    match ended {
        Ended::StdoutClosed if stats.lost + stats.skipped > 0 => eprintln!(
            "portwatch: {} events lost and {} program runs skipped in total",
            stats.lost, stats.skipped
        ),
        Ended::StdoutClosed => {}
        Ended::Signal => eprintln!(
            "portwatch: detached; {} events, {} lost, {} skipped, {} received from the kernel{}{}",
            stats.events,
            stats.lost,
            stats.skipped,
            stats.received,
            if stats.undecodable > 0 {
                format!(", {} undecodable", stats.undecodable)
            } else {
                String::new()
            },
            unattributed(stats)
        ),
    }
}

/// What the closing line says of events without their exact owner, when any.
fn unattributed(stats: &Stats) -> String {
    let mut text = String::new();
    if stats.without_process > 0 {
        text.push_str(&format!(", {} without a process", stats.without_process));
    }
    if stats.accepts_unrecorded > 0 {
        text.push_str(&format!(
            ", {} accepts not kept exact",
            stats.accepts_unrecorded
        ));
    }
    if stats.unreadable > 0 {
        text.push_str(&format!(", {} unreadable in the kernel", stats.unreadable));
    }
    if stats.owners_unstored > 0 {
        text.push_str(&format!(", {} owners not stored", stats.owners_unstored));
    }
    if stats.inferred > 0 {
        text.push_str(&format!(
            ", {} closes inferred (not reported by the kernel)",
            stats.inferred
        ));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_kernel_part_of_the_filters() {
        let f = Filter {
            pids: vec![7, 8],
            uids: vec![1000],
            ports: vec![80],
            family: Some(Family::Ipv6),
            comms: vec!["curl".into()],
            ..Default::default()
        };
        assert_eq!(
            kernel_filter(&f),
            KernelFilter {
                pids: vec![7, 8],
                uids: vec![1000],
                ports: vec![80],
                family: Some(KernelFamily::Ipv6),
            }
        );
    }
}
