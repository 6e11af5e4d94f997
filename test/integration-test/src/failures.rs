//! Failure paths: missing privileges, bad arguments, a reader that goes away,
//! tracefs not mounted, and SIGTERM, each checked against what the kernel and the
//! process table say afterwards.
use std::{
    collections::HashSet,
    io::{BufRead, BufReader},
    os::unix::{fs::PermissionsExt, process::CommandExt},
    process::{Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};

use crate::{scenarios::Helper, tracer::Tracer};

/// Ids of the BPF programs with portwatch's names loaded now.
pub fn our_program_ids() -> Result<HashSet<u32>> {
    let ours = crate::modes::PROGRAM_NAMES;
    aya::programs::loaded_programs()
        .filter_map(|p| match p {
            Ok(info) if ours.contains(&info.name_as_str().unwrap_or("")) => Some(Ok(info.id())),
            Ok(_) => None,
            Err(e) => Some(Err(anyhow::Error::from(e))),
        })
        .collect()
}

/// Every portwatch program loaded now that was not in `before` is released within
/// 5 s (the kernel frees programs asynchronously once their last fd is closed).
pub fn released(before: &HashSet<u32>) -> Result<Vec<String>> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let left: Vec<u32> = our_program_ids()?.difference(before).copied().collect();
        if left.is_empty() {
            return Ok(vec![]);
        }
        if Instant::now() > deadline {
            return Ok(vec![format!("programs still loaded: {left:?}")]);
        }
        thread::sleep(Duration::from_millis(100));
    }
}

fn no_panic(stderr: &str) -> Vec<String> {
    if stderr.contains("panicked") || stderr.contains("RUST_BACKTRACE") {
        vec![format!("panicked: {stderr}")]
    } else {
        vec![]
    }
}

