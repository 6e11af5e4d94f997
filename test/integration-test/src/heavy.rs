//! Storm and soak, run on this machine's kernel (an emulated guest is far too slow
//! for them): tens of thousands of loopback connections from the load generator,
//! every connect and accept accounted for, none lost silently, memory flat.
use std::{
    io::{BufRead, BufReader},
    process::{Child, Command, Stdio},
    sync::{mpsc, Arc, Mutex},
    thread,
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};
use serde_json::Value;

use crate::scenarios::unused_port;

/// What a counting reader keeps of portwatch's JSON stream: (event, pid, tid,
/// pid_exact) per event, and the `stats` records.
#[derive(Default)]
struct Stream {
    events: Vec<(String, u64, u64, bool)>,
    stats: Vec<Value>,
    lost_records: u64,
}

struct Run {
    child: Child,
    stream: Arc<Mutex<Stream>>,
    stderr: Arc<Mutex<Vec<String>>>,
    reader: thread::JoinHandle<()>,
}

fn start(portwatch: &str, args: &[String]) -> Result<Run> {
    let mut child = Command::new(portwatch)
        .args(["--format", "json", "--no-snapshot"])
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    let stream = Arc::new(Mutex::new(Stream::default()));
    let out = BufReader::new(child.stdout.take().unwrap());
    let s = stream.clone();
    let reader = thread::spawn(move || {
        for line in out.lines().map_while(Result::ok) {
            let v: Value = serde_json::from_str(&line).expect("portwatch printed invalid JSON");
            let mut s = s.lock().unwrap();
            match v["event"].as_str() {
                Some("stats") => s.stats.push(v),
                Some("lost") => s.lost_records += v["lost"].as_u64().unwrap_or(0),
                Some(kind) => s.events.push((
                    kind.to_string(),
                    v["pid"].as_u64().unwrap_or(0),
                    v["tid"].as_u64().unwrap_or(0),
                    v["pid_exact"] == true,
                )),
                None => {}
            }
        }
    });
    let stderr = Arc::new(Mutex::new(Vec::new()));
    let (tx, rx) = mpsc::channel();
    let err = BufReader::new(child.stderr.take().unwrap());
    let se = stderr.clone();
    thread::spawn(move || {
        for line in err.lines().map_while(Result::ok) {
            if line.contains("attached") {
                let _ = tx.send(());
            }
            se.lock().unwrap().push(line);
        }
    });
    if rx.recv_timeout(Duration::from_secs(60)).is_err() {
        let _ = child.kill();
        bail!("portwatch did not attach: {:?}", stderr.lock().unwrap());
    }
    Ok(Run {
        child,
        stream,
        stderr,
        reader,
    })
}

/// Wait until the stream has been quiet for a second, then SIGINT; the counts
/// from portwatch's closing line (printed, lost, received).
fn finish(run: Run) -> Result<(Stream, (u64, u64, u64, u64))> {
    let mut last = usize::MAX;
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        thread::sleep(Duration::from_secs(1));
        let n = run.stream.lock().unwrap().events.len();
        if n == last || Instant::now() > deadline {
            break;
        }
        last = n;
    }
    let mut child = run.child;
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGINT,
    )?;
    let status = child.wait()?;
    run.reader
        .join()
        .map_err(|_| anyhow::anyhow!("the reader panicked"))?;
    thread::sleep(Duration::from_millis(100));
    let stderr = run.stderr.lock().unwrap().clone();
    if !status.success() {
        bail!("portwatch exited with {status}: {stderr:?}");
    }
    let line = stderr
        .iter()
        .find(|l| l.contains("detached;"))
        .context("no closing line")?;
    let words: Vec<&str> = line
        .split([' ', ',', ';'])
        .filter(|w| !w.is_empty())
        .collect();
    let before = |w: &str| -> Result<u64> {
        let i = words
            .iter()
            .position(|x| *x == w)
            .with_context(|| format!("no `{w}` in {line}"))?;
        Ok(words[i - 1].parse()?)
    };
    let counts = (
        before("events")?,
        before("lost")?,
        before("received")?,
        before("skipped")?,
    );
    let stream = Arc::try_unwrap(run.stream)
        .map_err(|_| anyhow::anyhow!("stream still shared"))?
        .into_inner()
        .unwrap();
    Ok((stream, counts))
}

