//! Which attach modes this kernel allows (asked of `portwatch doctor`), the suite
//! in each, and for the others, proof that asking for them fails cleanly; then the
//! checks of no single mode. The result: one [`Group`] per mode and one for the
//! rest.
use std::{thread, time::Duration};

use anyhow::{bail, Context, Result};
use serde_json::Value;

use crate::{
    checks::Checks,
    failures,
    harness::{launch::Launch, programs, stderr::Line, tracer::Tracer},
    heavy,
    report::Group,
    scenarios::run_mode,
};

pub const MODES: [&str; 3] = ["fentry", "kprobe", "tracepoint"];

/// What `portwatch doctor` says of one attach mode.
struct Support {
    mode: String,
    available: bool,
    /// The kernel's reason when it is not.
    detail: String,
}

/// `portwatch doctor --format json`: each mode, whether it loads, and why not.
fn doctor(portwatch: &str) -> Result<Vec<Support>> {
    let out = Launch::new(portwatch)
        .args(["doctor", "--format", "json"])
        .run()?;
    if !out.status.success() {
        bail!("portwatch doctor failed: {}", out.stderr);
    }
    let v: Value = serde_json::from_slice(&out.stdout).context("doctor's JSON")?;
    Ok(v["modes"]
        .as_array()
        .context("doctor JSON has no modes")?
        .iter()
        .map(|m| Support {
            mode: m["mode"].as_str().unwrap_or("").to_string(),
            available: m["available"] == true,
            detail: m["detail"].as_str().unwrap_or("").to_string(),
        })
        .collect())
}

/// Asking for a mode the kernel refuses: exit 1, one error line naming the mode
/// and the kernel's reason, nothing printed on stdout, nothing left loaded.
fn refused_cleanly(portwatch: &str, mode: &str) -> Result<Vec<String>> {
    let before = programs::ids()?;
    let out = Launch::trace(portwatch, mode)
        .args(["--format", "json"])
        .run()?;
    let mut failures = Vec::new();
    if out.status.code() != Some(1) {
        failures.push(format!("exit {:?}, expected 1", out.status.code()));
    }
    let names_mode = format!("attach mode {mode} is not available");
    match out.stderr.single_line() {
        Some(Line::Error(message)) if message.starts_with(&names_mode) => {}
        _ => failures.push(format!(
            "stderr is not one error line naming the mode: {}",
            out.stderr
        )),
    }
    if !out.stdout.is_empty() {
        failures.push("printed something on stdout".into());
    }
    failures.extend(programs::released(&before)?);
    Ok(failures)
}

/// `--attach auto` must pick `first` and hold nothing of the modes it passed over.
fn auto_picks(portwatch: &str, first: &str, refused: &[&str]) -> Result<Vec<String>> {
    let tracer = Tracer::start(Launch::trace(portwatch, "auto").expect_mode(first))?;
    // The kernel frees programs asynchronously; give it a moment.
    thread::sleep(Duration::from_millis(300));
    let mut failures = Vec::new();
    for mode in refused {
        let left = programs::loaded_of_mode(mode)?;
        if !left.is_empty() {
            failures.push(format!(
                "programs of refused mode {mode} still loaded: {left:?}"
            ));
        }
    }
    // Each mode has one accept program of its own, and the state program is the
    // one the attached line names: the BTF one on socket storage, the classic one
    // on the fallback.
    let running = programs::loaded_of_mode(first)?;
    if running.len() != 1 {
        failures.push(format!(
            "mode {first} should have its accept program loaded, found {running:?}"
        ));
    }
    let btf = tracer
        .attached()
        .hooks
        .iter()
        .any(|h| h.starts_with("tp_btf:"));
    // Every kernel with BTF takes the BTF program (5.12+: socket storage and the
    // cookie for tracing programs; this suite's kernels are all newer), so the
    // fallback is right only when it was asked for.
    let lru = crate::harness::launch::on_lru_fallback();
    let kernel_btf = std::path::Path::new("/sys/kernel/btf/vmlinux").exists();
    if (btf && lru) || (!btf && !lru && kernel_btf) {
        failures.push(format!(
            "attached {:?} with --socket-store {}",
            tracer.attached().hooks,
            if lru { "lru" } else { "auto" }
        ));
    }
    let state = if btf {
        "btf_inet_sock_s"
    } else {
        "inet_sock_set_s"
    };
    let shared = programs::loaded_of_mode("all")?;
    if shared != [state] {
        failures.push(format!(
            "the state program {state} (and only it) should be loaded, found {shared:?}"
        ));
    }
    let stopped = tracer.stop()?;
    if !stopped.status.success() {
        failures.push(format!("exit {} after SIGINT", stopped.status));
    }
    Ok(failures)
}

