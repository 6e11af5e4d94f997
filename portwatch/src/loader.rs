//! Loading the embedded eBPF object and attaching it in one of three modes: the
//! only module that talks to aya's program API.
use std::path::{Path, PathBuf};

use aya::{
    maps::{MapData, PerCpuArray, RingBuf},
    programs::{FEntry, FExit, KProbe, Program, ProgramError, TracePoint},
    Btf, Ebpf, EbpfLoader,
};
use portwatch_common::{config_flags, Config};

use crate::{
    bpf_sys, kernel_btf,
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
    #[error("attach mode {mode} is not available on this kernel: {reason}")]
    ModeRefused { mode: &'static str, reason: String },
    #[error("no attach mode works on this kernel: {0}")]
    NoMode(String),
}

/// How the programs are attached (`--attach`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum AttachMode {
    /// fentry tcp_connect, fexit inet_csk_accept, and the tracepoint.
    Fentry,
    /// kprobe tcp_connect, kretprobe inet_csk_accept, and the tracepoint.
    Kprobe,
    /// sock:inet_sock_set_state and syscalls:sys_exit_accept{,4} only.
    Tracepoint,
}

impl AttachMode {
    /// The order `--attach auto` tries them in: cheapest and most exact first.
    pub const ALL: [AttachMode; 3] = [
        AttachMode::Fentry,
        AttachMode::Kprobe,
        AttachMode::Tracepoint,
    ];

    pub fn name(self) -> &'static str {
        match self {
            AttachMode::Fentry => "fentry",
            AttachMode::Kprobe => "kprobe",
            AttachMode::Tracepoint => "tracepoint",
        }
    }
}

/// `--attach`: a mode, or the first that works.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum AttachChoice {
    Auto,
    Fentry,
    Kprobe,
    Tracepoint,
}

impl AttachChoice {
    pub fn modes(self) -> &'static [AttachMode] {
        match self {
            AttachChoice::Auto => &AttachMode::ALL,
            AttachChoice::Fentry => &[AttachMode::Fentry],
            AttachChoice::Kprobe => &[AttachMode::Kprobe],
            AttachChoice::Tracepoint => &[AttachMode::Tracepoint],
        }
    }
}

pub struct LoadOptions {
    /// Ring buffer size in bytes (a power of two, a multiple of the page size).
    pub ringbuf_bytes: u32,
    /// Wake the reader once this many events wait (0 or 1: on every event the
    /// reader has not yet caught up with, the kernel's own rule).
    pub wakeup_events: u32,
    pub attach: AttachChoice,
    /// Tracepoint mode may hook the accept syscalls (exact accept attribution, at
    /// the cost of every syscall on the host taking the slower path).
    pub accept_syscalls: bool,
    /// Its kernel-side part is applied before events are reserved.
    pub filter: crate::filter::Filter,
}

/// What was learnt about the kernel before loading anything: the same for every
/// mode, so auto does it once.
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
    pub accept_ret: Result<u32, String>,
    /// Whether tracepoint mode may hook the accept syscalls (`--inexact-accept`
    /// says no).
    pub accept_syscalls: bool,
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
    /// The kernel side's per-socket and listener maps, for `--stats`.
    pub socks: Option<aya::maps::HashMap<MapData, u64, portwatch_common::SockInfo>>,
    pub listeners: Option<
        aya::maps::HashMap<MapData, portwatch_common::ListenKey, portwatch_common::SockInfo>,
    >,
    pub mode: AttachMode,
    /// Every hook attached, e.g. `fentry:tcp_connect`, `sock:inet_sock_set_state`.
    pub attached: Vec<String>,
    /// What this kernel does not allow and what that costs in exactness.
    pub warnings: Vec<String>,
}

