//! Loading the embedded eBPF object and attaching it: the only module that talks to
//! aya's program API.
use std::path::Path;

use aya::{
    maps::{MapData, PerCpuArray, RingBuf},
    programs::TracePoint,
    Ebpf, EbpfLoader,
};
use portwatch_common::{config_flags, Config};

use crate::{
    kernel_btf,
    tracefs::{self, Format, TracefsError},
};

/// The eBPF object, built by `cargo xtask build-ebpf` before this crate.
static EBPF_OBJECT: &[u8] = aya::include_bytes_aligned!(env!("PORTWATCH_EBPF_OBJECT"));

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error(
        "portwatch needs root, or the capabilities CAP_BPF and CAP_PERFMON (try: sudo portwatch)"
    )]
    Privileges,
    #[error(transparent)]
    Tracefs(#[from] TracefsError),
    #[error("loading the eBPF programs failed: {0}")]
    Load(String),
    #[error("attaching {tracepoint} failed: {reason}")]
    Attach { tracepoint: String, reason: String },
    #[error("eBPF map {0} is missing or of the wrong type: {1}")]
    Map(&'static str, String),
}

/// How the programs are attached. Only the tracepoint family for now; the hook
/// layer is kept open for fentry/kprobe modes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AttachMode {
    Tracepoint,
}

impl AttachMode {
    pub fn name(self) -> &'static str {
        match self {
            AttachMode::Tracepoint => "tracepoint",
        }
    }
}

pub struct LoadOptions {
    /// Ring buffer size in bytes (a power of two, a multiple of the page size).
    pub ringbuf_bytes: u32,
}

/// Loaded, attached programs and the maps userspace reads. Dropping it detaches
/// every program.
pub struct Tracer {
    pub ebpf: Ebpf,
    /// Taken by the event loop while it runs.
    pub events: Option<RingBuf<MapData>>,
    /// Messages from the kernel side's rare error paths (aya-log). Must stay alive
    /// as long as the programs: dropping it closes the log map.
    pub logger: Option<aya_log::EbpfLogger<&'static dyn log::Log>>,
    pub lost: PerCpuArray<MapData, u64>,
    pub mode: AttachMode,
    /// `category:name` of every attached tracepoint.
    pub attached: Vec<String>,
    /// What this kernel does not allow and what that costs in exactness.
    pub warnings: Vec<String>,
}

/// A readable one-line text for an error and its causes (verifier logs cut to
/// their first line).
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let line = s.to_string();
        let first = line.lines().next().unwrap_or("");
        if !first.is_empty() && !text.contains(first) {
            text.push_str(": ");
            text.push_str(first);
        }
        source = s.source();
    }
    text
}

fn has_privileges() -> bool {
    use caps::{CapSet, Capability};
    let has = |c| caps::has_cap(None, CapSet::Effective, c).unwrap_or(false);
    has(Capability::CAP_SYS_ADMIN) || (has(Capability::CAP_BPF) && has(Capability::CAP_PERFMON))
}

/// Offsets of `sock:inet_sock_set_state` and `sys_exit_accept{,4}`, from tracefs.
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

/// The accept tracepoints, when the fd walk can use them: their `ret` offset must
/// agree, since one program serves both.
fn accept_offsets(root: &Path, config: &mut Config) -> Result<(), TracefsError> {
    let accept = Format::read(root, "syscalls", "sys_exit_accept")?.offset("ret")?;
    let accept4 = Format::read(root, "syscalls", "sys_exit_accept4")?.offset("ret")?;
    if accept != accept4 {
        return Err(TracefsError::MissingField {
            tracepoint: "syscalls:sys_exit_accept (ret offset differs from accept4)".into(),
            field: "ret",
        });
    }
    config.tp_accept_ret = accept;
    Ok(())
}

