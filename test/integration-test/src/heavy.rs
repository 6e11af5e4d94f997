//! Storm and soak, run on this machine's kernel (an emulated guest is far too slow
//! for them): tens of thousands of loopback connections from the load generator,
//! every connect and accept accounted for, none lost silently, memory flat.
use std::{
    collections::BTreeMap,
    io::{BufRead, BufReader},
    process::{ChildStdout, Command},
    sync::{Arc, Mutex},
    thread,
    time::{Duration, Instant},
};

use anyhow::{bail, Result};
use serde_json::Value;

use crate::{
    checks::Checks,
    harness::{
        helpers::LOOPBACK,
        launch::{Launch, Running},
        stderr::Closing,
    },
    sock,
};

pub fn record_all(checks: &mut Checks, portwatch: &str, loadgen: &str, mode: &str) {
    checks.run(
        &format!("[{mode}] storm: 20,000 connections, every event printed or counted lost"),
        || storm(portwatch, loadgen, mode),
    );
    checks.run(
        &format!("[{mode}] soak: 100,000 connections, kernel map emptied, RSS flat"),
        || soak(portwatch, loadgen, mode),
    );
    crate::inferred::record(checks, portwatch, loadgen, mode);
    crate::identity::record(checks, portwatch, loadgen, mode, &[]);
    crate::identity::record(checks, portwatch, loadgen, mode, &["--socket-store", "lru"]);
    crate::scale::record(checks, portwatch, loadgen, mode);
}

/// One event as the counting reader keeps it.
pub(crate) struct Seen {
    pub event: String,
    pub pid: u64,
    pub tid: u64,
    pub pid_exact: bool,
    /// A close the kernel did not report, inferred by portwatch.
    pub inferred: bool,
    /// The socket, and its ends (for saying which closes are missing).
    pub sock_id: String,
    pub ends: String,
    /// Role and endpoints, without the time.
    pub endpoints: String,
    pub role: String,
    pub netns: Option<u64>,
}

/// What a counting reader keeps of portwatch's JSON stream (hundreds of thousands
/// of lines: not the whole events).
#[derive(Default)]
pub(crate) struct Stream {
    pub events: Vec<Seen>,
    stats: Vec<Value>,
    /// The sum of the `lost` records.
    lost_records: u64,
    not_json: u64,
}

fn count(stdout: ChildStdout, stream: &Mutex<Stream>) {
    for line in BufReader::new(stdout).lines().map_while(Result::ok) {
        let Ok(v) = serde_json::from_str::<Value>(&line) else {
            stream.lock().unwrap().not_json += 1;
            continue;
        };
        let mut s = stream.lock().unwrap();
        match v["event"].as_str() {
            Some("stats") => s.stats.push(v),
            Some("lost") => s.lost_records += v["lost"].as_u64().unwrap_or(0),
            Some(kind) => s.events.push(Seen {
                event: kind.to_string(),
                pid: v["pid"].as_u64().unwrap_or(0),
                tid: v["tid"].as_u64().unwrap_or(0),
                pid_exact: v["pid_exact"] == true,
                inferred: v["inferred"] == true,
                role: v["role"].as_str().unwrap_or("").to_string(),
                endpoints: format!(
                    "{} {}:{} {}:{}",
                    v["role"],
                    v["local"]["addr"],
                    v["local"]["port"],
                    v["remote"]["addr"],
                    v["remote"]["port"]
                ),
                netns: v["netns"].as_u64(),
                sock_id: v["sock_id"].as_str().unwrap_or("").to_string(),
                ends: format!(
                    "{} {}:{} -> {} at {}",
                    v["role"],
                    v["local"]["addr"],
                    v["local"]["port"],
                    v["remote"]["port"],
                    v["time"]
                ),
            }),
            None => {}
        }
    }
}

/// portwatch on `port` only, counting what it prints.
pub(crate) struct Run {
    running: Running<()>,
    stream: Arc<Mutex<Stream>>,
    port: u16,
}

fn start(portwatch: &str, mode: &str, port: u16, extra: &[&str]) -> Result<Run> {
    start_launch(
        Launch::json_on_port(portwatch, mode, port).args(extra),
        port,
    )
}

/// `launch` (portwatch on `port` only, in JSON) started, its stream counted.
pub(crate) fn start_launch(launch: Launch, port: u16) -> Result<Run> {
    let stream = Arc::new(Mutex::new(Stream::default()));
    let counted = stream.clone();
    let running = launch.start(move |stdout| count(stdout, &counted))?;
    Ok(Run {
        running,
        stream,
        port,
    })
}

/// Wait until the stream has been quiet for a second and no socket on the run's
/// port is left to close, then SIGINT; the stream and
/// portwatch's closing counts.
pub(crate) fn finish(run: Run) -> Result<(Stream, Closing)> {
    let mut last = usize::MAX;
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        thread::sleep(Duration::from_secs(1));
        let n = run.stream.lock().unwrap().events.len();
        // Quiet, and no socket of the run left to close.
        if (n == last && sock::open_on(run.port) == 0) || Instant::now() > deadline {
            break;
        }
        last = n;
    }
    stop(run)
}