/// As an unprivileged user: one line naming what is needed, exit 1.
pub fn not_root(portwatch: &str) -> Result<Vec<String>> {
    // A copy the unprivileged user can reach: the checkout may sit in a directory
    // only root may enter (a fresh `mktemp -d` clone, for one).
    let dir = std::env::temp_dir().join(format!("portwatch-not-root-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755))?;
    let copy = dir.join("portwatch");
    std::fs::copy(portwatch, &copy)?;
    std::fs::set_permissions(&copy, std::fs::Permissions::from_mode(0o755))?;
    let out = Command::new(&copy)
        .args(["--format", "json"])
        .uid(65534)
        .gid(65534)
        .output();
    let _ = std::fs::remove_dir_all(&dir);
    let out = out?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    let mut failures = no_panic(&stderr);
    if out.status.code() != Some(1) {
        failures.push(format!("exit {:?}, expected 1", out.status.code()));
    }
    let lines: Vec<&str> = stderr.lines().collect();
    if lines.len() != 1
        || !lines[0].contains("root")
        || !lines[0].contains("CAP_BPF and CAP_PERFMON")
    {
        failures.push(format!(
            "expected one line naming root / CAP_BPF and CAP_PERFMON, got {stderr:?}"
        ));
    }
    Ok(failures)
}

/// Usage errors: a message, exit 2, never a panic.
pub fn bad_arguments(portwatch: &str) -> Result<Vec<String>> {
    let mut failures = Vec::new();
    for args in [
        &["--port", "70000"][..],
        &["--ringbuf-size", "1000"],
        &["--attach", "uprobe"],
        &["--pid", "abc"],
        &["--no-such-flag"],
        &["explain", "x"],
        &["-4", "-6"],
    ] {
        let out = Command::new(portwatch).args(args).output()?;
        let stderr = String::from_utf8_lossy(&out.stderr);
        failures.extend(no_panic(&stderr));
        if out.status.code() != Some(2) || !stderr.contains("error") {
            failures.push(format!(
                "{args:?}: exit {:?}, stderr {stderr:?}",
                out.status.code()
            ));
        }
    }
    Ok(failures)
}

/// `portwatch --format json | head -1`: when the reader goes away portwatch exits 0
/// quietly, and detaches.
pub fn stdout_closed(portwatch: &str, mode: &str) -> Result<Vec<String>> {
    let before = our_program_ids()?;
    let mut child = Command::new(portwatch)
        .args([
            "--attach",
            mode,
            "--format",
            "json",
            "--no-snapshot",
            "--wakeup-events",
            "1",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    let mut err = BufReader::new(child.stderr.take().unwrap());
    let mut line = String::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !line.contains("attached") {
        line.clear();
        if err.read_line(&mut line)? == 0 || Instant::now() > deadline {
            bail!("portwatch did not attach");
        }
    }
    let mut out = BufReader::new(child.stdout.take().unwrap());
    // Traffic until one line has come out; then the reader goes away.
    let mut first = String::new();
    let reader = thread::spawn(move || {
        let _ = out.read_line(&mut first);
        first
    });
    let mut first_line = None;
    for _ in 0..50 {
        let _ = Helper::spawn(&["refused", "127.0.0.1", "1", "pw-poke"]).and_then(|h| h.finish());
        if reader.is_finished() {
            first_line = Some(reader.join().unwrap());
            break;
        }
        thread::sleep(Duration::from_millis(100));
    }
    let mut failures = Vec::new();
    if first_line.as_deref().is_none_or(|l| !l.starts_with('{')) {
        failures.push("no JSON line came out".into());
    }
    // More events: writing them fails with EPIPE.
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break Some(status);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            break None;
        }
        let _ = Helper::spawn(&["refused", "127.0.0.1", "1", "pw-poke"]).and_then(|h| h.finish());
        thread::sleep(Duration::from_millis(100));
    };
    let mut rest = String::new();
    let _ = std::io::Read::read_to_string(&mut err, &mut rest);
    failures.extend(no_panic(&rest));
    match status {
        Some(s) if s.success() => {}
        Some(s) => failures.push(format!("exit {s} after its reader went away, expected 0")),
        None => failures.push("still running 20 s after its reader went away".into()),
    }
    if rest.contains("error") {
        failures.push(format!("not quiet: {rest:?}"));
    }
    failures.extend(released(&before)?);
    Ok(failures)
}

/// SIGTERM: every program of this instance is gone from the kernel's list.
pub fn sigterm_detaches(portwatch: &str, mode: &str) -> Result<Vec<String>> {
    let before = our_program_ids()?;
    let tracer = Tracer::start(
        portwatch,
        &["--attach".into(), mode.into(), "--no-snapshot".into()],
        mode,
    )?;
    let running = our_program_ids()?;
    let mine: HashSet<u32> = running.difference(&before).copied().collect();
    let mut failures = Vec::new();
    if mine.is_empty() {
        failures.push("no programs of this instance found in the kernel's list".into());
    }
    let (status, _) = tracer.stop_with(nix::sys::signal::Signal::SIGTERM)?;
    if !status.success() {
        failures.push(format!("exit {status} after SIGTERM"));
    }
    failures.extend(released(&before)?);
    Ok(failures)
}

/// tracefs (and debugfs and bpffs) not mounted: portwatch mounts tracefs itself.
/// Run in a mount namespace of its own, so the host keeps its mounts.
pub fn tracefs_unmounted(portwatch: &str, mode: &str) -> Result<Vec<String>> {
    let mut cmd = Command::new(portwatch);
    cmd.args(["--attach", mode, "--format", "json", "--no-snapshot"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    // SAFETY: only async-signal-safe system calls between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
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
        });
    }
    let mut child = cmd
        .spawn()
        .context("starting portwatch in its own mount namespace")?;
    let err = BufReader::new(child.stderr.take().unwrap());
    let (tx, rx) = std::sync::mpsc::channel();
    thread::spawn(move || {
        for line in err.lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let mut failures = Vec::new();
    let mut said = Vec::new();
    let attached = loop {
        match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(line) => {
                let done = line.contains("attached") || line.contains("error");
                said.push(line.clone());
                if done {
                    break line.contains("attached");
                }
            }
            Err(_) => break false,
        }
    };
    if !attached {
        failures.push(format!("did not attach without tracefs mounted: {said:?}"));
    }
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGINT,
    )?;
    let status = child.wait()?;
    if !status.success() {
        failures.push(format!("exit {status}"));
    }
    Ok(failures)
}
