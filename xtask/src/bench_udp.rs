//! The UDP rows of `cargo xtask bench` (issue #14): `loadgen --udp-flows` (many
//! datagrams over 1,000 flows in sendmmsg() batches of 64, one sender thread per
//! CPU; connected sockets, then unconnected ones naming the peer on every
//! datagram), the same in batches of 8 and of 1, sendmmsg() calls of no message
//! (`--udp-empty-sends`: the hooks alone), `loadgen --tcp-sends` (what the same
//! hooks cost TCP's sends) and `loadgen --udp-sockets` (short-lived sockets, one
//! datagram each); each with no tracer, the empty
//! program on every UDP syscall tracepoint (`--bench-floor udp-syscalls`, the
//! kernel's own cost for the same hooks) and portwatch.
//!
//! The kernel side's cost is the load generator's system CPU time per datagram
//! (its sending threads over the timed part: every program on a syscall
//! tracepoint runs in the calling thread) minus that of the no-tracer run of the
//! same round, median over the rounds: pairing within a round takes out the
//! machine's drift. Both the floor and portwatch cost per syscall (in mode
//! tracepoint portwatch looks at the first datagram of a call), which a batch of
//! 64 shares out below this machine's noise: the verdict compares their costs per
//! call, portwatch's in batches of 8 (the same work as in any batch), the floor's
//! on empty calls (the same hooks, around a syscall that does next to nothing).
//! portwatch's events go to a file, and those of the load generator's pid are
//! counted: one `connect` per flow (the closes it infers in tracepoint mode
//! apart). Runs that another tracer's tracepoint programs overlapped (another
//! portwatch, say, from a test suite running on the same host) are measured
//! again.
//!
//! `PW_BENCH_ONLY=udp cargo xtask bench` runs these rows alone, written to
//! target/bench/results-udp.md.
use std::{
    fs,
    path::Path,
    process::Command,
    sync::atomic::{AtomicBool, Ordering},
    time::Duration,
};

use anyhow::{bail, Context, Result};

use super::{cpu_seconds, median, stop};
use crate::util;

#[path = "bench_udp_report.rs"]
mod report;
#[path = "bench_udp_tracers.rs"]
mod tracers;
use report::{cost, render, targets};
use tracers::{count_events, lost_skipped, start, tracepoint_programs, wait_quiet};

const FLOWS: u64 = 1000;
const DATAGRAMS: u64 = 3_000_000;
const BATCH: u64 = 64;
/// Per run in batches of 1 (the syscall tracepoints' worst case) and of 8.
const SINGLE_DATAGRAMS: u64 = 500_000;
const EIGHT_DATAGRAMS: u64 = 1_000_000;
const SOCKETS: u64 = 20_000;
/// sendmmsg() calls of no message: the hooks' cost per call, out of the noise.
const EMPTY_CALLS: u64 = 1_000_000;
/// send() calls on one TCP connection: what the UDP programs cost TCP.
const TCP_SENDS: u64 = 300_000;
/// The targets: the kernel side costs at most this times the floor's...
const FLOOR_FACTOR: f64 = 2.0;
/// ...at this rate, or the machine's maximum.
const TARGET_RATE: f64 = 1_000_000.0;

const NONE: &str = "no tracer";
const FLOOR: &str = "empty program on every UDP syscall tracepoint (floor)";
const PW_UDP: &str = "portwatch json --proto udp";
const PW_ALL: &str = "portwatch json (TCP and UDP)";
const PW_TCP: &str = "portwatch json --proto tcp";

/// A load: its loadgen arguments and how it is described.
pub(super) struct Load {
    title: String,
    args: Vec<String>,
    /// The loadgen's JSON field counting the timed items.
    items: &'static str,
    unit: &'static str,
    /// Datagrams per syscall (0: the empty sends).
    batch: u64,
    /// Flow events expected from one run.
    events: u64,
    /// [`NONE`], [`FLOOR`], [`PW_UDP`], then any other.
    configs: &'static [&'static str],
}