/// SIGINT now; the stream and portwatch's closing counts.
pub(crate) fn stop(run: Run) -> Result<(Stream, Closing)> {
    let stopped = run.running.stop()?;
    if !stopped.status.success() {
        bail!(
            "portwatch exited with {}: {}",
            stopped.status,
            stopped.stderr
        );
    }
    let closing = stopped.stderr.closing()?;
    let stream = std::mem::take(&mut *run.stream.lock().unwrap());
    Ok((stream, closing))
}

/// The load generator's own account.
pub fn load(loadgen: &str, connections: u64, port: u16) -> Result<Value> {
    let out = Command::new(loadgen)
        .args(["--connections", &connections.to_string()])
        .args(["--port", &port.to_string()])
        .output()?;
    if !out.status.success() {
        bail!("loadgen failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(serde_json::from_slice(&out.stdout)?)
}

/// Every event of a storm of `connections`: per connection a connect, an accept and
/// two closes, plus the listener's listen and close. Each socket shown open is
/// shown closed exactly once: by the kernel's event, or by a close portwatch
/// inferred when the kernel no longer had the socket. What the kernel reported
/// plus what it said it lost never exceeds the total, and falls short of it by no
/// more than the runs it said it skipped plus the closes inferred.
fn totals(stream: &Stream, closing: &Closing, connections: u64) -> Vec<String> {
    let Closing {
        events: printed,
        lost,
        received,
        inferred,
        ..
    } = *closing;
    // Every run the kernel side could not complete is counted, each possibly an
    // event: skipped by the recursion guard, or stopped by a failed kernel read.
    let skipped = closing.skipped + closing.unreadable;
    let expected = 4 * connections + 2;
    let mut failures = Vec::new();
    if printed != stream.events.len() as u64 {
        failures.push(format!(
            "portwatch says {printed} printed, the stream had {}",
            stream.events.len()
        ));
    }
    let shown_inferred = stream.events.iter().filter(|e| e.inferred).count() as u64;
    if shown_inferred != inferred {
        failures.push(format!(
            "{shown_inferred} closes marked inferred in the stream, the closing line says {inferred}"
        ));
    }
    let (unclosed, twice) = closes(stream, lost);
    if !unclosed.is_empty() || !twice.is_empty() {
        failures.push(format!(
            "sockets opened without a close: {unclosed:?}; closed twice: {twice:?}"
        ));
    }
    let reported = printed - inferred;
    if reported + lost > expected || reported + lost + skipped + inferred < expected {
        failures.push(format!(
            "{reported} reported by the kernel + {lost} lost (+ up to {skipped} skipped, + {inferred} inferred) does not account for exactly {expected}: silent loss or duplicates (closing line: {closing:?})"
        ));
    }
    if received != reported {
        failures.push(format!(
            "{received} received but {reported} printed from the kernel: the kernel filter let others through"
        ));
    }
    if stream.lost_records != lost {
        failures.push(format!(
            "lost records in the stream add up to {}, the summary says {lost}",
            stream.lost_records
        ));
    }
    if stream.not_json > 0 {
        failures.push(format!("{} lines printed are not JSON", stream.not_json));
    }
    failures
}

/// The sockets whose opening (listen, connect, accept) the stream has and whose
/// close it does not, and those it closes more than once (at most 10 of each).
/// By socket id; on the LRU fallback, whose ids are not exact (an owner entry
/// evicted or recorded late changes a socket's id), by endpoints: each one's
/// openings and closes must pair up, but for the `lost` events, which may have
/// been openings (of sockets whose closes then come alone).
pub(crate) fn closes(stream: &Stream, lost: u64) -> (Vec<&str>, Vec<&str>) {
    if crate::harness::launch::on_lru_fallback() {
        return closes_by_endpoints(stream, lost);
    }
    let mut closed: std::collections::HashMap<&str, u32> = std::collections::HashMap::new();
    for e in stream.events.iter().filter(|e| e.event == "close") {
        *closed.entry(e.sock_id.as_str()).or_default() += 1;
    }
    let opened = stream.events.iter().filter(|e| e.event != "close");
    let unclosed = opened
        .clone()
        .filter(|e| !closed.contains_key(e.sock_id.as_str()))
        .map(|e| e.ends.as_str())
        .take(10)
        .collect();
    let twice = opened
        .filter(|e| closed.get(e.sock_id.as_str()).is_some_and(|n| *n > 1))
        .map(|e| e.ends.as_str())
        .take(10)
        .collect();
    (unclosed, twice)
}

fn closes_by_endpoints(stream: &Stream, lost: u64) -> (Vec<&str>, Vec<&str>) {
    let mut balance: std::collections::HashMap<&str, (i64, &str)> =
        std::collections::HashMap::new();
    for e in &stream.events {
        let entry = balance.entry(e.endpoints.as_str()).or_insert((0, &e.ends));
        entry.0 += if e.event == "close" { -1 } else { 1 };
    }
    let pick = |unclosed: bool| -> Vec<&str> {
        balance
            .values()
            .filter(|(n, _)| if unclosed { *n > 0 } else { *n < 0 })
            .map(|(_, ends)| *ends)
            .take(10)
            .collect()
    };
    let extra_closes: i64 = balance
        .values()
        .filter(|(n, _)| *n < 0)
        .map(|(n, _)| -n)
        .sum();
    let twice = if extra_closes as u64 > lost {
        pick(false)
    } else {
        Vec::new()
    };
    (pick(true), twice)
}

/// Every connect and accept printed names the load generator and the thread that
/// made it.
fn threads(stream: &Stream, lg: &Value) -> Vec<String> {
    let (pid, server_tid, client_tid) = (
        lg["pid"].as_u64(),
        lg["server_tid"].as_u64(),
        lg["client_tid"].as_u64(),
    );
    let wrong = stream
        .events
        .iter()
        .filter(|e| {
            let thread = match e.event.as_str() {
                "connect" => client_tid,
                "accept" => server_tid,
                _ => return false,
            };
            !(Some(e.pid) == pid && Some(e.tid) == thread && e.pid_exact)
        })
        .count();
    if wrong > 0 {
        return vec![format!(
            "{wrong} connect/accept events named the wrong process or thread"
        )];
    }
    vec![]
}

/// The accounting of a run, and a line saying what happened.
fn account(stream: &Stream, closing: &Closing, lg: &Value, connections: u64) -> Vec<String> {
    let mut failures = totals(stream, closing, connections);
    failures.extend(threads(stream, lg));
    let mut kinds: BTreeMap<&str, u64> = BTreeMap::new();
    for e in &stream.events {
        *kinds.entry(e.event.as_str()).or_default() += 1;
    }
    println!(
        "# {connections} connections at {:.0}/s: {} events printed ({kinds:?}), {} lost and {} skipped runs, {} closes inferred, all reported",
        lg["rate"].as_f64().unwrap_or(0.0),
        closing.events,
        closing.lost,
        closing.skipped,
        closing.inferred
    );
    failures
}

/// 20,000 connections as fast as the machine makes them, with the default
/// settings and with a deliberately tiny ring buffer: either way every event is
/// printed or counted as lost.
fn storm(portwatch: &str, loadgen: &str, mode: &str) -> Result<Vec<String>> {
    const N: u64 = 20_000;
    let mut failures = Vec::new();
    for (label, extra) in [
        ("default settings", &[][..]),
        ("4 KiB ring buffer", &["--ringbuf-size", "4096"]),
    ] {
        let port = sock::unused_port(LOOPBACK)?;
        let run = start(portwatch, mode, port, extra)?;
        let lg = load(loadgen, N, port)?;
        let (stream, closing) = finish(run)?;
        let f = account(&stream, &closing, &lg, N);
        if !extra.is_empty() && closing.lost == 0 {
            failures.push(format!(
                "{label}: no loss at all, so the accounting was not exercised"
            ));
        }
        failures.extend(f.into_iter().map(|x| format!("{label}: {x}")));
    }
    Ok(failures)
}

/// 100,000 connections with `--stats 1`: the kernel's per-socket map ends empty
/// (entries are removed on close), and portwatch's RSS stays flat.
fn soak(portwatch: &str, loadgen: &str, mode: &str) -> Result<Vec<String>> {
    const N: u64 = 100_000;
    let port = sock::unused_port(LOOPBACK)?;
    let run = start(portwatch, mode, port, &["--stats", "1"])?;
    let lg = load(loadgen, N, port)?;
    // Let two more stats records come after the load.
    thread::sleep(Duration::from_millis(2500));
    let (stream, closing) = finish(run)?;
    let mut failures = account(&stream, &closing, &lg, N);
    failures.extend(flat_and_empty(&stream.stats, N));
    Ok(failures)
}

/// The `stats` records of a soak: RSS grew by at most 4 MiB, the kernel's socket
/// map ended (nearly) empty, the process cache within its bound.
fn flat_and_empty(stats: &[Value], connections: u64) -> Vec<String> {
    let rss: Vec<u64> = stats.iter().filter_map(|s| s["rss_kb"].as_u64()).collect();
    let socks: Vec<u64> = stats
        .iter()
        .filter_map(|s| s["socket_map_entries"].as_u64())
        .collect();
    println!("# soak: RSS samples (kB) {rss:?}; kernel socket map entries {socks:?}");
    if rss.len() < 3 {
        return vec![format!("only {} stats records", rss.len())];
    }
    let mut failures = Vec::new();
    let first = rss[0];
    let peak = *rss.iter().max().unwrap();
    if peak > first + 4096 {
        failures.push(format!(
            "RSS grew from {first} kB to {peak} kB over {connections} connections"
        ));
    }
    match socks.last() {
        Some(n) if *n <= 16 => {}
        other => failures.push(format!(
            "{other:?} sockets still tracked in the kernel after the load"
        )),
    }
    let cached = stats
        .last()
        .and_then(|s| s["process_cache_entries"].as_u64());
    if cached.unwrap_or(u64::MAX) > 4096 {
        failures.push("process cache above its bound".into());
    }
    failures
}
