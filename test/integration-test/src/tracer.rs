//! The portwatch process under test: started with `--format json`, its events
//! collected as they arrive, stopped with SIGINT.
use std::{
    io::{BufRead, BufReader},
    process::{Child, Command, ExitStatus, Stdio},
    sync::{mpsc, Arc, Mutex},
    thread,
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};
use serde_json::Value;

pub struct Tracer {
    /// The attach mode every event must name.
    pub mode: String,
    child: Child,
    events: Arc<Mutex<Vec<Value>>>,
    stderr: Arc<Mutex<Vec<String>>>,
    readers: Vec<thread::JoinHandle<()>>,
}

impl Tracer {
    /// Start portwatch with `--format json` and `extra` arguments, and wait for its
    /// `attached` line, which must name `mode`.
    pub fn start(portwatch: &str, extra: &[String], mode: &str) -> Result<Tracer> {
        let mut child = Command::new(portwatch)
            .args(["--format", "json"])
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("starting {portwatch}"))?;
        let events = Arc::new(Mutex::new(Vec::new()));
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let (attached_tx, attached_rx) = mpsc::channel();
        let out = child.stdout.take().unwrap();
        let ev = events.clone();
        let r1 = thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                match serde_json::from_str::<Value>(&line) {
                    Ok(v) => ev.lock().unwrap().push(v),
                    Err(e) => panic!("portwatch printed a line that is not JSON ({e}): {line}"),
                }
            }
        });
        let err = child.stderr.take().unwrap();
        let se = stderr.clone();
        let r2 = thread::spawn(move || {
            for line in BufReader::new(err).lines().map_while(Result::ok) {
                if line.contains("attached") {
                    let _ = attached_tx.send(line.clone());
                }
                se.lock().unwrap().push(line);
            }
        });
        let mut tracer = Tracer {
            mode: mode.to_string(),
            child,
            events,
            stderr,
            readers: vec![r1, r2],
        };
        match attached_rx.recv_timeout(Duration::from_secs(60)) {
            Ok(line) if line.contains(&format!("(mode {mode})")) => {
                println!("# {line}");
                Ok(tracer)
            }
            Ok(line) => bail!("portwatch attached in another mode than {mode}: {line}"),
            Err(_) => {
                let _ = tracer.child.kill();
                let _ = tracer.child.wait();
                bail!(
                    "portwatch did not attach within 60 s; its stderr:\n{}",
                    tracer.stderr.lock().unwrap().join("\n")
                )
            }
        }
    }

    pub fn events(&self) -> Vec<Value> {
        self.events.lock().unwrap().clone()
    }

    pub fn stderr(&self) -> Vec<String> {
        self.stderr.lock().unwrap().clone()
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

    /// SIGINT, then wait for exit (at most 10 s).
    pub fn stop(self) -> Result<(ExitStatus, Vec<String>)> {
        self.stop_with(nix::sys::signal::Signal::SIGINT)
    }

    /// `signal`, then wait for exit (at most 10 s).
    pub fn stop_with(
        mut self,
        signal: nix::sys::signal::Signal,
    ) -> Result<(ExitStatus, Vec<String>)> {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        nix::sys::signal::kill(pid, signal)?;
        let start = Instant::now();
        let status = loop {
            if let Some(status) = self.child.try_wait()? {
                break status;
            }
            if start.elapsed() > Duration::from_secs(10) {
                let _ = self.child.kill();
                bail!("portwatch did not exit within 10 s of {signal}");
            }
            thread::sleep(Duration::from_millis(20));
        };
        for r in self.readers.drain(..) {
            let _ = r.join();
        }
        Ok((status, self.stderr()))
    }
}

impl Drop for Tracer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
