//! Every map the programs share. All are bounded: LRU hashes evict the least recently
//! used socket rather than fail, and entries are deleted when their socket closes.
//! Each is named like its `portwatch_common::names::MAP_*` constant.
use aya_ebpf::{
    macros::map,
    maps::{LruHashMap, PerCpuArray, RingBuf},
};
use portwatch_common::{
    ListenKey, SockInfo, LISTENERS_MAX_ENTRIES, RINGBUF_DEFAULT_BYTES, SOCKS_MAX_ENTRIES,
};

use crate::names::named;

/// The one channel to userspace. Its size can be changed at load time.
#[map]
pub static EVENTS: RingBuf = RingBuf::with_byte_size(RINGBUF_DEFAULT_BYTES, 0);
named!(EVENTS, MAP_EVENTS);

/// Per-socket state between transitions, keyed by the `struct sock` address.
#[map]
pub static SOCKS: LruHashMap<u64, SockInfo> = LruHashMap::with_max_entries(SOCKS_MAX_ENTRIES, 0);
named!(SOCKS, MAP_SOCKS);

/// Owner of each listening (family, port).
#[map]
pub static LISTENERS: LruHashMap<ListenKey, SockInfo> =
    LruHashMap::with_max_entries(LISTENERS_MAX_ENTRIES, 0);
named!(LISTENERS, MAP_LISTENERS);

/// Events that could not be reserved in the ring buffer, per CPU (index 0).
#[map]
pub static LOST: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);
named!(LOST, MAP_LOST);
