//! The bench's tracer processes: started until their ready line, stopped
//! (SIGINT, then SIGKILL), and their CPU time and peak memory read from /proc.
use std::{
    fs,
    io::{BufRead, BufReader},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context, Result};

fn clock_ticks() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as f64
    } else {
        100.0
    }
}

/// utime + stime of a process, in seconds.
pub(super) fn cpu_seconds(pid: u32) -> f64 {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = stat.rfind(')').map(|i| &stat[i + 1..]).unwrap_or("");
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks: f64 = f.get(11).and_then(|v| v.parse().ok()).unwrap_or(0.0)
        + f.get(12).and_then(|v| v.parse().ok()).unwrap_or(0.0);
    ticks / clock_ticks()
}

pub(super) fn peak_rss_kb(pid: u32) -> Option<u64> {
    fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// Start a tracer and wait for its ready line. portwatch's events go to /dev/null;
/// bpftrace says it is attached on stdout, so its stdout is read and discarded.
pub(super) fn start(
    cmd: &[String],
    ready: &str,
) -> Result<(Child, f64, std::sync::mpsc::Receiver<String>)> {
    let t0 = Instant::now();
    let bpftrace = cmd[0] == "bpftrace";
    let mut child = Command::new(&cmd[0])
        .args(&cmd[1..])
        .stdout(if bpftrace {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("starting {}", cmd[0]))?;
    let (tx, rx) = std::sync::mpsc::channel();
    let err = BufReader::new(child.stderr.take().unwrap());
    let tx2 = tx.clone();
    std::thread::spawn(move || {
        for line in err.lines().map_while(Result::ok) {
            let _ = tx2.send(line);
        }
    });
    if let Some(out) = child.stdout.take() {
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                if line.starts_with("Attaching") || line.contains("Lost") {
                    let _ = tx.send(line);
                }
            }
        });
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let line = rx
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .with_context(|| format!("{} did not attach", cmd[0]))?;
        if line.contains(ready) {
            return Ok((child, t0.elapsed().as_secs_f64() * 1000.0, rx));
        }
    }
}

/// SIGINT, and SIGKILL if the tracer has not exited 10 s later (bpftrace sometimes
/// hangs on SIGINT here).
pub(super) fn stop(child: &mut Child, name: &str) {
    let _ = nix_kill(child.id(), libc::SIGINT);
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    eprintln!(
        "xtask: bench: tracer {} ({name}) ignored SIGINT for 10 s: killed",
        child.id()
    );
    let _ = child.kill();
    let _ = child.wait();
}

fn nix_kill(pid: u32, signal: i32) -> i32 {
    // SAFETY: kill has no memory-safety preconditions.
    unsafe { libc::kill(pid as i32, signal) }
}
