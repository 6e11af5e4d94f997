//! The Prometheus server the check runs: started on a config scraping portwatch
//! every second, asked through its HTTP query API, stopped.
use std::{
    collections::BTreeMap,
    fmt::Write as _,
    net::SocketAddr,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};
use serde_json::Value;

use super::{READY_WITHIN, SCRAPED_WITHIN};
use crate::harness::{helpers::LOOPBACK, http::get as http_get};

/// A Prometheus server on 127.0.0.1, scraping portwatch's metrics every second, from a
/// configuration and storage in a temporary directory (removed, and the server
/// killed, when dropped).
pub(super) struct Prometheus {
    child: Child,
    dir: PathBuf,
    web: SocketAddr,
}

impl Prometheus {
    pub(super) fn start(binary: &Path, target: SocketAddr, web_port: u16) -> Result<Prometheus> {
        let dir = crate::harness::scratch::fresh_dir("prometheus")?;
        let config = dir.join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n\
                 scrape_configs:\n  - job_name: portwatch\n    static_configs:\n      - targets: ['{target}']\n"
            ),
        )?;
        let web = SocketAddr::new(LOOPBACK, web_port);
        let log = std::fs::File::create(dir.join("prometheus.log"))?;
        let child = Command::new(binary)
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address={web}"))
            .current_dir(&dir)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {}", binary.display()))?;
        let mut prometheus = Prometheus { child, dir, web };
        let deadline = Instant::now() + READY_WITHIN;
        loop {
            if let Some(status) = prometheus.child.try_wait()? {
                bail!(
                    "Prometheus exited ({status}) before it was ready: {}",
                    prometheus.log()
                );
            }
            if matches!(http_get(web, "/-/ready"), Ok((200, _))) {
                return Ok(prometheus);
            }
            if Instant::now() > deadline {
                bail!(
                    "Prometheus was not ready within {} s: {}",
                    READY_WITHIN.as_secs(),
                    prometheus.log()
                );
            }
            thread::sleep(Duration::from_millis(100));
        }
    }

    /// The end of the server's log.
    fn log(&self) -> String {
        let text = std::fs::read_to_string(self.dir.join("prometheus.log")).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(15)..].join("\n")
    }

    /// An instant query's series: their labels and values.
    pub(super) fn query(&self, query: &str) -> Result<Vec<(BTreeMap<String, String>, f64)>> {
        let (status, body) = http_get(
            self.web,
            &format!("/api/v1/query?query={}", percent_encoded(query)),
        )?;
        let v: Value = serde_json::from_str(&body)
            .with_context(|| format!("Prometheus' answer to {query} (HTTP {status}): {body}"))?;
        if status != 200 || v["status"] != "success" {
            bail!("Prometheus' answer to {query}: HTTP {status}: {body}");
        }
        let result = v["data"]["result"]
            .as_array()
            .with_context(|| format!("no result in Prometheus' answer to {query}: {body}"))?;
        result
            .iter()
            .map(|series| {
                let labels = series["metric"]
                    .as_object()
                    .context("a series without labels")?
                    .iter()
                    .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
                    .collect();
                let value = series["value"][1]
                    .as_str()
                    .and_then(|s| s.parse().ok())
                    .with_context(|| format!("a series without a value: {series}"))?;
                Ok((labels, value))
            })
            .collect()
    }

    /// Poll `compare` until it finds no difference or the time is up; the last
    /// differences, with what Prometheus says of its scrapes when any is left.
    pub(super) fn until_matched(
        &self,
        compare: impl Fn(&Prometheus) -> Result<Vec<String>>,
    ) -> Vec<String> {
        let start = Instant::now();
        loop {
            let failures = compare(self).unwrap_or_else(|e| vec![format!("{e:#}")]);
            if failures.is_empty() {
                return failures;
            }
            if start.elapsed() > SCRAPED_WITHIN {
                let mut failures = failures;
                failures.push(format!(
                    "(after {} s; Prometheus' scrape target: {})",
                    SCRAPED_WITHIN.as_secs(),
                    self.target_health()
                ));
                return failures;
            }
            thread::sleep(Duration::from_millis(500));
        }
    }

    /// The scrape target's health and last error, as Prometheus reports them.
    fn target_health(&self) -> String {
        let Ok((_, body)) = http_get(self.web, "/api/v1/targets") else {
            return "unknown".into();
        };
        let v: Value = serde_json::from_str(&body).unwrap_or_default();
        match v["data"]["activeTargets"].as_array().map(Vec::as_slice) {
            Some([t]) => format!(
                "health {}, last error {:?}",
                t["health"].as_str().unwrap_or("?"),
                t["lastError"].as_str().unwrap_or("?")
            ),
            _ => body,
        }
    }

    /// SIGTERM, then SIGKILL if it has not exited within 10 s; the directory removed.
    pub(super) fn stop(mut self) {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if !matches!(self.child.try_wait(), Ok(None)) {
                break;
            }
            thread::sleep(Duration::from_millis(50));
        }
        // Drop kills it if it is still there.
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A query string's value, percent-encoded.
fn percent_encoded(text: &str) -> String {
    let mut out = String::new();
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}