/// The load generator's own account.
fn load(loadgen: &str, connections: u64, port: u16) -> Result<Value> {
    let out = Command::new(loadgen)
        .args([
            "--connections",
            &connections.to_string(),
            "--port",
            &port.to_string(),
        ])
        .output()?;
    if !out.status.success() {
        bail!("loadgen failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(serde_json::from_slice(&out.stdout)?)
}

/// Every event of a storm of `connections`: per connection a connect, an accept and
/// two closes, plus the listener's listen and close. The accounting: what was
/// printed plus what was reported lost (ring buffer full) never exceeds that, and
/// falls short of it by no more than the program runs the kernel reported skipping
/// (its recursion guard); every connect and accept printed names the right thread.
fn account(
    stream: &Stream,
    counts: (u64, u64, u64, u64),
    lg: &Value,
    connections: u64,
) -> Vec<String> {
    let (printed, lost, received, skipped) = counts;
    let expected = 4 * connections + 2;
    let mut failures = Vec::new();
    if printed != stream.events.len() as u64 {
        failures.push(format!(
            "portwatch says {printed} printed, the stream had {}",
            stream.events.len()
        ));
    }
    if printed + lost > expected || printed + lost + skipped < expected {
        failures.push(format!(
            "{printed} printed + {lost} lost (+ up to {skipped} skipped) does not account for exactly {expected}: silent loss or duplicates"
        ));
    }
    if received != printed {
        failures.push(format!(
            "{received} received but {printed} printed: the kernel filter let others through"
        ));
    }
    if stream.lost_records != lost {
        failures.push(format!(
            "lost records in the stream add up to {}, the summary says {lost}",
            stream.lost_records
        ));
    }
    let (pid, server_tid, client_tid) = (
        lg["pid"].as_u64(),
        lg["server_tid"].as_u64(),
        lg["client_tid"].as_u64(),
    );
    let mut wrong = 0;
    for (kind, p, t, exact) in &stream.events {
        let ok = match kind.as_str() {
            "connect" => Some(*p) == pid && Some(*t) == client_tid && *exact,
            "accept" => Some(*p) == pid && Some(*t) == server_tid && *exact,
            _ => true,
        };
        if !ok {
            wrong += 1;
        }
    }
    if wrong > 0 {
        failures.push(format!(
            "{wrong} connect/accept events named the wrong process or thread"
        ));
    }
    let mut kinds: std::collections::BTreeMap<&str, u64> = Default::default();
    for (kind, ..) in &stream.events {
        *kinds.entry(kind.as_str()).or_default() += 1;
    }
    println!(
        "# {connections} connections at {:.0}/s: {printed} events printed ({kinds:?}), {lost} lost and {skipped} skipped runs, all reported",
        lg["rate"].as_f64().unwrap_or(0.0)
    );
    failures
}

/// 20,000 connections as fast as the machine makes them, with the default
/// settings and with a deliberately tiny ring buffer: either way every event is
/// printed or counted as lost.
pub fn storm(portwatch: &str, loadgen: &str, mode: &str) -> Result<Vec<String>> {
    let mut failures = Vec::new();
    for (label, extra) in [
        ("default settings", vec![]),
        (
            "4 KiB ring buffer",
            vec!["--ringbuf-size".to_string(), "4096".to_string()],
        ),
    ] {
        let port = unused_port("127.0.0.1".parse()?)?;
        let mut args = vec![
            "--attach".into(),
            mode.into(),
            "--port".into(),
            port.to_string(),
        ];
        args.extend(extra);
        let run = start(portwatch, &args)?;
        let lg = load(loadgen, 20_000, port)?;
        let (stream, counts) = finish(run)?;
        let f = account(&stream, counts, &lg, 20_000);
        if label.starts_with('4') && counts.1 == 0 {
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
pub fn soak(portwatch: &str, loadgen: &str, mode: &str) -> Result<Vec<String>> {
    const N: u64 = 100_000;
    let port = unused_port("127.0.0.1".parse()?)?;
    let run = start(
        portwatch,
        &[
            "--attach".into(),
            mode.into(),
            "--port".into(),
            port.to_string(),
            "--stats".into(),
            "1".into(),
        ],
    )?;
    let lg = load(loadgen, N, port)?;
    // Let two more stats records come after the load.
    thread::sleep(Duration::from_millis(2500));
    let (stream, counts) = finish(run)?;
    let mut failures = account(&stream, counts, &lg, N);
    let rss: Vec<u64> = stream
        .stats
        .iter()
        .filter_map(|s| s["rss_kb"].as_u64())
        .collect();
    let socks: Vec<u64> = stream
        .stats
        .iter()
        .filter_map(|s| s["socket_map_entries"].as_u64())
        .collect();
    println!("# soak: RSS samples (kB) {rss:?}; kernel socket map entries {socks:?}");
    if rss.len() < 3 {
        failures.push(format!("only {} stats records", rss.len()));
        return Ok(failures);
    }
    let first = rss[0];
    let peak = *rss.iter().max().unwrap();
    if peak > first + 4096 {
        failures.push(format!(
            "RSS grew from {first} kB to {peak} kB over {N} connections"
        ));
    }
    match socks.last() {
        Some(n) if *n <= 16 => {}
        other => failures.push(format!(
            "{other:?} sockets still tracked in the kernel after the load"
        )),
    }
    if stream
        .stats
        .last()
        .and_then(|s| s["process_cache_entries"].as_u64())
        .unwrap_or(u64::MAX)
        > 4096
    {
        failures.push("process cache above its bound".into());
    }
    Ok(failures)
}
