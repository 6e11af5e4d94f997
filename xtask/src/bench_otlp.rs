//! The OTLP row of `cargo xtask bench`: portwatch sending every event to a local
//! OTLP/HTTP receiver (the test suite's, counting records without writing them,
//! so that it keeps up), beside its JSON output to /dev/null.
use std::{
    io::{BufRead, BufReader},
    path::PathBuf,
    process::{Child, Command, Stdio},
};

use anyhow::{Context, Result};

use crate::{test_tools, util};

/// The receiver, running for the whole benchmark.
pub struct Receiver {
    child: Child,
    pub url: String,
    count_file: PathBuf,
}

impl Receiver {
    pub fn start() -> Result<Receiver> {
        let tools = test_tools::ensure()?;
        let count_file = util::workspace_root().join("target/bench/otlp-received");
        let _ = std::fs::remove_file(&count_file);
        let mut child = Command::new(&tools.python)
            .arg(&tools.otlp_receiver)
            .arg("--out")
            .arg(&count_file)
            .args(["--port", "0", "--count-only"])
            .stdout(Stdio::piped())
            .spawn()
            .context("starting the OTLP receiver")?;
        let mut line = String::new();
        BufReader::new(child.stdout.take().context("receiver stdout")?).read_line(&mut line)?;
        let port: u16 = line
            .strip_prefix("listening ")
            .and_then(|p| p.trim().parse().ok())
            .with_context(|| format!("the OTLP receiver said {line:?}"))?;
        Ok(Receiver {
            child,
            url: format!("http://127.0.0.1:{port}"),
            count_file,
        })
    }

    /// Stop it; the records it received in all.
    pub fn finish(mut self) -> Result<u64> {
        // SAFETY: kill has no memory preconditions.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        self.child.wait()?;
        let text = std::fs::read_to_string(&self.count_file)?;
        text.trim().parse().context("the receiver's count")
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// From portwatch's stderr: the records it delivered and those it dropped
/// (`portwatch: otlp: N records delivered, M dropped (...)`).
pub fn delivery(said: &[String]) -> Option<(u64, u64)> {
    let line = said
        .iter()
        .find(|l| l.contains("otlp: ") && l.contains("records delivered"))?;
    let mut numbers = line
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|n| n.parse::<u64>().ok());
    Some((numbers.next()?, numbers.next()?))
}
