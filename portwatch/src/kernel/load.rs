//! Loading the embedded eBPF object and attaching it in one attach mode: the only
//! module that talks to aya's program API.
use aya::{
    programs::{BtfTracePoint, FEntry, FExit, KProbe, Lsm, Program, TracePoint},
    Btf, Ebpf, EbpfLoader,
};
use portwatch_common::{
    names::{GLOBAL_CONFIG, MAP_ACCEPTED, MAP_EVENTS, MAP_SOCKS, TP_INET_SOCK_SET_STATE},
    ConfigFlag,
};

use super::{
    btf_ids,
    error::{one_line, LoadError, ModeError},
    filter::KernelFilter,
    inspect::{inspect_kernel, KernelInfo},
    lsm,
    plan::{plan, refused_early, AttachChoice, AttachMode, Attempt, Floor, Hook, Plan},
    store::{SocketStore, StoreChoice, StoreInfo},
    tracer::Tracer,
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
    /// Which protocols' programs to attach (`--proto`; empty: both).
    pub protos: Vec<crate::event::model::Transport>,
    /// Where socket owners are kept.
    pub store: StoreChoice,
    /// `--max-sockets`: the cap of the owner map in use, when one is.
    pub max_sockets: Option<u32>,
    /// `--bench-floor`: one empty program instead of portwatch's.
    pub floor: Option<Floor>,
}

/// What loading one mode needs beyond the kernel's facts.
#[derive(Clone, Copy, Debug)]
pub struct ModeOptions {
    pub ringbuf_bytes: u32,
    pub store: StoreChoice,
    pub max_sockets: Option<u32>,
    pub floor: Option<Floor>,
}

/// Load (when not loaded yet) and attach one hook's program.
fn attach(hook: &Hook, ebpf: &mut Ebpf, btf: &Btf) -> Result<(), ModeError> {
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
        Hook::BtfTracepoint { name, .. } => {
            let p: &mut BtfTracePoint = prog.try_into().map_err(failed)?;
            p.load(name, btf).map_err(failed)?;
            p.attach().map_err(failed)?;
        }
        Hook::Fexit { function, .. } => {
            let p: &mut FExit = prog.try_into().map_err(failed)?;
            p.load(function, btf).map_err(failed)?;
            p.attach().map_err(failed)?;
        }
        Hook::Fentry { function, .. } => {
            let p: &mut FEntry = prog.try_into().map_err(failed)?;
            p.load(function, btf).map_err(failed)?;
            p.attach().map_err(failed)?;
        }
        Hook::Kprobe { function, .. } | Hook::Kretprobe { function, .. } => {
            let p: &mut KProbe = prog.try_into().map_err(failed)?;
            if p.fd().is_err() {
                p.load().map_err(failed)?;
            }
            p.attach(function, 0).map_err(failed)?;
        }
        Hook::Lsm { hook, .. } => {
            let p: &mut Lsm = prog.try_into().map_err(failed)?;
            p.load(hook, btf).map_err(failed)?;
            p.attach().map_err(failed)?;
        }
    }
    Ok(())
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

/// Load and attach `mode` completely, with owners in socket storage where
/// `options.store` allows and the kernel takes it, else in the LRU map; or fail
/// with the kernel's reason. On failure nothing stays attached (the partly
/// attached object is dropped).
pub fn load_mode(
    kernel: &KernelInfo,
    mode: AttachMode,
    options: &ModeOptions,
) -> Result<Tracer, ModeError> {
    refused_early(mode, kernel)?;
    let mut store_refused = None;
    for &store in options.store.stores() {
        let mut lsm_refused = None;
        for &lsm in lsm_choices(kernel, mode) {
            match load_with(kernel, Attempt { mode, store, lsm }, options) {
                Ok(mut tracer) => {
                    if let Some(why) = store_refused.take() {
                        tracer.warnings.push(format!(
                            "socket storage not available ({}): {}",
                            one_line(&why),
                            tracer.store.describe()
                        ));
                    }
                    if let Some(why) = lsm_refused.take() {
                        tracer.warnings.push(format!(
                            "the BPF LSM accept hook was refused ({}): the accept syscall tracepoints name accepting processes instead",
                            one_line(&why)
                        ));
                    }
                    return Ok(tracer);
                }
                Err(e) if lsm => lsm_refused = Some(e),
                Err(e) => {
                    store_refused = Some(e);
                    break;
                }
            }
        }
        // Both accept hooks refused with this store: the store is the likelier
        // reason.
        if let Some(why) = lsm_refused {
            store_refused.get_or_insert(why);
        }
    }
    Err(store_refused.unwrap_or(ModeError::NoBtfTracepoint))
}

