//! portwatch's BPF programs as the kernel lists them: what is loaded, and whether
//! what a run loaded was released.
use std::{
    collections::HashSet,
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context, Result};

/// The kernel's own names (truncated to 15 bytes) of every portwatch program, by
/// the mode that loads it ("all": every mode).
/// (`btf_inet_sock_s` is the BTF state program and its twin.)
const PROGRAMS: [(&str, &str); 8] = [
    ("fentry", "fexit_inet_csk_"),
    ("kprobe", "kretprobe_inet_"),
    ("tracepoint", "sys_exit_accept"),
    ("tracepoint", "lsm_sock_graft"),
    ("all", "inet_sock_set_s"),
    ("all", "btf_inet_sock_s"),
    ("all", "floor_btf"),
    ("all", "floor_classic"),
];

fn is_ours(name: &str) -> bool {
    PROGRAMS.iter().any(|(_, n)| *n == name)
}

/// Names of the BPF programs loaded in the kernel now.
fn loaded_names() -> Result<Vec<String>> {
    aya::programs::loaded_programs()
        .map(|p| {
            p.map(|info| info.name_as_str().unwrap_or("").to_string())
                .context("listing loaded BPF programs")
        })
        .collect()
}

/// Which of `mode`'s own programs are loaded now.
pub fn loaded_of_mode(mode: &str) -> Result<Vec<String>> {
    let names = loaded_names()?;
    Ok(PROGRAMS
        .iter()
        .filter(|(m, _)| *m == mode)
        .filter(|(_, n)| names.iter().any(|l| l == n))
        .map(|(_, n)| n.to_string())
        .collect())
}

/// Ids of the BPF programs with portwatch's names loaded now.
pub fn ids() -> Result<HashSet<u32>> {
    aya::programs::loaded_programs()
        .filter_map(|p| match p {
            Ok(info) if is_ours(info.name_as_str().unwrap_or("")) => Some(Ok(info.id())),
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
        let left: Vec<u32> = ids()?.difference(before).copied().collect();
        if left.is_empty() {
            return Ok(vec![]);
        }
        if Instant::now() > deadline {
            return Ok(vec![format!("programs still loaded: {left:?}")]);
        }
        thread::sleep(Duration::from_millis(100));
    }
}
