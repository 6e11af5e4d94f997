//! `cargo xtask bench`: connection-rate cost and tracer CPU of portwatch, side by
//! side in one run with no tracer, an empty program on the same tracepoint (the
//! kernel's own floor) and a bpftrace script printing the same events. Reported as
//! ratios, printed and written to target/bench/results.md. Never a pass/fail test.
use std::{
    fs,
    io::{BufRead, BufReader},
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};

use crate::{build, util};

#[path = "bench_syscalls.rs"]
mod syscalls;

#[path = "bench_history.rs"]
mod history;

#[path = "bench_baseline.rs"]
mod baseline;

#[path = "bench_otlp.rs"]
mod otlp;

#[path = "bench_udp.rs"]
mod udp;

#[path = "bench_process.rs"]
mod process;
use process::{cpu_seconds, peak_rss_kb, start, stop};

#[derive(clap::Args)]
pub struct BenchOptions {
    /// Connections per measured run.
    #[arg(long, default_value_t = 20_000)]
    pub connections: u64,
    /// Rounds: each measures every configuration once, in turn, so that drift in
    /// the machine's speed touches them all alike (the median rate is reported).
    #[arg(long, default_value_t = 5)]
    pub runs: usize,
    /// Connections in the history database the query latencies are measured on.
    #[arg(long, default_value_t = 1_000_000)]
    pub history_connections: u64,
}

/// The bpftrace peer: the same events portwatch prints (connection established
/// and closed), with pid, comm, states and ports.
const BPFTRACE_SCRIPT: &str = r#"tracepoint:sock:inet_sock_set_state /args->protocol == 6 && (args->newstate == 1 || args->newstate == 7 || args->newstate == 10)/ { printf("%d %s %d %d %d %d\n", pid, comm, args->oldstate, args->newstate, args->sport, args->dport); }"#;
/// A port no benchmark connection uses: with `--port` set to it, portwatch's
/// programs run in full but the kernel-side filter drops every event, which
/// measures what the kernel side costs without the ring buffer and the reader.
const KERNEL_ONLY_PORT: u16 = 1;

pub(crate) struct Config {
    pub name: &'static str,
    pub command: Option<Vec<String>>,
    /// stderr text that says it is attached.
    pub ready: &'static str,
}

/// The configurations measured, in table order: no tracer, the two floors (an
/// empty program on the classic and on the BTF tracepoint), bpftrace, then
/// portwatch's rows.
fn configs(portwatch: &Path, otlp_url: &str) -> Vec<Config> {
    let pw = |args: &[&str]| -> Option<Vec<String>> {
        let mut c = vec![portwatch.display().to_string(), "--no-snapshot".into()];
        c.extend(args.iter().map(|a| a.to_string()));
        Some(c)
    };
    let kernel_only = KERNEL_ONLY_PORT.to_string();
    let baseline_file = baseline::two_hundred_entries()
        .map(|p| p.display().to_string())
        .unwrap_or_default();
    let row = |name, command| Config {
        name,
        command,
        ready: "attached",
    };
    vec![
        Config {
            name: "no tracer",
            command: None,
            ready: "",
        },
        row(FLOOR_CLASSIC, pw(&["--bench-floor", "classic"])),
        row(FLOOR_BTF, pw(&["--bench-floor", "btf"])),
        Config {
            name: "bpftrace, same events",
            command: Some(vec!["bpftrace".into(), "-e".into(), BPFTRACE_SCRIPT.into()]),
            ready: "Attaching",
        },
        row(
            "portwatch, kernel side only",
            pw(&["--format", "json", "--port", &kernel_only]),
        ),
        row(
            "portwatch, kernel side only, LRU fallback",
            pw(&[
                "--format",
                "json",
                "--port",
                &kernel_only,
                "--socket-store",
                "lru",
            ]),
        ),
        row("portwatch table", pw(&["--format", "table"])),
        row("portwatch json", pw(&["--format", "json"])),
        row(
            "portwatch json --metrics",
            pw(&["--format", "json", "--metrics", "127.0.0.1:0"]),
        ),
        row(
            OTLP_ROW,
            pw(&["--format", "json", "--otlp-endpoint", otlp_url]),
        ),
        row(
            "portwatch json --baseline (200 entries)",
            pw(&["--format", "json", "--baseline", &baseline_file]),
        ),
        row(
            "portwatch json, LRU fallback (--socket-store lru)",
            pw(&["--format", "json", "--socket-store", "lru"]),
        ),
        Config {
            name: "portwatch json, reader at SCHED_IDLE (chrt --idle 0)",
            command: Some({
                let mut c: Vec<String> = ["chrt", "--idle", "0"].map(String::from).to_vec();
                c.extend(pw(&["--format", "json"]).unwrap_or_default());
                c
            }),
            ready: "attached",
        },
        row(
            "portwatch json --inexact-accept",
            pw(&["--format", "json", "--inexact-accept"]),
        ),
        Config {
            name: RECORD,
            command: pw(&[
                "record",
                "--db",
                &history::record_db().display().to_string(),
            ]),
            ready: "recording to",
        },
    ]
}