/// Whether to try the BPF LSM accept hook (first) and the syscall tracepoints:
/// only tracepoint mode chooses, and the LSM hook only where the BPF LSM is
/// active.
fn lsm_choices(kernel: &KernelInfo, mode: AttachMode) -> &'static [bool] {
    if mode == AttachMode::Tracepoint && kernel.accept_syscalls && kernel.accept_lsm.is_ok() {
        &[true, false]
    } else {
        &[false]
    }
}

fn load_with(
    kernel: &KernelInfo,
    attempt: Attempt,
    options: &ModeOptions,
) -> Result<Tracer, ModeError> {
    let Plan {
        mut hooks,
        config,
        mut warnings,
    } = plan(attempt, kernel)?;
    if let Some(floor) = options.floor {
        hooks = floor.hooks();
    }
    let store = StoreInfo::new(
        attempt.store,
        ConfigFlag::AcceptsPending.is_set(config.flags),
        options.max_sockets,
    );
    if store.store == SocketStore::Lru {
        warnings.push(store.describe());
    }
    let btf = attach_targets(kernel, &hooks)?;
    // The owner map not in use is made as small as a map can be.
    let cap = store.map_cap.unwrap_or(1);
    let (socks, accepted) = match store.store {
        SocketStore::Lru => (cap, 1),
        SocketStore::Storage => (1, cap),
    };
    let mut ebpf = loader_without_kernel_btf()
        .override_global(GLOBAL_CONFIG, &config, true)
        .map_max_entries(MAP_EVENTS, options.ringbuf_bytes)
        .map_max_entries(MAP_SOCKS, socks)
        .map_max_entries(MAP_ACCEPTED, accepted)
        .load(EBPF_OBJECT)
        .map_err(|e| ModeError::LoadObject(Box::new(e)))?;
    let mut attached = Vec::new();
    for hook in &hooks {
        attach(hook, &mut ebpf, &btf)?;
        attached.push(hook.label());
    }
    Tracer::new(ebpf, attempt.mode, store, attached, warnings)
}

/// A BTF holding the kernel ids the tracing programs among `hooks` attach to.
fn attach_targets(kernel: &KernelInfo, hooks: &[Hook]) -> Result<Btf, ModeError> {
    let state_typedef = format!("btf_trace_{TP_INET_SOCK_SET_STATE}");
    let lsm_function = lsm::attach_function();
    let mut targets = Vec::new();
    for hook in hooks {
        match hook {
            Hook::BtfTracepoint { .. } => targets.push(btf_ids::Target::Typedef {
                name: &state_typedef,
                id: kernel.state_btf_id.ok_or(ModeError::NoBtfTracepoint)?,
            }),
            Hook::Fexit { function, .. } | Hook::Fentry { function, .. } => {
                targets.push(btf_ids::Target::Func {
                    name: function,
                    id: kernel
                        .function_id(function)
                        .ok_or(ModeError::AcceptPrototypeUnknown)?,
                })
            }
            Hook::Lsm { .. } => targets.push(btf_ids::Target::Func {
                name: &lsm_function,
                id: *kernel.accept_lsm.as_ref().map_err(|_| ModeError::NoLsm)?,
            }),
            _ => {}
        }
    }
    btf_ids::btf_with(&targets).map_err(|e| ModeError::ReadBtf(Box::new(e)))
}

/// Load in the chosen mode, or with `auto` in the first mode that works.
pub fn load(options: &LoadOptions) -> Result<Tracer, LoadError> {
    if !has_programs() {
        return Err(LoadError::NoPrograms);
    }
    let mut kernel = inspect_kernel()?;
    kernel.accept_syscalls = options.accept_syscalls;
    {
        use crate::event::model::Transport;
        let wants = |t| options.protos.is_empty() || options.protos.contains(&t);
        kernel.trace_tcp = wants(Transport::Tcp);
        kernel.trace_udp = wants(Transport::Udp);
    }
    options.filter.write_to(&mut kernel.config);
    if options.wakeup_events > 1 {
        kernel.config.wakeup_bytes = options
            .wakeup_events
            .saturating_mul(portwatch_common::Event::SIZE as u32)
            .min(options.ringbuf_bytes / 2);
    }
    let mode_options = ModeOptions {
        ringbuf_bytes: options.ringbuf_bytes,
        store: options.store,
        max_sockets: options.max_sockets,
        floor: options.floor,
    };
    let mut refusals: Vec<(&'static str, ModeError)> = Vec::new();
    for &mode in options.attach.modes() {
        match load_mode(&kernel, mode, &mode_options) {
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