/// A readable one-line text for an error and its causes (verifier logs cut to
/// their first line).
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string().lines().next().unwrap_or("").to_string();
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
    // aya appends the verifier log, empty when the kernel refused before verifying.
    let trimmed = text
        .trim_end()
        .trim_end_matches("Verifier output:")
        .trim_end();
    trimmed.trim_end_matches('.').to_string()
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
fn accept_ret_offset(root: &Path) -> Result<u32, String> {
    let read = |name| {
        Format::read(root, "syscalls", name)
            .and_then(|f| f.offset("ret"))
            .map_err(|e| e.to_string())
    };
    let (accept, accept4) = (read("sys_exit_accept")?, read("sys_exit_accept4")?);
    if accept != accept4 {
        return Err(format!(
            "sys_exit_accept and sys_exit_accept4 disagree on the offset of ret ({accept} vs {accept4})"
        ));
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
    let btf_rs = kernel_btf::load_vmlinux()
        .map_err(|e| warnings.push(e.to_string()))
        .ok();
    warnings.extend(kernel_btf::fill_config(btf_rs.as_ref(), &mut config).warnings);
    let accept_ret = accept_ret_offset(&tracefs);
    // Kernels before 5.11 charge BPF memory to RLIMIT_MEMLOCK.
    let _ = nix::sys::resource::setrlimit(
        nix::sys::resource::Resource::RLIMIT_MEMLOCK,
        nix::sys::resource::RLIM_INFINITY,
        nix::sys::resource::RLIM_INFINITY,
    );
    let accept_nargs = btf_rs
        .as_ref()
        .and_then(|b| kernel_btf::function_arg_count(b, "inet_csk_accept"));
    let tcp_connect_btf_id = btf_rs
        .as_ref()
        .and_then(|b| kernel_btf::function_id(b, "tcp_connect"));
    Ok(KernelInfo {
        accept_nargs,
        tcp_connect_btf_id,
        tracefs,
        config,
        has_btf: std::path::Path::new(kernel_btf::VMLINUX_BTF).exists(),
        warnings,
        accept_ret,
        accept_syscalls: true,
    })
}

/// The programs one mode attaches, besides the tracepoint every mode has.
enum Hook {
    Tracepoint {
        program: &'static str,
        category: &'static str,
        name: &'static str,
    },
    Fentry {
        program: &'static str,
        function: &'static str,
    },
    Fexit {
        program: &'static str,
        function: &'static str,
    },
    Kprobe {
        program: &'static str,
        function: &'static str,
    },
}

impl Hook {
    fn label(&self) -> String {
        match self {
            Hook::Tracepoint { category, name, .. } => format!("{category}:{name}"),
            Hook::Fentry { function, .. } => format!("fentry:{function}"),
            Hook::Fexit { function, .. } => format!("fexit:{function}"),
            Hook::Kprobe { program, function } if program.starts_with("kretprobe") => {
                format!("kretprobe:{function}")
            }
            Hook::Kprobe { function, .. } => format!("kprobe:{function}"),
        }
    }

    fn attach(&self, ebpf: &mut Ebpf, btf: Option<&Btf>) -> Result<(), String> {
        let program = match self {
            Hook::Tracepoint { program, .. }
            | Hook::Fentry { program, .. }
            | Hook::Fexit { program, .. }
            | Hook::Kprobe { program, .. } => *program,
        };
        let prog: &mut Program = ebpf
            .program_mut(program)
            .ok_or_else(|| format!("program {program} is missing from the eBPF object"))?;
        let chain = |e: ProgramError| error_chain(&e);
        let no_btf = || "the kernel has no BTF (/sys/kernel/btf/vmlinux)".to_string();
        match self {
            Hook::Tracepoint { category, name, .. } => {
                let p: &mut TracePoint = prog.try_into().map_err(chain)?;
                if p.fd().is_err() {
                    p.load().map_err(chain)?;
                }
                p.attach(category, name).map_err(chain)?;
            }
            Hook::Fentry { function, .. } => {
                let p: &mut FEntry = prog.try_into().map_err(chain)?;
                p.load(function, btf.ok_or_else(no_btf)?).map_err(chain)?;
                p.attach().map_err(chain)?;
            }
            Hook::Fexit { function, .. } => {
                let p: &mut FExit = prog.try_into().map_err(chain)?;
                p.load(function, btf.ok_or_else(no_btf)?).map_err(chain)?;
                p.attach().map_err(chain)?;
            }
            Hook::Kprobe { function, .. } => {
                let p: &mut KProbe = prog.try_into().map_err(chain)?;
                p.load().map_err(chain)?;
                p.attach(function, 0).map_err(|e| {
                    let text = chain(e);
                    if text.contains("devices/kprobe") {
                        format!("{text} (this kernel has no kprobe support: built without CONFIG_KPROBES?)")
                    } else {
                        text
                    }
                })?;
            }
        }
        Ok(())
    }
}

/// The hooks of `mode`, and the config flags that tell the kernel side which of
/// its paths they replace. Err: why this kernel cannot do the mode at all.
fn plan(
    mode: AttachMode,
    kernel: &KernelInfo,
    config: &mut Config,
    warnings: &mut Vec<String>,
) -> Result<Vec<Hook>, String> {
    let sock_fields = config.flags & config_flags::SOCK_FIELDS != 0;
    let mut hooks = Vec::new();
    match mode {
        AttachMode::Fentry => {
            if !kernel.has_btf {
                return Err("the kernel has no BTF (/sys/kernel/btf/vmlinux)".into());
            }
            if !sock_fields {
                return Err("struct sock offsets were not found in the kernel's BTF".into());
            }
            // Where fexit finds the returned sock depends on the prototype, which
            // changed in Linux 6.10 (four arguments to two).
            let accept_program = match kernel.accept_nargs.unwrap_or(0) {
                2 => "fexit_inet_csk_accept_2args",
                4 => "fexit_inet_csk_accept_4args",
                0 => {
                    return Err(
                        "the prototype of inet_csk_accept was not found in the kernel's BTF".into(),
                    )
                }
                n => {
                    return Err(format!(
                    "inet_csk_accept takes {n} arguments here, a prototype portwatch does not know"
                ))
                }
            };
            hooks.push(Hook::Fentry {
                program: "fentry_tcp_connect",
                function: "tcp_connect",
            });
            hooks.push(Hook::Fexit {
                program: accept_program,
                function: "inet_csk_accept",
            });
            config.flags |= config_flags::CONNECT_HOOKED | config_flags::ACCEPT_HOOKED;
        }
        AttachMode::Kprobe => {
            hooks.push(Hook::Kprobe {
                program: "kprobe_tcp_connect",
                function: "tcp_connect",
            });
            config.flags |= config_flags::CONNECT_HOOKED;
            if sock_fields {
                hooks.push(Hook::Kprobe {
                    program: "kretprobe_inet_csk_accept",
                    function: "inet_csk_accept",
                });
                config.flags |= config_flags::ACCEPT_HOOKED;
            }
        }
        AttachMode::Tracepoint => {
            let walk = config_flags::FD_WALK | config_flags::SOCK_FIELDS;
            match &kernel.accept_ret {
                // Declined by the user: attributed to the listener, no warning.
                _ if !kernel.accept_syscalls => {}
                Ok(offset) if config.flags & walk == walk => {
                    config.tp_accept_ret = *offset;
                    for name in ["sys_exit_accept", "sys_exit_accept4"] {
                        hooks.push(Hook::Tracepoint { program: "sys_exit_accept", category: "syscalls", name });
                    }
                    config.flags |= config_flags::ACCEPT_HOOKED;
                }
                Ok(_) => {}
                Err(e) => warnings.push(format!(
                    "{e}: accepted connections are attributed to the listener's owner (pid_exact: false)"
                )),
            }
        }
    }
    hooks.push(Hook::Tracepoint {
        program: "inet_sock_set_state",
        category: "sock",
        name: "inet_sock_set_state",
    });
    Ok(hooks)
}

/// An `EbpfLoader` made without parsing the kernel's BTF. aya 0.14's
/// `EbpfLoader::new()` parses all of /sys/kernel/btf/vmlinux (tens of
/// milliseconds, megabytes of heap) even when the caller then sets its own
/// (aya-rs/aya#1172). So it is made while this process can open no more files
/// (RLIMIT_NOFILE lowered to the lowest free descriptor for that moment): its read
/// fails at once and it starts without BTF. The limit is put back right after.
/// Where the limit cannot be lowered, the loader is made the usual way.
fn loader_without_kernel_btf<'a>() -> EbpfLoader<'a> {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    use std::os::fd::AsRawFd;
    let lowest_free = match std::fs::File::open("/dev/null") {
        Ok(f) => f.as_raw_fd() as u64,
        Err(_) => return EbpfLoader::new(),
    };
    let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) else {
        return EbpfLoader::new();
    };
    if setrlimit(Resource::RLIMIT_NOFILE, lowest_free, hard).is_err() {
        return EbpfLoader::new();
    }
    let loader = EbpfLoader::new();
    // Raising the soft limit back to where it was, below the hard one, is always
    // allowed.
    let _ = setrlimit(Resource::RLIMIT_NOFILE, soft, hard);
    loader
}

