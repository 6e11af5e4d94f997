//! portwatch tracing with JSON output, every event kept as it arrives: what the
//! scenarios compare with their ground truth.
use std::{
    io::{BufRead, BufReader},
    process::ChildStdout,
    sync::{Arc, Mutex},
    thread,
    time::{Duration, Instant},
};

use anyhow::{bail, Result};
use nix::sys::signal::Signal;
use serde_json::Value;

use super::{
    launch::{Launch, Running, Stopped},
    stderr::Attached,
};

pub struct Tracer {
    running: Running<()>,
    stdout: Arc<Mutex<Collected>>,
}

/// portwatch's stdout so far.
#[derive(Default)]
struct Collected {
    events: Vec<Value>,
    /// Lines that are not JSON, with serde_json's reason.
    not_json: Vec<String>,
}

fn collect(stdout: ChildStdout, collected: &Mutex<Collected>) {
    for line in BufReader::new(stdout).lines().map_while(Result::ok) {
        let mut collected = collected.lock().unwrap();
        match serde_json::from_str::<Value>(&line) {
            Ok(v) => collected.events.push(v),
            Err(e) => collected.not_json.push(format!("{line} ({e})")),
        }
    }
}

impl Tracer {
    /// Start `launch` (see [`Launch::trace`]) with `--format json`, and keep its
    /// events.
    pub fn start(launch: Launch) -> Result<Tracer> {
        let stdout = Arc::new(Mutex::new(Collected::default()));
        let kept = stdout.clone();
        let running = launch
            .args(["--format", "json"])
            .start(move |pipe| collect(pipe, &kept))?;
        Ok(Tracer { running, stdout })
    }

    /// The attach mode every event must name.
    pub fn mode(&self) -> &str {
        &self.attached().mode
    }

    pub fn attached(&self) -> &Attached {
        self.running.attached()
    }

    /// portwatch's pid.
    pub fn pid(&self) -> u32 {
        self.running.pid()
    }

    /// What portwatch wrote on stderr so far.
    pub fn stderr(&self) -> crate::harness::stderr::Stderr {
        self.running.stderr()
    }

    pub fn events(&self) -> Vec<Value> {
        self.stdout.lock().unwrap().events.clone()
    }

    /// The lines printed so far that are not JSON (each with the reason).
    pub fn not_json(&self) -> Vec<String> {
        self.stdout.lock().unwrap().not_json.clone()
    }

    /// Wait until `done` holds for the events seen so far, or the timeout passes.
    pub fn wait_for(&self, timeout: Duration, done: impl Fn(&[Value]) -> bool) -> Vec<Value> {
        let start = Instant::now();
        loop {
            let events = self.events();
            if done(&events) || start.elapsed() > timeout {
                return events;
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGINT, then wait for exit; every line printed must have been JSON.
    pub fn stop(self) -> Result<Stopped<()>> {
        self.stop_with(Signal::SIGINT)
    }

    /// SIGINT, and every event printed, those of the exit included.
    pub fn stop_with_events(self) -> Result<(Stopped<()>, Vec<Value>)> {
        let stdout = self.stdout.clone();
        let stopped = self.stop()?;
        let events = stdout.lock().unwrap().events.clone();
        Ok((stopped, events))
    }

    pub fn stop_with(self, signal: Signal) -> Result<Stopped<()>> {
        let stopped = self.running.stop_with(signal)?;
        let not_json = self.stdout.lock().unwrap().not_json.clone();
        if !not_json.is_empty() {
            bail!("portwatch printed lines that are not JSON: {not_json:?}");
        }
        Ok(stopped)
    }
}
