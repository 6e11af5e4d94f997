//! The price of the accept syscall tracepoints for the rest of the host: while any
//! syscall tracepoint is enabled, every syscall of every process takes the
//! kernel's slower path. Measured with a syscall-heavy load (getppid() in a loop),
//! with no tracer, with portwatch (tracepoint mode hooks accept()/accept4()), with
//! `--inexact-accept` (no syscall tracepoint), and with the BTF floor (for
//! comparison: an empty program on the state tracepoint, which syscalls never hit).
use std::{path::Path, process::Command};

use anyhow::{bail, Context, Result};

use super::{median, start, stop};

const CALLS: u64 = 5_000_000;

fn rate(loadgen: &Path) -> Result<f64> {
    let out = Command::new(loadgen)
        .args(["--syscalls", &CALLS.to_string()])
        .output()?;
    if !out.status.success() {
        bail!("loadgen failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    v["rate"].as_f64().context("loadgen printed no rate")
}

/// The table, in markdown.
pub fn measure(portwatch: &Path, loadgen: &Path, rounds: usize) -> Result<String> {
    let pw = portwatch.display().to_string();
    let configs: [(&str, Option<Vec<&str>>); 4] = [
        ("no tracer", None),
        (
            "empty program, BTF tracepoint",
            Some(vec![&pw, "--no-snapshot", "--bench-floor", "btf"]),
        ),
        (
            "portwatch json (accept syscall tracepoints)",
            Some(vec![&pw, "--no-snapshot", "--format", "json"]),
        ),
        (
            "portwatch json --inexact-accept",
            Some(vec![
                &pw,
                "--no-snapshot",
                "--format",
                "json",
                "--inexact-accept",
            ]),
        ),
    ];
    let mut rates: Vec<Vec<f64>> = vec![Vec::new(); configs.len()];
    for round in 1..=rounds {
        eprintln!("xtask: bench: syscall load, round {round} of {rounds}");
        for ((_, cmd), r) in configs.iter().zip(rates.iter_mut()) {
            let tracer = match cmd {
                Some(cmd) => {
                    let cmd: Vec<String> = cmd.iter().map(|s| s.to_string()).collect();
                    Some(start(&cmd, "attached")?.0)
                }
                None => None,
            };
            rate(loadgen)?; // warm-up
            r.push(rate(loadgen)?);
            if let Some(mut child) = tracer {
                stop(&mut child, "syscall load");
            }
        }
    }
    let base = median(rates[0].clone());
    let mut s = format!(
        "\nSyscall-heavy load: {CALLS} getppid() calls by one thread; {rounds} rounds, median rate.\n\n| configuration | syscalls/s | rate vs no tracer | cost |\n| --- | ---: | ---: | ---: |\n"
    );
    for ((name, _), r) in configs.iter().zip(rates) {
        let m = median(r);
        s.push_str(&format!(
            "| {name} | {m:.0} | {:.2} | {:.1}% |\n",
            m / base,
            (1.0 - m / base) * 100.0
        ));
    }
    Ok(s)
}
