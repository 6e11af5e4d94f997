//! The live event loop: drains the ring buffer into the pipeline until a signal or
//! a closed stdout, with loss reported as it happens and at the end.
use std::{io, time::Duration};

use tokio::{
    io::unix::AsyncFd,
    signal::unix::{signal, SignalKind},
};

use super::{
    reconcile::{self, Keys, Listing},
    Pipeline, Stats,
};
use portwatch_common::Counter;

use crate::{
    enrich::procfs,
    event::model::Transport,
    kernel::{
        sockdiag::{self, DiagSocket},
        tracer::Tracer,
    },
    output::{LossReport, StatsReport},
};

/// How often the ring buffer is drained without a wakeup.
pub const DRAIN_INTERVAL: Duration = Duration::from_millis(50);

/// How often the sockets shown open are compared with the kernel's (a close the
/// kernel never reported is inferred at the second look that misses the socket).
pub const RECONCILE_INTERVAL: Duration = Duration::from_secs(5);

/// A look at the kernel's sockets costs time in proportion to their number (a
/// second or so for a million): the next one waits at least this many times
/// as long as the last one took, so looks never take more than 1/20 of a CPU.
const LOOK_SPACING: u32 = 20;

/// At the end, the pause between the two last looks at the kernel's sockets: far
/// longer than a socket's close takes to reach the ring buffer once the kernel has
/// unlisted it.
const LAST_LOOK_PAUSE: Duration = Duration::from_millis(200);

/// How a trace ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Ended {
    /// SIGINT or SIGTERM.
    Signal,
    /// Whoever read stdout went away (`portwatch | head`): not an error.
    StdoutClosed,
}

fn drain(
    ring: &mut aya::maps::RingBuf<aya::maps::MapData>,
    p: &mut Pipeline<'_>,
) -> io::Result<()> {
    let mut err = io::stderr();
    let mut any = false;
    while let Some(item) = ring.next() {
        any = true;
        p.record(&item, &mut err)?;
    }
    // One write for the whole batch, before waiting again.
    if any {
        p.printer.flush()?;
    }
    Ok(())
}

/// Drain the ring buffer, then look at the kernel's sockets and show the closes
/// it never reported (drained first: a close already in the buffer is not
/// inferred). Only the protocols a followed socket has are listed; one whose
/// listing fails is said once on stderr and put in `unlisted`, not listed again.
fn look(
    ring: &mut aya::maps::RingBuf<aya::maps::MapData>,
    pipeline: &mut Pipeline<'_>,
    unlisted: &mut Vec<Transport>,
) -> io::Result<()> {
    drain(ring, pipeline)?;
    let mut listing = Listing::default();
    for proto in [Transport::Tcp, Transport::Udp] {
        if unlisted.contains(&proto) || !pipeline.follows(proto) {
            continue;
        }
        let mut alive = Keys::default();
        let mut each = |s: DiagSocket| alive.extend(reconcile::listed(&s));
        let listed = match proto {
            Transport::Tcp => sockdiag::each_open_tcp_socket(&mut each),
            Transport::Udp => sockdiag::each_udp_socket(&mut each),
        };
        match listed {
            Ok(()) => match proto {
                Transport::Tcp => listing.tcp = Some(alive),
                Transport::Udp => listing.udp = Some(alive),
            },
            Err(e) => {
                unlisted.push(proto);
                eprintln!(
                    "portwatch: warning: cannot list the kernel's {} sockets ({}): a {} close the kernel does not report will not be inferred",
                    proto.name(),
                    crate::one_line(&e),
                    proto.name()
                );
            }
        }
    }
    if listing.tcp.is_none() && listing.udp.is_none() {
        return Ok(());
    }
    pipeline.reconcile(&listing)
}

/// Report what the owner store could not keep since the last look: on stderr.
fn report_unattributed(tracer: &Tracer, pipeline: &mut Pipeline<'_>) {
    let accepts = tracer.counter(Counter::AcceptUnrecorded);
    if accepts > pipeline.stats.accepts_unrecorded {
        eprintln!(
            "portwatch: warning: {} accepted connections could not be kept exact (their map is full at {}; see --max-sockets), {accepts} in total: their later events name the listener's owner, inexactly",
            accepts - pipeline.stats.accepts_unrecorded,
            tracer.store.map_cap.unwrap_or(0)
        );
        pipeline.stats.accepts_unrecorded = accepts;
    }
    let unreadable = tracer.counter(Counter::Unreadable);
    if unreadable > pipeline.stats.unreadable {
        eprintln!(
            "portwatch: warning: {} state changes or accepts were dropped because a kernel read failed, {unreadable} in total; each may have been an event",
            unreadable - pipeline.stats.unreadable
        );
        pipeline.stats.unreadable = unreadable;
    }
    let unstored = tracer.counter(Counter::OwnerUnstored);
    if unstored > pipeline.stats.owners_unstored {
        eprintln!(
            "portwatch: warning: the kernel could not store {} socket owners ({}), {unstored} in total: their later events name no process",
            unstored - pipeline.stats.owners_unstored,
            tracer.store.store.name()
        );
        pipeline.stats.owners_unstored = unstored;
    }
}