/// Refusals found without loading the object: a kernel without kprobe support, or
/// one that refuses every fentry program. Either costs little to find out, while
/// trying the mode for real costs a load of the object (and for fentry, parsing
/// all of the kernel's BTF) before the kernel says no.
fn refused_early(mode: AttachMode, kernel: &KernelInfo) -> Result<(), String> {
    match mode {
        AttachMode::Kprobe if !Path::new(KPROBE_PMU).exists() => Err(format!(
            "kprobe:tcp_connect: {KPROBE_PMU} is missing (this kernel has no kprobe support: built without CONFIG_KPROBES?)"
        )),
        AttachMode::Fentry => match kernel.tcp_connect_btf_id.map(bpf_sys::fentry_allowed) {
            // Only a refusal on principle is final; anything else is left to the
            // real load to explain.
            Some(Err(e)) if matches!(e.raw_os_error(), Some(libc::EPERM | libc::EACCES)) => Err(
                format!("fentry:tcp_connect: the kernel refuses fentry programs: {e}"),
            ),
            _ => Ok(()),
        },
        _ => Ok(()),
    }
}

/// What kprobes are attached through (aya 0.14 has no tracefs fallback).
const KPROBE_PMU: &str = "/sys/bus/event_source/devices/kprobe/type";

/// Load and attach `mode` completely, or fail with the kernel's reason; on failure
/// nothing stays attached (the partly attached object is dropped).
pub fn load_mode(
    kernel: &KernelInfo,
    mode: AttachMode,
    ringbuf_bytes: u32,
) -> Result<Tracer, String> {
    let mut config = kernel.config;
    let mut warnings = kernel.warnings.clone();
    let hooks = plan(mode, kernel, &mut config, &mut warnings)?;
    refused_early(mode, kernel)?;
    // aya's whole-kernel BTF (slow to parse, megabytes in memory) is needed only to
    // find fentry/fexit targets: the object has no CO-RE relocations (offsets come
    // from kernel_btf, through the config).
    let btf = if mode == AttachMode::Fentry {
        Some(Btf::from_sys_fs().map_err(|e| format!("reading the kernel's BTF: {e}"))?)
    } else {
        None
    };
    let mut ebpf = loader_without_kernel_btf()
        .btf(btf.as_ref())
        .override_global("PORTWATCH_CONFIG", &config, true)
        .map_max_entries("EVENTS", ringbuf_bytes)
        .load(EBPF_OBJECT)
        .map_err(|e| format!("loading the eBPF object: {}", error_chain(&e)))?;
    let logger = match aya_log::EbpfLogger::init(&mut ebpf) {
        Ok(l) => Some(l),
        Err(e) => {
            warnings.push(format!("kernel-side log messages unavailable: {e}"));
            None
        }
    };
    let mut attached = Vec::new();
    for hook in &hooks {
        hook.attach(&mut ebpf, btf.as_ref())
            .map_err(|e| format!("{}: {e}", hook.label()))?;
        attached.push(hook.label());
    }
    let events = ebpf
        .take_map("EVENTS")
        .ok_or_else(|| "map EVENTS is missing".to_string())
        .and_then(|m| RingBuf::try_from(m).map_err(|e| format!("map EVENTS: {e}")))?;
    let lost = ebpf
        .take_map("LOST")
        .ok_or_else(|| "map LOST is missing".to_string())
        .and_then(|m| PerCpuArray::try_from(m).map_err(|e| format!("map LOST: {e}")))?;
    let socks = ebpf
        .take_map("SOCKS")
        .and_then(|m| aya::maps::HashMap::try_from(m).ok());
    let listeners = ebpf
        .take_map("LISTENERS")
        .and_then(|m| aya::maps::HashMap::try_from(m).ok());
    Ok(Tracer {
        ebpf,
        events: Some(events),
        logger,
        lost,
        socks,
        listeners,
        mode,
        attached,
        warnings,
    })
}