fn tracer_args(config: &str) -> Option<&'static [&'static str]> {
    match config {
        FLOOR => Some(&["--bench-floor", "udp-syscalls"]),
        PW_UDP => Some(&["--format", "json", "--proto", "udp"]),
        PW_ALL => Some(&["--format", "json"]),
        PW_TCP => Some(&["--format", "json", "--proto", "tcp"]),
        _ => None,
    }
}

fn run_load(loadgen: &Path, args: &[String]) -> Result<serde_json::Value> {
    let out = Command::new(loadgen).args(args).output()?;
    if !out.status.success() {
        bail!("loadgen failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(serde_json::from_slice(&out.stdout)?)
}

/// One measured run of one configuration.
#[derive(Default)]
pub(super) struct Run {
    rate: f64,
    /// System CPU time of the load's sending threads per item, ns.
    sys_ns: f64,
    /// The load generator's UDP connects, closes (inferred by portwatch in
    /// tracepoint mode) and other events.
    events: [u64; 3],
    lost: u64,
    skipped: u64,
    tracer_cpu: f64,
}

/// The median of one measure of a configuration's runs.
pub(super) fn med(runs: &[Run], f: impl Fn(&Run) -> f64) -> f64 {
    median(runs.iter().map(f).collect())
}

pub(super) fn sum(runs: &[Run], f: impl Fn(&Run) -> u64) -> u64 {
    runs.iter().map(f).sum()
}

/// One round of one configuration: start the tracer, warm up, one measured run;
/// `None` when another tracer's programs were loaded during it.
fn measure_once(
    portwatch: &Path,
    loadgen: &Path,
    load: &Load,
    config: &str,
) -> Result<Option<Run>> {
    let out = util::workspace_root().join("target/bench/udp-events.jsonl");
    wait_quiet();
    let tracer = match tracer_args(config) {
        Some(args) => Some(start(portwatch, args, &out)?),
        None => None,
    };
    let ours = tracepoint_programs();
    // The count is the second argument (see `loads`).
    let mut warm_up = load.args.clone();
    warm_up[1] = (warm_up[1].parse::<u64>()? / 4).max(FLOWS).to_string();
    run_load(loadgen, &warm_up)?;
    let cpu0 = tracer.as_ref().map_or(0.0, |(c, _)| cpu_seconds(c.id()));
    let (done, foreign) = (AtomicBool::new(false), AtomicBool::new(false));
    let v = std::thread::scope(|scope| {
        scope.spawn(|| {
            while !done.load(Ordering::Relaxed) {
                if tracepoint_programs().iter().any(|id| !ours.contains(id)) {
                    foreign.store(true, Ordering::Relaxed);
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        });
        let v = run_load(loadgen, &load.args);
        done.store(true, Ordering::Relaxed);
        v
    })?;
    let mut run = Run {
        rate: v["rate"].as_f64().context("loadgen's rate")?,
        sys_ns: v["system_seconds"].as_f64().context("loadgen's CPU")? * 1e9
            / v[load.items].as_f64().context("loadgen's count")?,
        ..Run::default()
    };
    if let Some((mut child, rx)) = tracer {
        // Let the tracer catch up with what the kernel already queued.
        std::thread::sleep(Duration::from_millis(300));
        run.tracer_cpu = cpu_seconds(child.id()) - cpu0;
        stop(&mut child, config);
        // Every line, up to the closing one, once the reader thread has seen the end.
        let said: Vec<String> = rx.iter().collect();
        (run.lost, run.skipped) =
            lost_skipped(&said).context("portwatch did not say what it lost")?;
        if config != FLOOR {
            run.events = count_events(&out, v["pid"].as_u64().context("loadgen's pid")?)?;
        }
    }
    // Still loaded once ours is gone: they were another tracer's.
    let after = tracepoint_programs();
    let foreign = foreign.load(Ordering::Relaxed) || ours.iter().any(|id| after.contains(id));
    Ok((!foreign).then_some(run))
}

/// The loads, in table order.
fn loads() -> Vec<Load> {
    // The bridge sink (see loadgen's `sink`) needs iproute2.
    let sink = if util::which("ip").is_some() {
        "bridge"
    } else {
        "loopback"
    };
    let peers = if sink == "bridge" {
        "each to a peer of its own (a port of one address behind a bridge with no ports, in the load generator's own network namespace: the whole send path, then the bridge frees the datagram)"
    } else {
        "each to a loopback receiver of its own, which nobody reads"
    };
    let senders = std::thread::available_parallelism().map_or(1, |n| n.get());
    // The count first: the warm-up runs a quarter of it.
    let flows = |datagrams: u64, batch: u64, more: &[&str]| -> Vec<String> {
        let (n, f, b) = (datagrams.to_string(), FLOWS.to_string(), batch.to_string());
        let mut a = vec![
            "--datagrams",
            &n,
            "--udp-flows",
            &f,
            "--sink",
            sink,
            "--batch",
            &b,
        ];
        a.extend(more);
        a.into_iter().map(String::from).collect()
    };
    let datagrams = |title: String, args, batch, configs| Load {
        title,
        args,
        items: "timed_datagrams",
        unit: "datagram",
        batch,
        events: FLOWS,
        configs,
    };
    vec![
        datagrams(
            format!("UDP flows: `loadgen --udp-flows {FLOWS} --sink {sink}`, {DATAGRAMS} datagrams of 16 bytes per run on {FLOWS} connected sockets, {peers}, sent by {senders} threads pinned one per CPU in sendmmsg() batches of {BATCH}"),
            flows(DATAGRAMS, BATCH, &[]),
            BATCH,
            &[NONE, FLOOR, PW_UDP, PW_ALL],
        ),
        datagrams(
            "UDP flows on unconnected sockets (`--sendto`): as above, the peer's address on every datagram, which the kernel side reads from the process's memory (the first of each call)".to_string(),
            flows(DATAGRAMS, BATCH, &["--sendto"]),
            BATCH,
            &[NONE, FLOOR, PW_UDP],
        ),
        datagrams(
            format!("UDP flows in batches of 8 (`--batch 8`: portwatch's programs look at the first datagram of a call, whatever its size): as the first, {EIGHT_DATAGRAMS} datagrams per run"),
            flows(EIGHT_DATAGRAMS, 8, &[]),
            8,
            &[NONE, FLOOR, PW_UDP],
        ),
        datagrams(
            format!("UDP flows, one datagram per syscall (`--batch 1`, the syscall tracepoints' worst case): as the first, {SINGLE_DATAGRAMS} datagrams per run"),
            flows(SINGLE_DATAGRAMS, 1, &[]),
            1,
            &[NONE, FLOOR, PW_UDP],
        ),
        Load {
            title: format!("The send hooks alone: `loadgen --udp-empty-sends {EMPTY_CALLS}`, sendmmsg() calls with no message on one connected socket (one thread): the syscall does next to nothing, its tracepoints fire as for any send. portwatch's programs find nothing sent, so its cost here is the part of a call before the first datagram (its one flow event is the connect)"),
            args: ["--udp-empty-sends", &EMPTY_CALLS.to_string(), "--sink", sink]
                .map(String::from)
                .to_vec(),
            items: "calls",
            unit: "call",
            batch: 0,
            events: 1,
            configs: &[NONE, FLOOR, PW_UDP],
        },
        Load {
            title: format!("TCP sends: `loadgen --tcp-sends {TCP_SENDS}`, send() calls of 16 bytes on one loopback TCP connection (one thread; another reads). The UDP programs sit on the send syscalls' tracepoints, which fire for every socket's sends: this is what they cost a program that never touches UDP (`--proto tcp` attaches none of them)"),
            args: ["--tcp-sends", &TCP_SENDS.to_string()]
                .map(String::from)
                .to_vec(),
            items: "sends",
            unit: "send",
            batch: 1,
            events: 0,
            configs: &[NONE, FLOOR, PW_UDP, PW_ALL, PW_TCP],
        },
        Load {
            title: format!("Short-lived UDP sockets: `loadgen --udp-sockets {SOCKETS} --sink {sink}`, each socket created, sending one datagram, closed (one thread)"),
            args: ["--udp-sockets", &SOCKETS.to_string(), "--sink", sink]
                .map(String::from)
                .to_vec(),
            items: "sockets",
            unit: "socket",
            batch: 1,
            events: SOCKETS,
            configs: &[NONE, FLOOR, PW_UDP],
        },
    ]
}

/// Every load and configuration, `rounds` times in turn; the tables in markdown.
pub fn measure(portwatch: &Path, loadgen: &Path, rounds: usize) -> Result<String> {
    let loads = loads();
    // By load, by configuration, by round.
    let mut results: Vec<Vec<Vec<Run>>> = loads
        .iter()
        .map(|l| l.configs.iter().map(|_| Vec::new()).collect())
        .collect();
    let mut retried = 0;
    for round in 1..=rounds {
        eprintln!("xtask: bench: UDP, round {round} of {rounds}");
        for (load, runs) in loads.iter().zip(results.iter_mut()) {
            for (config, runs) in load.configs.iter().zip(runs.iter_mut()) {
                runs.push(loop {
                    match measure_once(portwatch, loadgen, load, config)
                        .with_context(|| format!("UDP: {config}"))?
                    {
                        Some(run) => break run,
                        None if retried < 3 * rounds => retried += 1,
                        None => bail!("another tracer kept loading tracepoint programs"),
                    }
                });
            }
        }
    }
    // The floor is a cost per syscall, whatever the syscall does: measured on
    // empty calls, it gives the floor per datagram of every batch size more
    // precisely than their own runs.
    let per_call = |unit: &str, batch: u64, config: usize| {
        let i = loads
            .iter()
            .position(|l| l.unit == unit && l.batch == batch)?;
        Some(cost(&results[i][0], &results[i][config]).0 * batch.max(1) as f64)
    };
    let floor_per_call = per_call("call", 0, 1);
    let mut s = format!(
        "\nUDP (issue #14). {rounds} rounds, each measuring every configuration of every table once in turn. Rates and system CPU (of the load generator's sending threads, over the timed part) are medians; the kernel-side cost is the median over the rounds of the system CPU per item minus the no-tracer run's of the same round, range in brackets. Both the floor and portwatch cost per syscall, so for the datagram tables \"cost vs floor's\" takes the floor per datagram as its cost per call measured on empty sends (the hooks alone), {:.0} ns, shared by the batch: a batch's own floor runs cannot resolve it. Flow events: the load generator's UDP connect events per run (and the closes portwatch inferred before it stopped, summed); losses summed. {retried} runs were measured again: another tracer's tracepoint programs were loaded during them.\n",
        floor_per_call.unwrap_or(f64::NAN)
    );
    for (load, runs) in loads.iter().zip(&results) {
        s.push_str(&render(load, runs, floor_per_call));
    }
    s.push_str(&targets(
        &loads,
        &results,
        floor_per_call,
        per_call("datagram", 8, 2),
    ));
    Ok(s)
}

/// `PW_BENCH_ONLY=udp`: these rows alone.
pub fn only(portwatch: &Path, loadgen: &Path, rounds: usize) -> Result<()> {
    let report = measure(portwatch, loadgen, rounds)?;
    eprintln!("{report}");
    let path = util::workspace_root().join("target/bench/results-udp.md");
    fs::create_dir_all(path.parent().context("target/bench")?)?;
    fs::write(&path, &report)?;
    eprintln!("xtask: bench: UDP results written to {}", path.display());
    Ok(())
}
