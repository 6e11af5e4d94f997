//! Failure paths: missing privileges, bad arguments, a reader that goes away,
//! tracefs not mounted, and SIGTERM, each checked against what the kernel and the
//! process table say afterwards.
use std::{
    io::{BufRead, BufReader},
    os::unix::fs::PermissionsExt,
    path::PathBuf,
    thread,
    time::Duration,
};

use anyhow::{Context, Result};
use nix::sys::signal::Signal;

use crate::{
    checks::Checks,
    harness::{
        helpers::{failing_connect, LOOPBACK},
        launch::{self, Launch},
        programs,
        stderr::{Line, Stderr},
        tracer::Tracer,
    },
};

/// Every failure path, run in `mode` where one is needed.
pub fn record_all(checks: &mut Checks, portwatch: &str, mode: &str) {
    checks.record(
        "without root: one line naming what is needed, exit 1",
        not_root(portwatch),
    );
    checks.record("bad arguments: exit 2, no panic", bad_arguments(portwatch));
    checks.record(
        "reader goes away (| head -1): exit 0, quiet, detached",
        stdout_closed(portwatch, mode),
    );
    checks.record(
        "SIGTERM: every program gone from the kernel's list",
        sigterm_detaches(portwatch, mode),
    );
    checks.record(
        "tracefs, debugfs, bpffs not mounted: portwatch mounts tracefs",
        tracefs_unmounted(portwatch, mode),
    );
}

fn no_panic(stderr: &Stderr) -> Vec<String> {
    if stderr.panicked() {
        vec![format!("panicked: {stderr}")]
    } else {
        vec![]
    }
}

