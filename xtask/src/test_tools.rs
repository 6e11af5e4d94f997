//! The tools the integration suite's export checks run against on this machine,
//! installed when missing (and quickly found when not): a real Prometheus server
//! (Debian's `prometheus`), and a Python virtualenv with OpenTelemetry's protobuf
//! definitions for the OTLP receiver (`test/otlp-receiver/receiver.py`); and
//! what the service checks run (setpriv, systemd-analyze, strace). The suite is
//! told where the first two are through environment variables.
use std::{
    path::{Path, PathBuf},
    process::Command,
    thread,
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};

use crate::util;

/// Where Debian's `prometheus` package puts the server.
const PROMETHEUS: &str = "/usr/bin/prometheus";
/// OpenTelemetry's protobuf definitions, pinned.
const OTLP_PROTO: &str = "opentelemetry-proto==1.45.2";
/// What the receiver imports: present means the venv is ready.
const OTLP_MODULE: &str = "opentelemetry.proto.collector.logs.v1.logs_service_pb2";

/// Where the tools are, for the integration test.
pub struct TestTools {
    pub python: PathBuf,
    pub otlp_receiver: PathBuf,
    pub prometheus: PathBuf,
}

impl TestTools {
    /// The environment variables that tell the integration test where they are.
    pub fn env(&self) -> [(&'static str, &Path); 3] {
        [
            ("PORTWATCH_TEST_PYTHON", &self.python),
            ("PORTWATCH_TEST_OTLP_RECEIVER", &self.otlp_receiver),
            ("PORTWATCH_TEST_PROMETHEUS", &self.prometheus),
        ]
    }
}

/// Install what is missing; fail, saying what, if something cannot be.
pub fn ensure() -> Result<TestTools> {
    let root = util::workspace_root();
    let otlp_receiver = root.join("test/otlp-receiver/receiver.py");
    if !otlp_receiver.is_file() {
        bail!("the OTLP receiver {} is missing", otlp_receiver.display());
    }
    let prometheus = ensure_prometheus().context("installing Prometheus for the tests")?;
    let python = ensure_venv(&root.join("target/test-tools/venv"))
        .context("setting up the tests' Python virtualenv")?;
    ensure_service_tools().context("installing the service checks' tools")?;
    Ok(TestTools {
        python,
        otlp_receiver,
        prometheus,
    })
}

/// What the service checks run: util-linux `setpriv` (portwatch with exactly
/// the unit's capabilities), `systemd-analyze` (the unit read by systemd's own
/// parser; Debian's `systemd` package, which installs without being pid 1) and
/// `strace` (the system calls portwatch makes, against the unit's filter).
fn ensure_service_tools() -> Result<()> {
    let missing: Vec<&str> = [
        ("setpriv", "util-linux"),
        ("systemd-analyze", "systemd"),
        ("strace", "strace"),
    ]
    .into_iter()
    .filter(|(program, _)| util::which(program).is_none())
    .map(|(_, package)| package)
    .collect();
    if missing.is_empty() {
        return Ok(());
    }
    eprintln!(
        "xtask: installing {} for the service checks",
        missing.join(", ")
    );
    util::apt_install(&missing)
}

/// The pids of the processes named `prometheus`.
fn prometheus_pids() -> Vec<i32> {
    util::output(Command::new("pgrep").args(["-x", "prometheus"]))
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect()
}

/// Debian's `prometheus`, installed if missing. Installing the package may start
/// its service (on port 9090): whatever server the install started is stopped, so
/// that no stray daemon is left to disturb the tests.
fn ensure_prometheus() -> Result<PathBuf> {
    let path = PathBuf::from(PROMETHEUS);
    if path.is_file() {
        return Ok(path);
    }
    eprintln!("xtask: installing Prometheus (Debian's package) for the integration tests");
    let before = prometheus_pids();
    util::apt_install(&["prometheus"])?;
    if !path.is_file() {
        bail!("the prometheus package is installed but {PROMETHEUS} is not there");
    }
    // Under systemd the service would come back at boot, or on a restart.
    if Path::new("/run/systemd/system").is_dir() {
        let _ = util::output(Command::new("systemctl").args(["disable", "--now", "prometheus"]));
    }
    let started: Vec<i32> = prometheus_pids()
        .into_iter()
        .filter(|p| !before.contains(p))
        .collect();
    stop(&started)?;
    Ok(path)
}

/// SIGTERM the prometheus processes `pids`, then SIGKILL those still there after 10 s.
fn stop(pids: &[i32]) -> Result<()> {
    // Running, and not a zombie waiting to be reaped.
    let alive = |pid: i32| {
        std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
            stat.rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().next())
                .is_some_and(|state| state != "Z")
        })
    };
    for &pid in pids {
        eprintln!("xtask: stopping the Prometheus server (pid {pid}) the package install started");
        // SAFETY: kill has no memory preconditions.
        unsafe { libc::kill(pid, libc::SIGTERM) };
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while pids.iter().any(|&p| alive(p)) && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(100));
    }
    for &pid in pids.iter().filter(|&&p| alive(p)) {
        // SAFETY: as above.
        unsafe { libc::kill(pid, libc::SIGKILL) };
    }
    thread::sleep(Duration::from_millis(200));
    let left: Vec<i32> = pids.iter().copied().filter(|&p| alive(p)).collect();
    if !left.is_empty() {
        bail!("the Prometheus server the package install started is still running (pids {left:?})");
    }
    Ok(())
}

/// Whether `python` runs and can `import module` (an empty name: just runs).
fn python_imports(python: &Path, module: &str) -> bool {
    let code = if module.is_empty() {
        String::new()
    } else {
        format!("import {module}")
    };
    python.is_file()
        && Command::new(python)
            .args(["-c", &code])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
}

/// The virtualenv at `venv` with OpenTelemetry's protobuf definitions: its python.
fn ensure_venv(venv: &Path) -> Result<PathBuf> {
    let python = venv.join("bin/python");
    if python_imports(&python, OTLP_MODULE) {
        return Ok(python);
    }
    eprintln!(
        "xtask: setting up {} ({OTLP_PROTO}) for the integration tests",
        venv.display()
    );
    if !python_imports(&python, "") {
        // Missing, or left half-made (or its interpreter gone): made anew.
        if venv.exists() {
            std::fs::remove_dir_all(venv)
                .with_context(|| format!("removing the broken {}", venv.display()))?;
        }
        if util::which("python3").is_none() {
            util::apt_install(&["python3", "python3-venv"])?;
        }
        let create = || util::run(Command::new("python3").arg("-m").arg("venv").arg(venv));
        if let Err(e) = create() {
            eprintln!("xtask: python3 -m venv failed ({e:#}): installing python3-venv");
            let _ = std::fs::remove_dir_all(venv);
            util::apt_install(&["python3-venv"])?;
            create()?;
        }
    }
    util::run(Command::new(&python).args([
        "-m",
        "pip",
        "install",
        "--quiet",
        "--disable-pip-version-check",
        OTLP_PROTO,
    ]))?;
    if !python_imports(&python, OTLP_MODULE) {
        bail!(
            "{} cannot import {OTLP_MODULE} after installing {OTLP_PROTO}",
            python.display()
        );
    }
    Ok(python)
}
