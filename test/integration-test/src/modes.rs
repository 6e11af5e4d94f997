//! Which attach modes this kernel allows (asked of `portwatch doctor`), the suite
//! in each, and for the others, proof that asking for them fails cleanly.
use std::{
    process::{Command, Stdio},
    thread,
    time::Duration,
};

use anyhow::{bail, Context, Result};
use serde_json::Value;

use crate::{
    scenarios::{run_mode, Tally},
    tracer::Tracer,
};

pub const MODES: [&str; 3] = ["fentry", "kprobe", "tracepoint"];

/// The kernel's own names (truncated to 15 bytes) of every portwatch program, by
/// the mode that loads it.
const PROGRAMS: [(&str, &str); 6] = [
    ("fentry", "fentry_tcp_conn"),
    ("fentry", "fexit_inet_csk_"),
    ("kprobe", "kprobe_tcp_conn"),
    ("kprobe", "kretprobe_inet_"),
    ("tracepoint", "sys_exit_accept"),
    ("all", "inet_sock_set_s"),
];

/// Every portwatch program name as the kernel keeps it.
pub const PROGRAM_NAMES: [&str; 6] = [
    PROGRAMS[0].1,
    PROGRAMS[1].1,
    PROGRAMS[2].1,
    PROGRAMS[3].1,
    PROGRAMS[4].1,
    PROGRAMS[5].1,
];

/// Names of the BPF programs loaded in the kernel now.
fn loaded_program_names() -> Result<Vec<String>> {
    aya::programs::loaded_programs()
        .map(|p| {
            p.map(|info| info.name_as_str().unwrap_or("").to_string())
                .context("listing loaded BPF programs")
        })
        .collect()
}

/// Which of `mode`'s programs (or any mode's, for "any") are loaded now.
fn ours_loaded(mode: &str) -> Result<Vec<String>> {
    let names = loaded_program_names()?;
    Ok(PROGRAMS
        .iter()
        .filter(|(m, _)| *m == mode || mode == "any")
        .filter(|(_, n)| names.iter().any(|l| l == n))
        .map(|(_, n)| n.to_string())
        .collect())
}

