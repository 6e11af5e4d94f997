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
    let (udp, tcp): (Vec<&str>, Vec<&str>) = hooks
        .iter()
        .map(String::as_str)
        .filter(|h| !h.contains("inet_sock_set_state"))
        .partition(|h| udp_hooks(mode).contains(h));
    let mut failures = Vec::new();
    if tcp != expected {
        failures.push(format!(
            "accept hooks {tcp:?}, expected {expected:?} (attached: {hooks:?})"
        ));
    }
    if udp != udp_hooks(mode) {
        failures.push(format!(
            "UDP hooks {udp:?}, expected {:?} (attached: {hooks:?})",
            udp_hooks(mode)
        ));
    }
    Ok(failures)
}

/// UDP's hooks in `mode`, in the order portwatch attaches them.
pub(super) fn udp_hooks(mode: &str) -> Vec<&'static str> {
    match mode {
        "fentry" => vec![
            "fexit:inet_bind",
            "fexit:inet6_bind",
            "fexit:inet_dgram_connect",
            "fexit:udp_sendmsg",
            "fexit:udpv6_sendmsg",
            "fentry:inet_release",
        ],
        "kprobe" => vec![
            "kprobe:inet_bind",
            "kretprobe:inet_bind",
            "kprobe:inet6_bind",
            "kretprobe:inet6_bind",
            "kprobe:inet_dgram_connect",
            "kretprobe:inet_dgram_connect",
            "kprobe:udp_sendmsg",
            "kretprobe:udp_sendmsg",
            "kprobe:udpv6_sendmsg",
            "kretprobe:udpv6_sendmsg",
            "kprobe:inet_release",
        ],
        _ => vec![
            "syscalls:sys_enter_bind",
            "syscalls:sys_exit_bind",
            "syscalls:sys_enter_connect",
            "syscalls:sys_exit_connect",
            "syscalls:sys_enter_sendto",
            "syscalls:sys_exit_sendto",
            "syscalls:sys_enter_sendmsg",
            "syscalls:sys_exit_sendmsg",
            "syscalls:sys_enter_sendmmsg",
            "syscalls:sys_exit_sendmmsg",
        ],
    }
}