/// Report new losses: a stderr warning, and a record in the output stream.
fn report_loss(tracer: &Tracer, pipeline: &mut Pipeline<'_>) -> io::Result<()> {
    report_unattributed(tracer, pipeline);
    let per_cpu = tracer.lost_per_cpu();
    let total: u64 = per_cpu.iter().sum();
    // Each program's count is one syscall: read once, for the metrics and the sum.
    let per_program = tracer.skipped_runs_per_program();
    let skipped: u64 = per_program.iter().map(|(_, n)| n).sum();
    if let Some(m) = pipeline.metrics() {
        m.kernel(
            &per_cpu,
            &per_program,
            pipeline.open_sockets() as u64,
            pipeline.cached_processes(),
            tracer.socket_map_entries(),
        );
    }
    if total > pipeline.stats.lost || skipped > pipeline.stats.skipped {
        let delta = total - pipeline.stats.lost;
        if delta > 0 {
            eprintln!(
                "portwatch: warning: {delta} events lost (ring buffer full), {total} in total; try a larger --ringbuf-size"
            );
        }
        if skipped > pipeline.stats.skipped {
            eprintln!(
                "portwatch: warning: the kernel skipped {} program runs (another BPF program was running on that CPU), {skipped} in total; each may have been an event",
                skipped - pipeline.stats.skipped
            );
        }
        pipeline.stats.lost = total;
        pipeline.stats.skipped = skipped;
        pipeline.lost(&LossReport {
            time: chrono::Utc::now(),
            lost: delta,
            lost_total: total,
            per_cpu,
            skipped_total: skipped,
        })?;
    }
    Ok(())
}

/// Periodic counters (`--stats`): in the output stream, or on stderr for a table.
fn report_stats(tracer: &Tracer, pipeline: &mut Pipeline<'_>) -> io::Result<()> {
    let report = StatsReport {
        time: chrono::Utc::now(),
        received: pipeline.stats.received,
        printed: pipeline.stats.events,
        lost_total: pipeline.stats.lost,
        skipped_total: tracer.skipped_runs(),
        nested_caught: tracer.counter(Counter::NestedCaught),
        socket_store: tracer.store.store.name(),
        socket_map_entries: tracer.socket_map_entries(),
        socket_map_cap: tracer.store.map_cap,
        listener_map_entries: tracer.listener_map_entries(),
        process_cache_entries: pipeline.cached_processes(),
        open_sockets: pipeline.open_sockets() as u64,
        inferred_closes: pipeline.stats.inferred,
        rss_kb: procfs::own_rss_kb(),
    };
    pipeline.printer.stats(&report)?;
    pipeline.printer.flush()
}

/// Register a map-backed fd with tokio for read readiness.
fn watch<T: std::os::fd::AsRawFd>(inner: T) -> io::Result<AsyncFd<T>> {
    // SAFETY: `inner` owns its fd (a BPF map's) and the AsyncFd owns `inner`, so the
    // fd stays open for as long as it is registered.
    Ok(unsafe { AsyncFd::register_with_interest(inner, tokio::io::Interest::READABLE) }?)
}

/// SIGINT and SIGTERM (the end), and SIGHUP (reload), caught.
pub struct Signals {
    int: tokio::signal::unix::Signal,
    term: tokio::signal::unix::Signal,
    hup: tokio::signal::unix::Signal,
}

impl Signals {
    pub fn new() -> io::Result<Signals> {
        Ok(Signals {
            int: signal(SignalKind::interrupt())?,
            term: signal(SignalKind::terminate())?,
            hup: signal(SignalKind::hangup())?,
        })
    }
}

/// What the loop does on a timer besides draining.
#[derive(Debug, Default, Clone, Copy)]
pub struct Timers {
    /// `--stats`.
    pub stats: Option<Duration>,
    /// `--baseline-interval`: look for expected listeners that are gone.
    pub missing_listeners: Option<Duration>,
    /// Stop after this long, as on SIGINT (`baseline learn --duration`).
    pub stop_after: Option<Duration>,
}

/// What SIGHUP reloads.
#[derive(Debug, Default, Clone)]
pub struct Reload {
    /// `--baseline`: the file read again.
    pub baseline: Option<std::path::PathBuf>,
}

/// The TCP and UDP sockets that exist now, for the baseline's check (its
/// listeners); none when they cannot be read (said once on stderr by the
/// caller's snapshot).
fn listeners_now() -> Vec<crate::event::model::ConnEvent> {
    match sockdiag::tcp_and_udp_sockets() {
        Ok(sockets) => {
            super::snapshot::events(&sockets, crate::event::classify::EphemeralRange::of_host())
        }
        Err(_) => Vec::new(),
    }
}