/// `portwatch doctor --format json`: each mode, whether it loads, and why not.
pub fn doctor(portwatch: &str) -> Result<Vec<(String, bool, String)>> {
    let out = Command::new(portwatch)
        .args(["doctor", "--format", "json"])
        .output()
        .context("running portwatch doctor")?;
    if !out.status.success() {
        bail!(
            "portwatch doctor failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let v: Value = serde_json::from_slice(&out.stdout).context("doctor's JSON")?;
    Ok(v["modes"]
        .as_array()
        .context("doctor JSON has no modes")?
        .iter()
        .map(|m| {
            (
                m["mode"].as_str().unwrap_or("").to_string(),
                m["available"] == true,
                m["detail"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect())
}

/// Asking for a mode the kernel refuses: exit 1, one line naming the mode and the
/// kernel's reason, nothing printed on stdout, nothing left loaded.
fn refused_cleanly(portwatch: &str, mode: &str) -> Result<Vec<String>> {
    let before = crate::failures::our_program_ids()?;
    let out = Command::new(portwatch)
        .args(["--attach", mode, "--format", "json"])
        .stdin(Stdio::null())
        .output()?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    let mut failures = Vec::new();
    if out.status.code() != Some(1) {
        failures.push(format!("exit {:?}, expected 1", out.status.code()));
    }
    let lines: Vec<&str> = stderr.lines().collect();
    if lines.len() != 1 || !lines[0].contains(&format!("attach mode {mode} is not available")) {
        failures.push(format!(
            "stderr is not one line naming the mode: {stderr:?}"
        ));
    }
    if !out.stdout.is_empty() {
        failures.push("printed something on stdout".into());
    }
    failures.extend(crate::failures::released(&before)?);
    Ok(failures)
}

/// `--attach auto` must pick `first` and hold nothing of the modes it passed over.
fn auto_picks(portwatch: &str, first: &str, refused: &[String]) -> Result<Vec<String>> {
    let tracer = Tracer::start(portwatch, &["--attach".into(), "auto".into()], first)?;
    // The kernel frees programs asynchronously; give it a moment.
    thread::sleep(Duration::from_millis(300));
    let mut failures = Vec::new();
    for mode in refused {
        let left = ours_loaded(mode)?;
        if !left.is_empty() {
            failures.push(format!(
                "programs of refused mode {mode} still loaded: {left:?}"
            ));
        }
    }
    let running = ours_loaded(first)?;
    if first != "tracepoint" && running.len() != 2 {
        failures.push(format!(
            "mode {first} should have its 2 programs loaded, found {running:?}"
        ));
    }
    let (status, _) = tracer.stop()?;
    if !status.success() {
        failures.push(format!("exit {status} after SIGINT"));
    }
    Ok(failures)
}

/// Every mode: the suite where the kernel allows it, a clean refusal where not.
/// Prints one `RESULT` line per mode for the caller's table.
pub fn run_all_modes(portwatch: &str, loadgen: Option<&str>) -> Tally {
    let kernel = nix::sys::utsname::uname()
        .map(|u| u.release().to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut total = Tally::default();
    let modes = match doctor(portwatch) {
        Ok(m) => m,
        Err(e) => {
            total.record("portwatch doctor", Err(e));
            return total;
        }
    };
    let refused: Vec<String> = modes.iter().filter(|m| !m.1).map(|m| m.0.clone()).collect();
    for mode in MODES {
        let Some((_, available, detail)) = modes.iter().find(|m| m.0 == mode) else {
            total.record(
                &format!("doctor reports mode {mode}"),
                Ok(vec!["missing".into()]),
            );
            continue;
        };
        let tally = if *available {
            run_mode(portwatch, mode)
        } else {
            println!("# mode {mode} is not available here: {detail}");
            let mut t = Tally::default();
            t.record(
                &format!("[{mode}] refused cleanly when asked for"),
                refused_cleanly(portwatch, mode),
            );
            t
        };
        let outcome = match (*available, tally.failed) {
            (true, 0) => "pass",
            (false, 0) => "refused",
            _ => "FAIL",
        };
        println!(
            "RESULT kernel={kernel} mode={mode} outcome={outcome} passed={} failed={}",
            tally.passed, tally.failed
        );
        total.add(tally);
    }
    if let Some((first, _, _)) = modes.iter().find(|m| m.1) {
        use crate::failures;
        total.record(
            "without root: one line naming what is needed, exit 1",
            failures::not_root(portwatch),
        );
        total.record(
            "bad arguments: exit 2, no panic",
            failures::bad_arguments(portwatch),
        );
        total.record(
            "reader goes away (| head -1): exit 0, quiet, detached",
            failures::stdout_closed(portwatch, first),
        );
        total.record(
            "SIGTERM: every program gone from the kernel's list",
            failures::sigterm_detaches(portwatch, first),
        );
        total.record(
            "tracefs, debugfs, bpffs not mounted: portwatch mounts tracefs",
            failures::tracefs_unmounted(portwatch, first),
        );
        match loadgen {
            Some(lg) => {
                total.record(&format!("[{first}] storm: 20,000 connections, every event printed or counted lost"), crate::heavy::storm(portwatch, lg, first));
                total.record(&format!("[{first}] soak: 100,000 connections, kernel map emptied, RSS flat"), crate::heavy::soak(portwatch, lg, first));
            }
            None => println!("# storm and soak not run here: they run on the host's kernel (xtask passes --loadgen there)"),
        }
    }
    match modes.iter().find(|m| m.1) {
        Some((first, _, _)) => total.record(
            &format!("[auto] picks {first}, nothing of refused modes left loaded"),
            auto_picks(portwatch, first, &refused),
        ),
        None => total.record("some attach mode works", Ok(vec!["none does".into()])),
    }
    total
}
