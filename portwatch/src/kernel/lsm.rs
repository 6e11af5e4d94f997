//! The BPF LSM hook tracepoint mode names accepting processes from, where the
//! kernel runs BPF LSM programs: `sock_graft`, called inside `accept()` with the
//! accepted sock. A BPF LSM program attached while the `bpf` LSM is not active
//! would load and attach and then never run, so the kernel's list of active LSMs
//! is read first, never assumed.
use std::{fs, io, path::Path};

use portwatch_common::names::LSM_SOCK_GRAFT;

use super::{
    bpf_sys::{self, Trampoline},
    btf,
};

/// Where securityfs lists the active LSMs.
const LSM_LIST: &str = "/sys/kernel/security/lsm";
const SECURITYFS: &str = "/sys/kernel/security";

/// Why the LSM hook cannot be used here.
#[derive(Debug, thiserror::Error)]
pub enum LsmError {
    #[error("the kernel's BTF has no bpf_lsm_{LSM_SOCK_GRAFT} (built without CONFIG_BPF_LSM?)")]
    NoHook,
    #[error(
        "the BPF LSM is not active (active LSMs: {0}; it needs `bpf` in the lsm= boot parameter)"
    )]
    Inactive(String),
    #[error("cannot read the active LSMs ({LSM_LIST})")]
    Unreadable(#[source] io::Error),
    #[error("the kernel refuses BPF LSM programs")]
    Refused(#[source] io::Error),
}

/// The kernel function BPF attaches to for the hook.
pub fn attach_function() -> String {
    format!("bpf_lsm_{LSM_SOCK_GRAFT}")
}

/// The BTF id of the hook's function, when the BPF LSM is active.
pub fn sock_graft_target(btf: Option<&btf_rs::Btf>) -> Result<u32, LsmError> {
    let id = btf
        .and_then(|b| btf::function_id(b, &attach_function()))
        .ok_or(LsmError::NoHook)?;
    let list = active_lsms().map_err(LsmError::Unreadable)?;
    if !bpf_is_active(&list) {
        return Err(LsmError::Inactive(list.trim().to_string()));
    }
    match bpf_sys::trampoline_allowed(Trampoline::Lsm, id) {
        // Only a refusal on principle is final; anything else is left to the real
        // load to explain (and the syscall tracepoints take over if it fails).
        Err(e) if matches!(e.raw_os_error(), Some(libc::EPERM | libc::EACCES)) => {
            Err(LsmError::Refused(e))
        }
        _ => Ok(id),
    }
}

/// The kernel's comma-separated list of active LSMs, mounting securityfs first
/// where nothing is mounted there (as the tracefs is).
fn active_lsms() -> io::Result<String> {
    if !Path::new(LSM_LIST).exists() {
        nix::mount::mount(
            Some("securityfs"),
            SECURITYFS,
            Some("securityfs"),
            nix::mount::MsFlags::empty(),
            None::<&str>,
        )
        .map_err(io::Error::from)?;
    }
    fs::read_to_string(LSM_LIST)
}

fn bpf_is_active(list: &str) -> bool {
    list.trim().split(',').any(|lsm| lsm == "bpf")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bpf_must_be_named_in_the_list() {
        assert!(bpf_is_active("lockdown,capability,landlock,bpf\n"));
        assert!(bpf_is_active("bpf"));
        assert!(!bpf_is_active("lockdown,capability,bpfilter"));
        assert!(!bpf_is_active(""));
    }
}