/// The OTLP row; its lost column counts the records the exporter dropped too.
const OTLP_ROW: &str =
    "portwatch json --otlp-endpoint (local receiver; lost includes OTLP records dropped)";

/// The recording row; its lost column counts events not stored too.
const RECORD: &str = "portwatch record (SQLite history; lost includes events not stored)";

const FLOOR_CLASSIC: &str = "empty program, classic tracepoint (floor)";
const FLOOR_BTF: &str = "empty program, BTF tracepoint (floor)";

#[derive(Default, Clone)]
struct Measured {
    rates: Vec<f64>,
    /// Tracer CPU over every measured run.
    cpu_seconds: f64,
    attach_ms_all: Vec<f64>,
    peak_rss_kb: Option<u64>,
    /// Over every measured run.
    lost: Option<u64>,
    /// OTLP records delivered, over every measured run.
    otlp_delivered: u64,
}

impl Measured {
    fn rate(&self) -> f64 {
        median(self.rates.clone())
    }

    fn attach_ms(&self) -> Option<f64> {
        (!self.attach_ms_all.is_empty()).then(|| median(self.attach_ms_all.clone()))
    }
}

fn loadgen_rate(loadgen: &Path, connections: u64) -> Result<f64> {
    let out = Command::new(loadgen)
        .args(["--connections", &connections.to_string()])
        .output()?;
    if !out.status.success() {
        bail!("loadgen failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let rate = text
        .split("\"rate\":")
        .nth(1)
        .and_then(|r| r.split([',', '}']).next())
        .and_then(|r| r.parse().ok())
        .context("loadgen printed no rate")?;
    Ok(rate)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// One round of one configuration: start the tracer, warm up, one measured run.
fn measure_once(config: &Config, loadgen: &Path, o: &BenchOptions, m: &mut Measured) -> Result<()> {
    let tracer = match &config.command {
        Some(cmd) => {
            let (child, attach_ms, rx) = start(cmd, config.ready)?;
            m.attach_ms_all.push(attach_ms);
            Some((child, rx))
        }
        None => None,
    };
    loadgen_rate(loadgen, o.connections / 4)?; // warm-up
    let cpu0 = tracer
        .as_ref()
        .map(|(c, _)| cpu_seconds(c.id()))
        .unwrap_or(0.0);
    m.rates.push(loadgen_rate(loadgen, o.connections)?);
    if let Some((mut child, rx)) = tracer {
        // Let the tracer catch up with what the kernel already queued.
        std::thread::sleep(Duration::from_millis(300));
        m.cpu_seconds += cpu_seconds(child.id()) - cpu0;
        m.peak_rss_kb = m.peak_rss_kb.max(peak_rss_kb(child.id()));
        stop(&mut child, config.name);
        let said: Vec<String> = rx.try_iter().collect();
        let lost = said.iter().find_map(|l| {
            let words: Vec<&str> = l.split([' ', ',', ';']).filter(|w| !w.is_empty()).collect();
            if l.contains("detached;") {
                let i = words.iter().position(|w| *w == "lost")?;
                words[i - 1].parse().ok()
            } else {
                // bpftrace: "Lost N events"
                let i = words.iter().position(|w| *w == "Lost")?;
                words.get(i + 1)?.parse().ok()
            }
        });
        let lost = match lost {
            Some(n) => Some(n),
            // bpftrace says nothing when it lost nothing.
            None if config.name.starts_with("bpftrace") => Some(0),
            None => None,
        };
        if let Some(n) = lost {
            *m.lost.get_or_insert(0) += n;
        }
        // `portwatch record`: "...; N events not stored (...)".
        let not_stored: u64 = said
            .iter()
            .filter_map(|l| {
                l.split("; ")
                    .find_map(|p| p.split_once(" events not stored"))
            })
            .filter_map(|(n, _)| n.trim().parse::<u64>().ok())
            .sum();
        if config.name == RECORD {
            *m.lost.get_or_insert(0) += not_stored;
        }
        if config.name == OTLP_ROW {
            let (delivered, dropped) = otlp::delivery(&said)
                .context("portwatch did not say what became of its OTLP records")?;
            m.otlp_delivered += delivered;
            *m.lost.get_or_insert(0) += dropped;
        }
    }
    Ok(())
}

/// Time from a connect on an idle system to portwatch's line for it.
fn first_event_ms(portwatch: &Path, loadgen: &Path) -> Result<f64> {
    let mut child = Command::new(portwatch)
        .args(["--format", "json", "--no-snapshot", "--comm", "loadgen"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    let mut err = BufReader::new(child.stderr.take().unwrap());
    let mut line = String::new();
    while !line.contains("attached") {
        line.clear();
        if err.read_line(&mut line)? == 0 {
            bail!("portwatch ended before attaching");
        }
    }
    std::thread::sleep(Duration::from_millis(500));
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let t0 = Instant::now();
    loadgen_rate(loadgen, 1)?;
    let mut first = String::new();
    out.read_line(&mut first)?;
    let ms = t0.elapsed().as_secs_f64() * 1000.0;
    stop(&mut child, "first event");
    Ok(ms)
}

pub fn bench(o: &BenchOptions) -> Result<()> {
    if !util::is_root() {
        bail!("the benchmark loads eBPF programs: run `cargo xtask bench` as root");
    }
    let portwatch = build::build_all(&build::Options { release: true })?;
    util::run(util::cargo().current_dir(util::workspace_root()).args([
        "build",
        "--release",
        "--package",
        "loadgen",
    ]))?;
    let loadgen = util::workspace_root().join("target/release/loadgen");
    if std::env::var("PW_BENCH_ONLY").is_ok_and(|v| v == "udp") {
        return udp::only(&portwatch, &loadgen, o.runs);
    }
    if util::which("bpftrace").is_none() {
        util::apt_install(&["bpftrace"])?;
    }
    history::prepare()?;
    let receiver = otlp::Receiver::start()?;
    let configs = configs(&portwatch, &receiver.url);
    let mut results: Vec<(&str, Measured)> = configs
        .iter()
        .map(|c| (c.name, Measured::default()))
        .collect();
    for round in 1..=o.runs {
        eprintln!("xtask: bench: round {round} of {}", o.runs);
        for (c, (_, m)) in configs.iter().zip(results.iter_mut()) {
            measure_once(c, &loadgen, o, m).with_context(|| c.name.to_string())?;
        }
    }
    let first_event = first_event_ms(&portwatch, &loadgen)?;
    let received = receiver.finish()?;
    let mut report = render(&results, o, first_event);
    if let Some((_, m)) = results.iter().find(|(name, _)| *name == OTLP_ROW) {
        report.push_str(&format!(
            "OTLP row: portwatch said {} records delivered and {} dropped; the receiver counted {received}.\n",
            m.otlp_delivered,
            m.lost.unwrap_or(0)
        ));
    }
    report.push_str(&syscalls::measure(&portwatch, &loadgen, o.runs)?);
    report.push_str(&udp::measure(&portwatch, &loadgen, o.runs)?);
    report.push_str(&history::measure(&portwatch, o.history_connections)?);
    eprintln!("{report}");
    let dir = util::workspace_root().join("target/bench");
    fs::create_dir_all(&dir)?;
    let path: PathBuf = dir.join("results.md");
    fs::write(&path, &report)?;
    eprintln!("xtask: bench results written to {}", path.display());
    Ok(())
}

fn render(results: &[(&str, Measured)], o: &BenchOptions, first_event_ms: f64) -> String {
    let base = results[0].1.rate();
    let floor = results
        .iter()
        .find(|(name, _)| *name == FLOOR_BTF)
        .map_or(base, |(_, m)| m.rate());
    let events = 4.0 * (o.connections as f64) * (o.runs as f64) / 1000.0;
    let cpu_per_k = |m: &Measured| m.cpu_seconds * 1000.0 / events;
    let bpftrace_cpu = results
        .iter()
        .find(|(name, _)| name.starts_with("bpftrace"))
        .map_or(0.0, |(_, m)| cpu_per_k(m));
    let machine = format!(
        "{} CPUs, kernel {}",
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(0),
        util::output(Command::new("uname").arg("-r")).unwrap_or_default()
    );
    let mut s = format!(
        "Machine: {machine}. Loopback connect/accept/close by `loadgen` (server and client pinned to CPUs 0 and 1), {} connections per run; {} rounds, each measuring every configuration once in turn; median rate, CPU and losses summed over the rounds.\n\n",
        o.connections, o.runs
    );
    s.push_str("| configuration | conn/s | rate vs no tracer | cost (rate lost) | rate vs empty BTF program | tracer CPU ms per 1000 events | bpftrace CPU / this | lost | attached after | peak RSS |\n");
    s.push_str("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n");
    for (name, m) in results {
        let cpu = cpu_per_k(m);
        s.push_str(&format!(
            "| {name} | {:.0} | {:.2} | {:.1}% | {:.2} | {} | {} | {} | {} | {} |\n",
            m.rate(),
            m.rate() / base,
            (1.0 - m.rate() / base) * 100.0,
            m.rate() / floor,
            if m.attach_ms().is_some() && !name.contains("kernel side") {
                format!("{cpu:.2}")
            } else {
                "-".into()
            },
            if m.attach_ms().is_some()
                && cpu > 0.0
                && !name.starts_with("empty")
                && !name.contains("kernel side")
            {
                format!("{:.1}x", bpftrace_cpu / cpu)
            } else {
                "-".into()
            },
            m.lost.map(|l| l.to_string()).unwrap_or_else(|| "-".into()),
            m.attach_ms()
                .map(|a| format!("{a:.0} ms"))
                .unwrap_or_else(|| "-".into()),
            m.peak_rss_kb
                .map(|r| format!("{:.1} MB", r as f64 / 1024.0))
                .unwrap_or_else(|| "-".into()),
        ));
    }
    s.push_str(&format!(
        "\nportwatch, idle system: {first_event_ms:.1} ms from a connection to its JSON line (includes starting the load generator).\n"
    ));
    s
}
