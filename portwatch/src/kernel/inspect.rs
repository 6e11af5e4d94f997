//! What is learnt about the kernel before anything is loaded: privileges, tracefs,
//! tracepoint layouts, struct offsets and function prototypes from BTF. The same
//! for every attach mode, so `--attach auto` does it once.
use std::path::{Path, PathBuf};

use portwatch_common::Config;

use super::{
    btf,
    error::{one_line, LoadError},
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
    /// BTF id of `tcp_connect`, the function fentry attaches to.
    pub tcp_connect_btf_id: Option<u32>,
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

/// Offsets of `sock:inet_sock_set_state`, from tracefs.
fn tracepoint_offsets(root: &Path, config: &mut Config) -> Result<(), TracefsError> {
    let f = Format::read(root, "sock", "inet_sock_set_state")?;
    config.tp_skaddr = f.offset("skaddr")?;
    config.tp_oldstate = f.offset("oldstate")?;
    config.tp_newstate = f.offset("newstate")?;
    config.tp_sport = f.offset("sport")?;
    config.tp_dport = f.offset("dport")?;
    config.tp_family = f.offset("family")?;
    config.tp_protocol = f.offset("protocol")?;
    config.tp_saddr = f.offset("saddr")?;
    config.tp_daddr = f.offset("daddr")?;
    config.tp_saddr_v6 = f.offset("saddr_v6")?;
    config.tp_daddr_v6 = f.offset("daddr_v6")?;
    Ok(())
}

/// `ret` of the accept syscall tracepoints: one program serves both, so their
/// offsets must agree.
fn accept_ret_offset(root: &Path) -> Result<u32, TracefsError> {
    let read = |name| Format::read(root, "syscalls", name).and_then(|f| f.offset("ret"));
    let (accept, accept4) = (read("sys_exit_accept")?, read("sys_exit_accept4")?);
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
        .and_then(|b| btf::function_arg_count(b, "inet_csk_accept"));
    let tcp_connect_btf_id = btf_rs
        .as_ref()
        .and_then(|b| btf::function_id(b, "tcp_connect"));
    Ok(KernelInfo {
        accept_nargs,
        tcp_connect_btf_id,
        tracefs,
        config,
        has_btf: Path::new(btf::VMLINUX_BTF).exists(),
        warnings,
        accept_ret,
        accept_syscalls: true,
    })
}
