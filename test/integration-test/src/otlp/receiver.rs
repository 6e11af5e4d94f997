//! The OTLP receiver the tests run (`test/otlp-receiver/receiver.py`, decoding
//! with OpenTelemetry's own protobuf definitions), and reading what it wrote.
use std::{
    io::{BufRead, BufReader},
    path::Path,
    process::{Child, Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};
use serde_json::Value;

/// The receiver, a Python process writing one JSON line per record to `out`.
pub struct Receiver {
    child: Child,
    pub port: u16,
}

fn var(name: &str) -> Result<String> {
    std::env::var(name).with_context(|| {
        format!("{name} is not set: `cargo xtask test` installs the OTLP receiver and sets it")
    })
}

impl Receiver {
    pub fn start(out: &Path, port: u16) -> Result<Receiver> {
        let mut child = Command::new(var("PORTWATCH_TEST_PYTHON")?)
            .arg(var("PORTWATCH_TEST_OTLP_RECEIVER")?)
            .arg("--out")
            .arg(out)
            .args(["--port", &port.to_string()])
            .stdout(Stdio::piped())
            .spawn()
            .context("starting the OTLP receiver")?;
        let mut line = String::new();
        BufReader::new(child.stdout.take().context("receiver stdout")?).read_line(&mut line)?;
        let port = line
            .strip_prefix("listening ")
            .and_then(|p| p.trim().parse().ok())
            .with_context(|| format!("the receiver said {line:?}, not `listening PORT`"))?;
        Ok(Receiver { child, port })
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// SIGTERM and wait: requests being handled are answered first.
    pub fn stop(mut self) -> Result<()> {
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        )?;
        let status = self.child.wait()?;
        if !status.success() {
            bail!("the receiver exited with {status}");
        }
        Ok(())
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Every record the receiver wrote.
pub fn records(out: &Path) -> Result<Vec<Value>> {
    let text = std::fs::read_to_string(out).unwrap_or_default();
    text.lines()
        .map(|l| serde_json::from_str(l).with_context(|| format!("receiver line {l}")))
        .collect()
}

pub fn seq(record: &Value) -> u64 {
    record["attributes"]["portwatch.sequence"]
        .as_u64()
        .unwrap_or(0)
}

/// The closing stderr line's counts: delivered, then each dropped count.
pub fn delivery_line(stderr: &crate::harness::stderr::Stderr) -> Result<Vec<u64>> {
    let line = stderr
        .lines()
        .iter()
        .find(|l| l.starts_with("portwatch: otlp: ") && l.contains("records delivered"))
        .with_context(|| format!("no otlp delivery line on stderr: {stderr}"))?;
    Ok(line
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|n| n.parse().ok())
        .collect())
}

/// Poll the receiver's file until `done` holds or `timeout` passes.
pub fn wait_records(out: &Path, timeout: Duration, done: impl Fn(&[Value]) -> bool) -> Vec<Value> {
    let start = Instant::now();
    loop {
        let r = records(out).unwrap_or_default();
        if done(&r) || start.elapsed() > timeout {
            return r;
        }
        thread::sleep(Duration::from_millis(100));
    }
}