/// Run until SIGINT/SIGTERM, until stdout closes, or for `timers.stop_after`.
/// Returns how it ended and the counts; the caller drops the tracer, which
/// detaches every program.
pub async fn run(
    tracer: &mut Tracer,
    mut pipeline: Pipeline<'_>,
    timers: Timers,
    reload: Reload,
    signals: Signals,
) -> io::Result<(Ended, Stats)> {
    let stats_every = timers.stats;
    let hour = Duration::from_secs(3600);
    let mut missing_tick = tokio::time::interval(timers.missing_listeners.unwrap_or(hour));
    missing_tick.tick().await;
    let stop = tokio::time::sleep(timers.stop_after.unwrap_or(hour * 24 * 365));
    tokio::pin!(stop);
    let Signals {
        int: mut sigint,
        term: mut sigterm,
        hup: mut sighup,
    } = signals;
    let events = tracer
        .events
        .take()
        .ok_or_else(|| io::Error::other("the ring buffer is already being read"))?;
    let mut ring = watch(events)?;
    let mut loss_tick = tokio::time::interval(Duration::from_secs(1));
    // With batched wakeups the kernel may not wake us for a lone event: drain on a
    // timer too, so it shows within DRAIN_INTERVAL.
    let mut drain_tick = tokio::time::interval(DRAIN_INTERVAL);
    drain_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut stats_tick = tokio::time::interval(stats_every.unwrap_or(Duration::from_secs(3600)));
    stats_tick.tick().await;
    let mut reconcile_tick = tokio::time::interval(RECONCILE_INTERVAL);
    reconcile_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    reconcile_tick.tick().await;
    let mut unlisted = Vec::new();
    let mut next_look = std::time::Instant::now();

    let outcome = loop {
        tokio::select! {
            guard = ring.readable_mut() => {
                let mut guard = guard?;
                // Readiness is edge-triggered: empty the buffer before waiting again.
                let result = drain(guard.get_inner_mut(), &mut pipeline);
                guard.clear_ready();
                if let Err(e) = result {
                    break Err(e);
                }
            }
            _ = drain_tick.tick() => {
                if let Err(e) = drain(ring.get_mut(), &mut pipeline) {
                    break Err(e);
                }
            }
            _ = loss_tick.tick() => {
                if let Err(e) = report_loss(tracer, &mut pipeline) {
                    break Err(e);
                }
            }
            _ = reconcile_tick.tick(), if std::time::Instant::now() >= next_look => {
                let began = std::time::Instant::now();
                let result = look(ring.get_mut(), &mut pipeline, &mut unlisted);
                next_look = began + began.elapsed() * LOOK_SPACING;
                if let Err(e) = result {
                    break Err(e);
                }
            }
            _ = stats_tick.tick(), if stats_every.is_some() => {
                if let Err(e) = report_stats(tracer, &mut pipeline) {
                    break Err(e);
                }
            }
            _ = missing_tick.tick(), if timers.missing_listeners.is_some() => {
                if let Err(e) = pipeline.missing_listeners(listeners_now()) {
                    break Err(e);
                }
            }
            _ = &mut stop, if timers.stop_after.is_some() => break Ok(Ended::Signal),
            _ = sigint.recv() => break Ok(Ended::Signal),
            _ = sigterm.recv() => break Ok(Ended::Signal),
            _ = sighup.recv() => {
                if let Err(e) = pipeline.reload_baseline(reload.baseline.as_deref(), listeners_now) {
                    break Err(e);
                }
            }
        }
    };
    let outcome = match outcome {
        // Events already in the buffer when the signal came are still printed, and
        // the last losses reported.
        Ok(Ended::Signal) => {
            // Two last looks at the kernel's sockets.
            let mut last_looks = look(ring.get_mut(), &mut pipeline, &mut unlisted);
            if last_looks.is_ok() {
                tokio::time::sleep(LAST_LOOK_PAUSE).await;
                last_looks = look(ring.get_mut(), &mut pipeline, &mut unlisted);
            }
            last_looks
                .and_then(|()| report_loss(tracer, &mut pipeline))
                .map(|()| Ended::Signal)
        }
        other => other,
    };
    let ended = match outcome {
        Ok(ended) => ended,
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => Ended::StdoutClosed,
        Err(e) => return Err(e),
    };
    // Losses are counted even when stdout is gone.
    pipeline.stats.lost = pipeline.stats.lost.max(tracer.lost_per_cpu().iter().sum());
    pipeline.stats.skipped = pipeline.stats.skipped.max(tracer.skipped_runs());
    tracer.events = Some(ring.into_inner());
    Ok((ended, pipeline.stats))
}
