//! Which accept hook each mode attached: fexit or a kretprobe on
//! `inet_csk_accept`, and in tracepoint mode the BPF LSM hook `sock_graft` exactly
//! where `portwatch doctor` says the BPF LSM can be used, else the accept syscall
//! tracepoints. A silent fallback from the LSM hook fails here.
use anyhow::{Context, Result};
use serde_json::Value;

use crate::harness::{launch::Launch, tracer::Tracer};

/// Whether `portwatch doctor` says tracepoint mode can use the BPF LSM hook.
fn doctor_bpf_lsm(portwatch: &str) -> Result<bool> {
    let out = Launch::new(portwatch)
        .args(["doctor", "--format", "json"])
        .run()?;
    let v: Value = serde_json::from_slice(&out.stdout).context("doctor's JSON")?;
    v["bpf_lsm"]["ok"]
        .as_bool()
        .context("doctor JSON has no bpf_lsm.ok")
}

pub fn accept_hook(tracer: &Tracer, portwatch: &str, mode: &str) -> Result<Vec<String>> {
    let expected: Vec<&str> = match mode {
        "fentry" => vec!["fexit:inet_csk_accept"],
        "kprobe" => vec!["kretprobe:inet_csk_accept"],
        _ if doctor_bpf_lsm(portwatch)? => vec!["lsm:sock_graft"],
        _ => vec!["syscalls:sys_exit_accept", "syscalls:sys_exit_accept4"],
    };
    let hooks = &tracer.attached().hooks;
    let accept_hooks: Vec<&str> = hooks
        .iter()
        .map(String::as_str)
        .filter(|h| !h.contains("inet_sock_set_state"))
        .collect();
    if accept_hooks == expected {
        Ok(Vec::new())
    } else {
        Ok(vec![format!(
            "accept hooks {accept_hooks:?}, expected {expected:?} (attached: {hooks:?})"
        )])
    }
}