fn attach(ebpf: &mut Ebpf, program: &str, category: &str, name: &str) -> Result<(), LoadError> {
    let err = |reason: String| LoadError::Attach {
        tracepoint: format!("{category}:{name}"),
        reason,
    };
    let prog: &mut TracePoint = ebpf
        .program_mut(program)
        .ok_or_else(|| err(format!("program {program} missing from the eBPF object")))?
        .try_into()
        .map_err(|e: aya::programs::ProgramError| err(error_chain(&e)))?;
    if prog.fd().is_err() {
        prog.load().map_err(|e| err(error_chain(&e)))?;
    }
    prog.attach(category, name)
        .map_err(|e| err(error_chain(&e)))?;
    Ok(())
}

pub fn load(options: &LoadOptions) -> Result<Tracer, LoadError> {
    if !has_privileges() {
        return Err(LoadError::Privileges);
    }
    let root = tracefs::ensure_mounted()?;
    let mut config = Config::default();
    tracepoint_offsets(&root, &mut config)?;

    let btf = kernel_btf::load_vmlinux();
    let mut warnings = Vec::new();
    let btf = match btf {
        Ok(b) => Some(b),
        Err(e) => {
            warnings.push(e.to_string());
            None
        }
    };
    warnings.extend(kernel_btf::fill_config(btf.as_ref(), &mut config).warnings);
    if config.flags & config_flags::ACCEPT_FD_WALK != 0 {
        if let Err(e) = accept_offsets(&root, &mut config) {
            config.flags &= !config_flags::ACCEPT_FD_WALK;
            warnings.push(format!(
                "{e}: accepted connections are attributed to the listener's owner (pid_exact: false)"
            ));
        }
    }

    // Kernels before 5.11 charge BPF memory to RLIMIT_MEMLOCK.
    let _ = nix::sys::resource::setrlimit(
        nix::sys::resource::Resource::RLIMIT_MEMLOCK,
        nix::sys::resource::RLIM_INFINITY,
        nix::sys::resource::RLIM_INFINITY,
    );

    let mut ebpf = EbpfLoader::new()
        .override_global("PORTWATCH_CONFIG", &config, true)
        .map_max_entries("EVENTS", options.ringbuf_bytes)
        .load(EBPF_OBJECT)
        .map_err(|e| LoadError::Load(error_chain(&e)))?;

    let logger = match aya_log::EbpfLogger::init(&mut ebpf) {
        Ok(l) => Some(l),
        Err(e) => {
            warnings.push(format!("kernel-side log messages unavailable: {e}"));
            None
        }
    };

    let mut attached = Vec::new();
    attach(
        &mut ebpf,
        "inet_sock_set_state",
        "sock",
        "inet_sock_set_state",
    )?;
    attached.push("sock:inet_sock_set_state".to_string());
    if config.flags & config_flags::ACCEPT_FD_WALK != 0 {
        for name in ["sys_exit_accept", "sys_exit_accept4"] {
            attach(&mut ebpf, "sys_exit_accept", "syscalls", name)?;
            attached.push(format!("syscalls:{name}"));
        }
    }

    let events = ebpf
        .take_map("EVENTS")
        .ok_or_else(|| LoadError::Map("EVENTS", "missing".into()))
        .and_then(|m| RingBuf::try_from(m).map_err(|e| LoadError::Map("EVENTS", e.to_string())))?;
    let lost = ebpf
        .take_map("LOST")
        .ok_or_else(|| LoadError::Map("LOST", "missing".into()))
        .and_then(|m| {
            PerCpuArray::try_from(m).map_err(|e| LoadError::Map("LOST", e.to_string()))
        })?;
    Ok(Tracer {
        ebpf,
        events: Some(events),
        logger,
        lost,
        mode: AttachMode::Tracepoint,
        attached,
        warnings,
    })
}

impl Tracer {
    /// Events the kernel side could not put in the ring buffer, summed over CPUs.
    pub fn lost_total(&self) -> u64 {
        self.lost
            .get(&0, 0)
            .map(|per_cpu| per_cpu.iter().sum())
            .unwrap_or(0)
    }
}