/// One mode: the suite where the kernel allows it, a clean refusal where not.
fn one_mode(portwatch: &str, mode: &str, support: &[Support], kernel: &str) -> Group {
    let mut checks = Checks::default();
    let Some(s) = support.iter().find(|s| s.mode == mode) else {
        checks.record(
            &format!("doctor reports mode {mode}"),
            Ok(vec!["missing".into()]),
        );
        return checks.into_group(kernel, Some(mode), false);
    };
    if s.available {
        return run_mode(portwatch, mode).into_group(kernel, Some(mode), false);
    }
    println!("# mode {mode} is not available here: {}", s.detail);
    checks.record(
        &format!("[{mode}] refused cleanly when asked for"),
        refused_cleanly(portwatch, mode),
    );
    checks.into_group(kernel, Some(mode), true)
}

/// The checks of no single mode, in the first mode that works: failure paths,
/// storm and soak (with a load generator), and `--attach auto`.
fn kernel_wide(portwatch: &str, loadgen: Option<&str>, support: &[Support]) -> Checks {
    let mut checks = Checks::default();
    let Some(first) = support
        .iter()
        .find(|s| s.available)
        .map(|s| s.mode.as_str())
    else {
        checks.record("some attach mode works", Ok(vec!["none does".into()]));
        return checks;
    };
    failures::record_all(&mut checks, portwatch, first);
    match loadgen {
        Some(lg) => heavy::record_all(&mut checks, portwatch, lg, first),
        None => println!("# storm and soak not run here: they run on the host's kernel (xtask passes --loadgen there)"),
    }
    crate::history::record_all(&mut checks, portwatch, loadgen, first);
    crate::baseline::record_all(&mut checks, portwatch, loadgen, first);
    // Fleet export and running as a service need tools installed on the host
    // (xtask installs them): run there, in the first pass (given the load
    // generator), not in the guests.
    if loadgen.is_some() {
        crate::otlp::record_all(&mut checks, portwatch, first);
        crate::prometheus::record_all(&mut checks, portwatch, first);
        crate::reload::record_all(&mut checks, portwatch, first);
        crate::service::record_all(&mut checks, portwatch, first);
    }
    let refused: Vec<&str> = support
        .iter()
        .filter(|s| !s.available)
        .map(|s| s.mode.as_str())
        .collect();
    checks.record(
        &format!("[auto] picks {first}, nothing of refused modes left loaded"),
        auto_picks(portwatch, first, &refused),
    );
    checks
}

/// `uname -r`.
pub fn kernel_release() -> String {
    nix::sys::utsname::uname()
        .map(|u| u.release().to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// Every mode, then the checks of no single mode.
pub fn run_all_modes(portwatch: &str, loadgen: Option<&str>) -> Vec<Group> {
    let kernel = kernel_release();
    let support = match doctor(portwatch) {
        Ok(s) => s,
        Err(e) => {
            let mut checks = Checks::default();
            checks.record("portwatch doctor", Err(e));
            return vec![checks.into_group(&kernel, None, false)];
        }
    };
    let mut groups: Vec<Group> = MODES
        .iter()
        .map(|mode| one_mode(portwatch, mode, &support, &kernel))
        .collect();
    groups.push(kernel_wide(portwatch, loadgen, &support).into_group(&kernel, None, false));
    groups
}
