//! Loading the embedded eBPF object and attaching it in one attach mode: the only
//! module that talks to aya's program API.
use aya::{
    maps::{MapData, PerCpuArray, RingBuf},
    programs::{FEntry, FExit, KProbe, Program, TracePoint},
    Btf, Ebpf, EbpfLoader,
};

use portwatch_common::names::{GLOBAL_CONFIG, MAP_EVENTS, MAP_LISTENERS, MAP_LOST, MAP_SOCKS};

use super::{
    bpf_sys,
    error::{one_line, LoadError, ModeError},
    filter::KernelFilter,
    inspect::{inspect_kernel, KernelInfo},
    plan::{plan, refused_early, AttachChoice, AttachMode, Hook},
};

/// The eBPF object, built by `cargo xtask build-ebpf` before this crate (a stub
/// without programs in `cargo check`/`cargo test` builds: see build.rs).
static EBPF_OBJECT: &[u8] = aya::include_bytes_aligned!(env!("PORTWATCH_EBPF_OBJECT"));

/// Whether this binary carries the real eBPF programs (not build.rs's stub).
pub fn has_programs() -> bool {
    !EBPF_OBJECT.is_empty()
}

/// What a run asks of the kernel side.
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
    /// Applied before events are reserved.
    pub filter: KernelFilter,
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

/// Load (when not loaded yet) and attach one hook's program.
fn attach(hook: &Hook, ebpf: &mut Ebpf, btf: Option<&Btf>) -> Result<(), ModeError> {
    let name = hook.program();
    let prog: &mut Program = ebpf
        .program_mut(name)
        .ok_or(ModeError::ProgramMissing(name))?;
    let failed = |source| ModeError::Attach {
        hook: hook.label(),
        source,
    };
    match hook {
        Hook::Tracepoint { category, name, .. } => {
            let p: &mut TracePoint = prog.try_into().map_err(failed)?;
            if p.fd().is_err() {
                p.load().map_err(failed)?;
            }
            p.attach(category, name).map_err(failed)?;
        }
        Hook::Fentry { function, .. } => {
            let p: &mut FEntry = prog.try_into().map_err(failed)?;
            p.load(function, btf.ok_or(ModeError::NoBtf)?)
                .map_err(failed)?;
            p.attach().map_err(failed)?;
        }
        Hook::Fexit { function, .. } => {
            let p: &mut FExit = prog.try_into().map_err(failed)?;
            p.load(function, btf.ok_or(ModeError::NoBtf)?)
                .map_err(failed)?;
            p.attach().map_err(failed)?;
        }
        Hook::Kprobe { function, .. } | Hook::Kretprobe { function, .. } => {
            let p: &mut KProbe = prog.try_into().map_err(failed)?;
            p.load().map_err(failed)?;
            p.attach(function, 0).map_err(failed)?;
        }
    }
    Ok(())
}

/// Take a map the kernel side must have.
fn take_map<M: TryFrom<aya::maps::Map, Error = aya::maps::MapError>>(
    ebpf: &mut Ebpf,
    name: &'static str,
) -> Result<M, ModeError> {
    let map = ebpf.take_map(name).ok_or(ModeError::MapMissing(name))?;
    M::try_from(map).map_err(|source| ModeError::Map { name, source })
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

/// Load and attach `mode` completely, or fail with the kernel's reason; on failure
/// nothing stays attached (the partly attached object is dropped).
pub fn load_mode(
    kernel: &KernelInfo,
    mode: AttachMode,
    ringbuf_bytes: u32,
) -> Result<Tracer, ModeError> {
    let mut config = kernel.config;
    let mut warnings = kernel.warnings.clone();
    let hooks = plan(mode, kernel, &mut config, &mut warnings)?;
    refused_early(mode, kernel)?;
    // aya's whole-kernel BTF (slow to parse, megabytes in memory) is needed only to
    // find fentry/fexit targets: the object has no CO-RE relocations (offsets come
    // from kernel_btf, through the config).
    let btf = if mode == AttachMode::Fentry {
        Some(Btf::from_sys_fs().map_err(ModeError::ReadBtf)?)
    } else {
        None
    };
    let mut ebpf = loader_without_kernel_btf()
        .btf(btf.as_ref())
        .override_global(GLOBAL_CONFIG, &config, true)
        .map_max_entries(MAP_EVENTS, ringbuf_bytes)
        .load(EBPF_OBJECT)
        .map_err(ModeError::LoadObject)?;
    let logger = match aya_log::EbpfLogger::init(&mut ebpf) {
        Ok(l) => Some(l),
        Err(e) => {
            warnings.push(format!("kernel-side log messages unavailable: {e}"));
            None
        }
    };
    let mut attached = Vec::new();
    for hook in &hooks {
        attach(hook, &mut ebpf, btf.as_ref())?;
        attached.push(hook.label());
    }
    let events = take_map(&mut ebpf, MAP_EVENTS)?;
    let lost = take_map(&mut ebpf, MAP_LOST)?;
    let socks = ebpf
        .take_map(MAP_SOCKS)
        .and_then(|m| aya::maps::HashMap::try_from(m).ok());
    let listeners = ebpf
        .take_map(MAP_LISTENERS)
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
    if !has_programs() {
        return Err(LoadError::NoPrograms);
    }
    let mut kernel = inspect_kernel()?;
    kernel.accept_syscalls = options.accept_syscalls;
    options.filter.write_to(&mut kernel.config);
    if options.wakeup_events > 1 {
        kernel.config.wakeup_bytes = options
            .wakeup_events
            .saturating_mul(portwatch_common::Event::SIZE as u32)
            .min(options.ringbuf_bytes / 2);
    }
    let mut refusals: Vec<(&'static str, ModeError)> = Vec::new();
    for &mode in options.attach.modes() {
        match load_mode(&kernel, mode, options.ringbuf_bytes) {
            Ok(mut tracer) => {
                for (m, why) in &refusals {
                    tracer
                        .warnings
                        .push(format!("attach mode {m} not available: {}", one_line(why)));
                }
                return Ok(tracer);
            }
            Err(reason) => refusals.push((mode.name(), reason)),
        }
    }
    match (options.attach, refusals.pop()) {
        (AttachChoice::Auto, last) => {
            refusals.extend(last);
            Err(LoadError::NoMode(refusals))
        }
        (_, Some((mode, reason))) => Err(LoadError::ModeRefused {
            mode,
            reason: Box::new(reason),
        }),
        (_, None) => Err(LoadError::NoMode(Vec::new())),
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