/// A copy of portwatch an unprivileged user can run, in a 0755 directory of its
/// own (the checkout may sit in a directory only root may enter: a fresh `mktemp
/// -d` clone, for one): the directory and the copy.
pub fn reachable_copy(portwatch: &str, name: &str) -> Result<(PathBuf, PathBuf)> {
    let dir = std::env::temp_dir().join(format!("portwatch-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755))?;
    let copy = dir.join("portwatch");
    std::fs::copy(portwatch, &copy)?;
    std::fs::set_permissions(&copy, std::fs::Permissions::from_mode(0o755))?;
    Ok((dir, copy))
}

/// As an unprivileged user: one error line naming what is needed, exit 1.
fn not_root(portwatch: &str) -> Result<Vec<String>> {
    let (dir, copy) = reachable_copy(portwatch, "not-root")?;
    let out = Launch::new(copy.to_str().context("temporary path")?)
        .args(["--format", "json"])
        .run_as(65534, 65534)
        .run();
    let _ = std::fs::remove_dir_all(&dir);
    let out = out?;
    let mut failures = no_panic(&out.stderr);
    if out.status.code() != Some(1) {
        failures.push(format!("exit {:?}, expected 1", out.status.code()));
    }
    match out.stderr.single_line() {
        Some(Line::Error(m)) if m.contains("root") && m.contains("CAP_BPF and CAP_PERFMON") => {}
        _ => failures.push(format!(
            "expected one error line naming root / CAP_BPF and CAP_PERFMON, got {}",
            out.stderr
        )),
    }
    Ok(failures)
}

/// Usage errors: an error message, exit 2, never a panic.
fn bad_arguments(portwatch: &str) -> Result<Vec<String>> {
    let mut failures = Vec::new();
    for args in [
        &["--port", "70000"][..],
        &["--ringbuf-size", "1000"],
        &["--attach", "uprobe"],
        &["--pid", "abc"],
        &["--no-such-flag"],
        &["explain", "x"],
        &["explain", "53/sctp"],
        &["--otlp-buffer", "0"],
        &["--metrics", "not-an-address"],
        &["-4", "-6"],
    ] {
        let out = Launch::new(portwatch).args(args).run()?;
        failures.extend(no_panic(&out.stderr));
        if out.status.code() != Some(2) || out.stderr.errors()?.is_empty() {
            failures.push(format!(
                "{args:?}: exit {:?}, stderr {}",
                out.status.code(),
                out.stderr
            ));
        }
    }
    Ok(failures)
}

/// A connect nobody answers, for portwatch to print something.
fn poke() {
    let _ = failing_connect("refused", (LOOPBACK, 1).into(), "pw-poke");
}

/// `portwatch --format json | head -1`: when the reader goes away portwatch exits 0
/// quietly, and detaches.
fn stdout_closed(portwatch: &str, mode: &str) -> Result<Vec<String>> {
    let before = programs::ids()?;
    let mut running = Launch::trace(portwatch, mode)
        .args(["--format", "json", "--no-snapshot", "--wakeup-events", "1"])
        // Read one line, then go away.
        .start(|stdout| {
            let mut first = String::new();
            let _ = BufReader::new(stdout).read_line(&mut first);
            first
        })?;
    // Traffic until one line has come out.
    for _ in 0..50 {
        poke();
        if running.stdout_read() {
            break;
        }
        thread::sleep(Duration::from_millis(100));
    }
    // More events: writing them fails with EPIPE.
    let mut failures = Vec::new();
    let (stopped, exited) = match running.wait_exit(Duration::from_secs(20), poke)? {
        Some(status) => (running.finished(status)?, true),
        None => {
            failures.push("still running 20 s after its reader went away".into());
            (running.stop_with(Signal::SIGKILL)?, false)
        }
    };
    if !stopped.stdout.starts_with('{') {
        failures.push("no JSON line came out".into());
    }
    let after = stopped.stderr.after_attached();
    failures.extend(no_panic(&after));
    if exited && !stopped.status.success() {
        failures.push(format!(
            "exit {} after its reader went away, expected 0",
            stopped.status
        ));
    }
    if after.mentions("error") {
        failures.push(format!("not quiet: {after}"));
    }
    failures.extend(programs::released(&before)?);
    Ok(failures)
}

/// SIGTERM: every program of this instance is gone from the kernel's list.
fn sigterm_detaches(portwatch: &str, mode: &str) -> Result<Vec<String>> {
    let before = programs::ids()?;
    let tracer = Tracer::start(Launch::trace(portwatch, mode).arg("--no-snapshot"))?;
    let mut failures = Vec::new();
    if programs::ids()?.difference(&before).next().is_none() {
        failures.push("no programs of this instance found in the kernel's list".into());
    }
    let stopped = tracer.stop_with(Signal::SIGTERM)?;
    if !stopped.status.success() {
        failures.push(format!("exit {} after SIGTERM", stopped.status));
    }
    failures.extend(programs::released(&before)?);
    Ok(failures)
}

/// Detach tracefs, debugfs and bpffs in a private mount namespace of the child.
fn unmount_tracing_filesystems() -> std::io::Result<()> {
    use nix::mount::{mount, umount2, MntFlags, MsFlags};
    nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNS)?;
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        None::<&str>,
    )?;
    for path in [
        "/sys/kernel/debug/tracing",
        "/sys/kernel/tracing",
        "/sys/kernel/debug",
        "/sys/fs/bpf",
    ] {
        let _ = umount2(path, MntFlags::MNT_DETACH);
    }
    if std::path::Path::new("/sys/kernel/tracing/events").exists() {
        return Err(std::io::Error::other("tracefs is still mounted"));
    }
    Ok(())
}

/// tracefs (and debugfs and bpffs) not mounted: portwatch mounts tracefs itself.
/// Run in a mount namespace of its own, so the host keeps its mounts.
fn tracefs_unmounted(portwatch: &str, mode: &str) -> Result<Vec<String>> {
    let launch = Launch::trace(portwatch, mode).args(["--format", "json", "--no-snapshot"]);
    // SAFETY: only async-signal-safe system calls between fork and exec.
    let launch = unsafe { launch.before_exec(unmount_tracing_filesystems) };
    let running = launch
        .start(launch::discard)
        .context("did not attach without tracefs mounted")?;
    let stopped = running.stop()?;
    if !stopped.status.success() {
        return Ok(vec![format!("exit {}", stopped.status)]);
    }
    Ok(vec![])
}
