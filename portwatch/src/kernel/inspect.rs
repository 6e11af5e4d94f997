//! What is learnt about the kernel before anything is loaded: privileges, tracefs,
//! tracepoint layouts, struct offsets and function prototypes from BTF. The same
//! for every attach mode, so `--attach auto` does it once.
use std::path::{Path, PathBuf};

use portwatch_common::{
    names::{
        KFUNC_INET_CSK_ACCEPT, TP_CATEGORY_SYSCALLS, TP_INET_SOCK_SET_STATE, TP_SYS_EXIT_ACCEPT,
        TP_SYS_EXIT_ACCEPT4, TP_UDP_SYSCALLS, UDP_FUNCTIONS,
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
    /// says no; UDP's syscall tracepoints then stay off too).
    pub accept_syscalls: bool,
    /// BTF ids of the kernel functions UDP's fentry programs attach to, those
    /// the kernel has.
    pub udp_function_ids: Vec<(&'static str, u32)>,
    /// The UDP syscall tracepoints' argument and `ret` offsets, where they agree.
    pub udp_syscalls: Result<(u32, u32), TracefsError>,
    /// Which protocols to trace (`--proto`).
    pub trace_tcp: bool,
    pub trace_udp: bool,
}

impl KernelInfo {
    /// The BTF id of `function`, an accept or UDP attach target.
    pub fn function_id(&self, function: &str) -> Option<u32> {
        if function == KFUNC_INET_CSK_ACCEPT {
            return self.accept_btf_id;
        }
        self.udp_function_ids
            .iter()
            .find(|(name, _)| *name == function)
            .map(|(_, id)| *id)
    }
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

/// The UDP syscall tracepoints' layout: where the first argument and `ret` are,
/// checked to be the same in every record (each argument 8 bytes after the one
/// before), since one offset serves them all.
fn udp_syscall_offsets(root: &Path) -> Result<(u32, u32), TracefsError> {
    let mut common: Option<(u32, u32)> = None;
    for syscall in TP_UDP_SYSCALLS {
        let enter = Format::read(root, TP_CATEGORY_SYSCALLS, syscall.enter.0)?;
        let exit = Format::read(root, TP_CATEGORY_SYSCALLS, syscall.exit.0)?;
        let (args, ret) = (enter.offset("fd")?, exit.offset("ret")?);
        let (want_args, want_ret) = *common.get_or_insert((args, ret));
        let wrong = |tracepoint: &str, field, found, expected| TracefsError::SyscallLayout {
            tracepoint: tracepoint.to_string(),
            field,
            found,
            expected,
        };
        if args != want_args {
            return Err(wrong(syscall.enter.0, "fd", args, want_args));
        }
        if ret != want_ret {
            return Err(wrong(syscall.exit.0, "ret", ret, want_ret));
        }
        // The pointer argument each program reads.
        let (field, index) = match syscall.enter.0 {
            "sys_enter_bind" => ("umyaddr", 1),
            "sys_enter_connect" => ("uservaddr", 1),
            "sys_enter_sendto" => ("addr", 4),
            "sys_enter_sendmsg" => ("msg", 1),
            _ => ("mmsg", 1),
        };
        let found = enter.offset(field)?;
        if found != args + 8 * index {
            return Err(wrong(syscall.enter.0, field, found, args + 8 * index));
        }
    }
    Ok(common.unwrap_or((0, 0)))
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
    let udp_function_ids = UDP_FUNCTIONS
        .iter()
        .filter_map(|f| Some((*f, btf::function_id(btf_rs.as_ref()?, f)?)))
        .collect();
    let udp_syscalls = udp_syscall_offsets(&tracefs);
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
        udp_function_ids,
        udp_syscalls,
        trace_tcp: true,
        trace_udp: true,
    })
}
