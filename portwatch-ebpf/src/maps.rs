//! Every map the programs share. All are bounded or tied to a socket's life: socket
//! storage lives exactly as long as its socket; the LRU hash (no socket storage)
//! evicts the least recently used socket, and that is counted when it shows.
//! Each is named like its `portwatch_common::names::MAP_*` constant.
use aya_ebpf::{
    bindings::BPF_F_NO_PREALLOC,
    btf_maps::SkStorage,
    macros::{btf_map, map},
    maps::{HashMap, LruHashMap, PerCpuArray, RingBuf},
};
use portwatch_common::{
    Counter, ListenKey, SockInfo, UdpFlowKey, ACCEPTED_MAX_ENTRIES, LISTENERS_MAX_ENTRIES,
    PENDING_ARGS_MAX_ENTRIES, RINGBUF_DEFAULT_BYTES, SOCKS_MAX_ENTRIES, UDP_FLOWS_MAX_ENTRIES,
    UDP_SOCKS_MAX_ENTRIES,
};

use crate::names::named;

/// The one channel to userspace. Its size can be changed at load time.
#[map]
pub static EVENTS: RingBuf = RingBuf::with_byte_size(RINGBUF_DEFAULT_BYTES, 0);
named!(EVENTS, MAP_EVENTS);

/// Per-socket owners where socket storage is not used, keyed by the `struct sock`
/// address. Userspace sizes it (`--max-sockets`), and to one entry when socket
/// storage is used.
#[map]
pub static SOCKS: LruHashMap<u64, SockInfo> = LruHashMap::with_max_entries(SOCKS_MAX_ENTRIES, 0);
named!(SOCKS, MAP_SOCKS);

/// Per-socket owners in socket storage: created at the socket's first state change
/// the kernel side sees, freed with the socket.
#[btf_map]
pub static SK_OWNERS: SkStorage<SockInfo> = SkStorage::new();
named!(SK_OWNERS, MAP_SK_OWNERS);

/// Exact owners of accepted sockets that an accept program could not put in socket
/// storage (`ConfigFlag::AcceptsPending`), until the socket's next state change
/// moves them there. Allocated as used; full means not recorded (counted).
#[map]
pub static ACCEPTED: HashMap<u64, SockInfo> =
    HashMap::with_max_entries(ACCEPTED_MAX_ENTRIES, BPF_F_NO_PREALLOC);
named!(ACCEPTED, MAP_ACCEPTED);

/// Owner of each listening (family, port).
#[map]
pub static LISTENERS: LruHashMap<ListenKey, SockInfo> =
    LruHashMap::with_max_entries(LISTENERS_MAX_ENTRIES, 0);
named!(LISTENERS, MAP_LISTENERS);

/// What could not be done, per CPU, indexed by `Counter`.
#[map]
pub static COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(Counter::COUNT, 0);
named!(COUNTERS, MAP_COUNTERS);

/// UDP sockets seen bound, connected or sending, by inode number: who did it
/// first, and when (LRU).
#[map]
pub static UDP_SOCKS: LruHashMap<u32, SockInfo> =
    LruHashMap::with_max_entries(UDP_SOCKS_MAX_ENTRIES, 0);
named!(UDP_SOCKS, MAP_UDP_SOCKS);

/// The UDP flows already reported (LRU): one event per socket and peer while the
/// flow stays in the table.
#[map]
pub static UDP_FLOWS: LruHashMap<UdpFlowKey, u8> =
    LruHashMap::with_max_entries(UDP_FLOWS_MAX_ENTRIES, 0);
named!(UDP_FLOWS, MAP_UDP_FLOWS);

/// A call's arguments, left by its entry for its return (`probes::udp_hooks`).
#[repr(C)]
#[derive(Clone, Copy)]
pub struct Pending {
    /// A `probes::udp_hooks::Call`.
    pub call: u32,
    pub _pad: u32,
    pub a: u64,
    pub b: u64,
    pub c: u64,
}

/// Per thread (pid_tgid), the arguments of the call it is in (LRU: a thread
/// killed in between leaves nothing behind for long).
#[map]
pub static PENDING_ARGS: LruHashMap<u64, Pending> =
    LruHashMap::with_max_entries(PENDING_ARGS_MAX_ENTRIES, 0);
named!(PENDING_ARGS, MAP_PENDING_ARGS);
