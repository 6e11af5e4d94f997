//! What is learnt about the kernel before anything is loaded: privileges, tracefs,
//! tracepoint layouts, struct offsets and function prototypes from BTF. The same
//! for every attach mode, so `--attach auto` does it once.
use std::path::{Path, PathBuf};

use portwatch_common::{
    names::{
        KFUNC_INET_CSK_ACCEPT, TP_CATEGORY_SYSCALLS, TP_INET_SOCK_SET_STATE, TP_SYS_EXIT_ACCEPT,
        TP_SYS_EXIT_ACCEPT4,
    },
    Config, Offset, OffsetSource,
};

use super::{
    btf,
    error::{one_line, LoadError},
    lsm::{self, LsmError},
    tracefs::{self, Format, TracefsError},
};

/// What was learnt about the kernel before loading anything.
pub struct KernelInfo {
    pub tracefs: PathBuf,
    /// Offsets and feature flags every mode starts from.
    pub config: Config,
    /// Whether the kernel has BTF at all.
    pub has_btf: bool,
    /// Why a feature is off, and what that costs.
    pub warnings: Vec<String>,
    /// Parameters of `inet_csk_accept`, from BTF (4 before Linux 6.10, 2 since).
    pub accept_nargs: Option<u32>,
    /// BTF id of `inet_csk_accept`, the function fexit attaches to.
    pub accept_btf_id: Option<u32>,
    /// BTF id of `btf_trace_inet_sock_set_state`, what the BTF tracepoint attaches
    /// to.
    pub state_btf_id: Option<u32>,
    /// BTF id of `bpf_lsm_sock_graft`, tracepoint mode's accept hook where the
    /// BPF LSM is active; else why not.
    pub accept_lsm: Result<u32, LsmError>,
    /// Offset of `ret` in sys_exit_accept{,4}, when both agree.
    pub accept_ret: Result<u32, TracefsError>,
    /// Whether tracepoint mode may hook the accept syscalls (`--inexact-accept`
    /// says no).
    pub accept_syscalls: bool,
}

pub fn has_privileges() -> bool {
    use caps::{CapSet, Capability};
    let has = |c| caps::has_cap(None, CapSet::Effective, c).unwrap_or(false);
    has(Capability::CAP_SYS_ADMIN) || (has(Capability::CAP_BPF) && has(Capability::CAP_PERFMON))
}

/// What this process cannot read of other processes, in words (a service run
/// with a reduced capability set): without CAP_SYS_PTRACE, the executable and
/// command line of processes of other users or with more capabilities; without
/// CAP_DAC_READ_SEARCH, the descriptors (and so the sockets opened before
/// tracing) of other users' processes. Tracing goes on, with those missing.
pub fn missing_read_privileges() -> Vec<String> {
    use caps::{CapSet, Capability};
    let has = |c| caps::has_cap(None, CapSet::Effective, c).unwrap_or(true);
    let mut warnings = Vec::new();
    if !has(Capability::CAP_SYS_PTRACE) {
        warnings.push(
            "without CAP_SYS_PTRACE, the executable and command line of processes of other users, or with more capabilities than portwatch, cannot be read: `exe` and `cmdline` stay empty for them".to_string(),
        );
    }
    if !has(Capability::CAP_DAC_READ_SEARCH) && !has(Capability::CAP_DAC_OVERRIDE) {
        warnings.push(
            "without CAP_DAC_READ_SEARCH, other users' open descriptors cannot be listed: sockets they opened before tracing began are shown without a process".to_string(),
        );
    }
    warnings
}

/// Every tracefs offset of the one list in `portwatch_common::Offset`: all are
/// required. Each format file is read once.
fn tracepoint_offsets(root: &Path, config: &mut Config) -> Result<(), TracefsError> {
    let mut formats: Vec<Format> = Vec::new();
    for offset in Offset::ALL {
        let OffsetSource::Tracefs {
            category,
            tracepoint,
            field,
        } = offset.source()
        else {
            continue;
        };
        let name = format!("{category}:{tracepoint}");
        let format = match formats.iter().position(|f| f.tracepoint == name) {
            Some(i) => &formats[i],
            None => {
                formats.push(Format::read(root, category, tracepoint)?);
                &formats[formats.len() - 1]
            }
        };
        config.offsets.set(offset, format.offset(field)?);
    }
    Ok(())
}

/// `ret` of the accept syscall tracepoints: one program serves both, so their
/// offsets must agree.
fn accept_ret_offset(root: &Path) -> Result<u32, TracefsError> {
    let read = |name| Format::read(root, TP_CATEGORY_SYSCALLS, name).and_then(|f| f.offset("ret"));
    let (accept, accept4) = (read(TP_SYS_EXIT_ACCEPT)?, read(TP_SYS_EXIT_ACCEPT4)?);
    if accept != accept4 {
        return Err(TracefsError::AcceptRetDisagrees { accept, accept4 });
    }
    Ok(accept)
}

/// Everything learnt before loading: privileges, tracefs, offsets, BTF.
pub fn inspect_kernel() -> Result<KernelInfo, LoadError> {
    if !has_privileges() {
        return Err(LoadError::Privileges);
    }
    let tracefs = tracefs::ensure_mounted()?;
    let mut config = Config::default();
    tracepoint_offsets(&tracefs, &mut config)?;
    let mut warnings = Vec::new();
    let btf_rs = btf::load_vmlinux()
        .map_err(|e| warnings.push(one_line(&e)))
        .ok();
    warnings.extend(btf::fill_config(btf_rs.as_ref(), &mut config).warnings);
    let accept_ret = accept_ret_offset(&tracefs);
    // Kernels before 5.11 charge BPF memory to RLIMIT_MEMLOCK.
    let _ = nix::sys::resource::setrlimit(
        nix::sys::resource::Resource::RLIMIT_MEMLOCK,
        nix::sys::resource::RLIM_INFINITY,
        nix::sys::resource::RLIM_INFINITY,
    );
    let accept_nargs = btf_rs
        .as_ref()
        .and_then(|b| btf::function_arg_count(b, KFUNC_INET_CSK_ACCEPT));
    let accept_btf_id = btf_rs
        .as_ref()
        .and_then(|b| btf::function_id(b, KFUNC_INET_CSK_ACCEPT));
    let state_btf_id = btf_rs
        .as_ref()
        .and_then(|b| btf::typedef_id(b, &format!("btf_trace_{TP_INET_SOCK_SET_STATE}")));
    let accept_lsm = lsm::sock_graft_target(btf_rs.as_ref());
    Ok(KernelInfo {
        accept_lsm,
        accept_nargs,
        accept_btf_id,
        state_btf_id,
        tracefs,
        config,
        has_btf: Path::new(btf::VMLINUX_BTF).exists(),
        warnings,
        accept_ret,
        accept_syscalls: true,
    })
}
