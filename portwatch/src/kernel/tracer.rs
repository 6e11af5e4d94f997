//! A loaded, attached kernel side: its programs and the maps userspace reads.
use aya::{
    maps::{HashMap, MapData, PerCpuArray, RingBuf},
    Ebpf,
};
use portwatch_common::{
    names::{MAP_ACCEPTED, MAP_COUNTERS, MAP_EVENTS, MAP_LISTENERS, MAP_SOCKS},
    Counter, ListenKey, SockInfo,
};

use super::{bpf_sys, error::ModeError, plan::AttachMode, store::StoreInfo};

/// Loaded, attached programs and the maps userspace reads. Dropping it detaches
/// every program.
pub struct Tracer {
    pub ebpf: Ebpf,
    /// Taken by the event loop while it runs.
    pub events: Option<RingBuf<MapData>>,
    /// What the kernel side could not do, per CPU (`portwatch_common::Counter`).
    counters: PerCpuArray<MapData, u64>,
    /// The owner map in use (LRU, or accepted sockets waiting for storage) and
    /// the listener map, for `--stats`.
    owner_map: Option<HashMap<MapData, u64, SockInfo>>,
    listeners: Option<HashMap<MapData, ListenKey, SockInfo>>,
    pub mode: AttachMode,
    /// Where socket owners are kept.
    pub store: StoreInfo,
    /// Every hook attached, e.g. `fentry:tcp_connect`, `sock:inet_sock_set_state`.
    pub attached: Vec<String>,
    /// What this kernel does not allow and what that costs in exactness.
    pub warnings: Vec<String>,
}

impl Tracer {
    pub(super) fn new(
        mut ebpf: Ebpf,
        mode: AttachMode,
        store: StoreInfo,
        attached: Vec<String>,
        warnings: Vec<String>,
    ) -> Result<Tracer, ModeError> {
        let events = take_map(&mut ebpf, MAP_EVENTS)?;
        let counters = take_map(&mut ebpf, MAP_COUNTERS)?;
        let owner_map = match store.store {
            super::store::SocketStore::Lru => MAP_SOCKS,
            super::store::SocketStore::Storage => MAP_ACCEPTED,
        };
        let owner_map = ebpf
            .take_map(owner_map)
            .and_then(|m| HashMap::try_from(m).ok());
        let listeners = ebpf
            .take_map(MAP_LISTENERS)
            .and_then(|m| HashMap::try_from(m).ok());
        Ok(Tracer {
            ebpf,
            events: Some(events),
            counters,
            owner_map,
            listeners,
            mode,
            store,
            attached,
            warnings,
        })
    }

    /// One counter, per CPU.
    pub fn counter_per_cpu(&self, counter: Counter) -> Vec<u64> {
        self.counters
            .get(&(counter as u32), 0)
            .map(|per_cpu| per_cpu.iter().copied().collect())
            .unwrap_or_default()
    }

    /// One counter, over every CPU.
    pub fn counter(&self, counter: Counter) -> u64 {
        self.counter_per_cpu(counter).iter().sum()
    }

    /// Events the kernel side could not put in the ring buffer, per CPU.
    pub fn lost_per_cpu(&self) -> Vec<u64> {
        self.counter_per_cpu(Counter::Lost)
    }
    /// Program runs the kernel skipped because the same program was already
    /// running on that CPU (its recursion guard: another state change came while
    /// it ran): each may have carried an event. Read from every program's
    /// `recursion_misses`, the BTF state program's twin included.
    ///
    /// An upper bound: the BTF state program's twin handles most of that
    /// program's misses (`Counter::NestedCaught` says how many; `--stats` reports
    /// it), but not subtracting them keeps the count from ever falling short of
    /// what was lost.
    pub fn skipped_runs(&self) -> u64 {
        self.skipped_runs_per_program().iter().map(|(_, n)| n).sum()
    }

    /// [`Tracer::skipped_runs`] by program name.
    pub fn skipped_runs_per_program(&self) -> Vec<(String, u64)> {
        self.ebpf
            .programs()
            .filter_map(|(name, p)| Some((name, p.fd().ok()?)))
            .map(|(name, fd)| {
                let misses = bpf_sys::recursion_misses(std::os::fd::AsFd::as_fd(fd));
                (name.to_string(), misses)
            })
            .collect()
    }

    /// Entries of the owner map in use now (none with socket storage alone).
    pub fn socket_map_entries(&self) -> u64 {
        self.owner_map
            .as_ref()
            .map_or(0, |m| m.keys().count() as u64)
    }

    /// Listeners the kernel side tracks now.
    pub fn listener_map_entries(&self) -> u64 {
        self.listeners
            .as_ref()
            .map_or(0, |m| m.keys().count() as u64)
    }
}

/// Take a map the kernel side must have.
fn take_map<M: TryFrom<aya::maps::Map, Error = aya::maps::MapError>>(
    ebpf: &mut Ebpf,
    name: &'static str,
) -> Result<M, ModeError> {
    let map = ebpf.take_map(name).ok_or(ModeError::MapMissing(name))?;
    M::try_from(map).map_err(|source| ModeError::Map { name, source })
}