/// Load in the chosen mode, or with `auto` in the first mode that works.
pub fn load(options: &LoadOptions) -> Result<Tracer, LoadError> {
    let mut kernel = inspect_kernel()?;
    kernel.accept_syscalls = options.accept_syscalls;
    options.filter.apply_to_kernel(&mut kernel.config);
    if options.wakeup_events > 1 {
        kernel.config.wakeup_bytes = options
            .wakeup_events
            .saturating_mul(portwatch_common::Event::SIZE as u32)
            .min(options.ringbuf_bytes / 2);
    }
    let mut refusals = Vec::new();
    for &mode in options.attach.modes() {
        match load_mode(&kernel, mode, options.ringbuf_bytes) {
            Ok(mut tracer) => {
                for (m, why) in &refusals {
                    tracer
                        .warnings
                        .push(format!("attach mode {m} not available: {why}"));
                }
                return Ok(tracer);
            }
            Err(reason) => refusals.push((mode.name(), reason)),
        }
    }
    match (options.attach, refusals.pop()) {
        (AttachChoice::Auto, last) => {
            let mut all: Vec<String> = refusals.iter().map(|(m, r)| format!("{m}: {r}")).collect();
            all.extend(last.map(|(m, r)| format!("{m}: {r}")));
            Err(LoadError::NoMode(all.join("; ")))
        }
        (_, Some((mode, reason))) => Err(LoadError::ModeRefused { mode, reason }),
        (_, None) => Err(LoadError::NoMode("no mode was tried".into())),
    }
}

impl Tracer {
    /// Events the kernel side could not put in the ring buffer, per CPU.
    pub fn lost_per_cpu(&self) -> Vec<u64> {
        self.lost
            .get(&0, 0)
            .map(|per_cpu| per_cpu.iter().copied().collect())
            .unwrap_or_default()
    }

    /// Program runs the kernel skipped because another BPF program was already
    /// running on that CPU (its recursion guard): each may have carried an event.
    /// Read from every program's `recursion_misses`.
    pub fn skipped_runs(&self) -> u64 {
        self.ebpf
            .programs()
            .filter_map(|(_, p)| p.fd().ok())
            .map(|fd| bpf_sys::recursion_misses(std::os::fd::AsFd::as_fd(fd)))
            .sum()
    }

    /// Sockets the kernel side tracks now.
    pub fn socket_map_entries(&self) -> u64 {
        self.socks.as_ref().map_or(0, |m| m.keys().count() as u64)
    }

    /// Listeners the kernel side tracks now.
    pub fn listener_map_entries(&self) -> u64 {
        self.listeners
            .as_ref()
            .map_or(0, |m| m.keys().count() as u64)
    }
}
