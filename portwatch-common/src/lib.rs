//! Facts shared by the eBPF programs and the userspace loader.
//!
//! - [`values`]: what the raw bytes in records mean ([`EventKind`], [`Origin`],
//!   [`TcpState`], [`OwnerFlag`], [`ConfigFlag`]), as typed enums with checked
//!   conversions from the raw integers.
//! - [`records`]: the `#[repr(C)]` records the kernel side writes ([`Event`],
//!   [`SockInfo`], [`ListenKey`]). Their fields stay raw integers: the kernel writes
//!   bytes, and an enum field holding an invalid value would be undefined
//!   behaviour. Accessors ([`Event::kind`], ...) give the typed values.
//! - [`config`]: the load-time [`Config`] userspace fills in before loading.
//! - [`offsets`]: every kernel offset the kernel side needs, in one list
//!   ([`KernelOffsets`], [`Offset`], [`OffsetSource`]).
//! - [`names`]: program, map, global and hook names both sides must agree on.
//!
//! Everything shared in memory is `#[repr(C)]` with explicit padding, so the byte
//! layout the kernel writes is exactly the layout userspace reads. The aya `Pod`
//! impls that let userspace read and write these types live behind the `user`
//! feature.
//!
//! # Where kernels differ
//!
//! The kernel side keeps its version differences in one module
//! (`portwatch-ebpf/src/kernel_versions.rs`). Two of them need userspace to choose:
//!
//! - `inet_csk_accept` took four arguments before Linux 6.10 and takes two since.
//!   fexit reads the returned sock after the arguments, at a constant context
//!   offset, so there is one fexit program per prototype: userspace counts the
//!   parameters in the kernel's BTF and loads [`names::fexit_accept_program`]'s
//!   choice ([`names::PROG_FEXIT_ACCEPT_4ARGS`] or [`names::PROG_FEXIT_ACCEPT_2ARGS`]).
//! - Members that do not exist (or are bitfields) on a kernel switch a feature off:
//!   userspace sets a [`ConfigFlag`] only when every [`Offset`] whose
//!   [`OffsetSource::Btf`] names that feature was found. `sock.sk_protocol` is a
//!   bitfield before Linux 5.6 ([`ConfigFlag::SkProtocol`] stays off there), and
//!   `task_struct.start_boottime` exists since Linux 5.5 (before, it was called
//!   `real_start_time`; [`ConfigFlag::TaskFields`] stays off there).
#![no_std]

pub mod config;
pub mod names;
pub mod offsets;
pub mod records;
pub mod values;

pub use config::{Config, FILTER_MAX};
pub use offsets::{KernelOffsets, Offset, OffsetSource};
pub use records::{Event, ListenKey, SockInfo, UdpFlowKey, COMM_LEN};
pub use values::{ConfigFlag, Counter, EventKind, Origin, OwnerFlag, TcpState, UnknownValue};

/// `AF_INET` / `AF_INET6` as the kernel spells them.
pub const AF_INET: u16 = 2;
pub const AF_INET6: u16 = 10;
/// `IPPROTO_TCP` and `IPPROTO_UDP`.
pub const IPPROTO_TCP: u16 = 6;
pub const IPPROTO_UDP: u16 = 17;

/// Default capacity of the per-socket LRU map, where socket storage is not used
/// (`--max-sockets`; preallocated: about 9 MB of kernel memory).
pub const SOCKS_MAX_ENTRIES: u32 = 65_536;
/// Default capacity of the map of accepted sockets waiting to move into socket
/// storage (`--max-sockets` with socket storage; allocated as used).
pub const ACCEPTED_MAX_ENTRIES: u32 = 262_144;
/// Capacity of the UDP socket map (LRU, keyed by inode number): the owner of each
/// UDP socket the kernel side has seen bound, connected or sending.
pub const UDP_SOCKS_MAX_ENTRIES: u32 = 65_536;
/// Capacity of the UDP flow table (LRU): each (socket, peer) reported once while
/// it stays in the table.
pub const UDP_FLOWS_MAX_ENTRIES: u32 = 65_536;
/// Capacity of the per-thread table of syscall or kprobe arguments waiting for
/// the return (LRU: a thread killed in between leaves nothing behind for long).
pub const PENDING_ARGS_MAX_ENTRIES: u32 = 16_384;
/// Capacity of the listener map (LRU).
pub const LISTENERS_MAX_ENTRIES: u32 = 4_096;
/// Default ring buffer size in bytes (a power of two, a multiple of the page size).
pub const RINGBUF_DEFAULT_BYTES: u32 = 1 << 20;
/// Default wakeup batch: this many events wait before the reader is woken.
pub const WAKEUP_EVENTS_DEFAULT: u32 = 64;

#[cfg(feature = "user")]
mod pod {
    // SAFETY: all of these are #[repr(C)], made only of integers and integer
    // arrays (or structs of them), with every padding byte spelled out as a field.
    unsafe impl aya::Pod for super::Event {}
    unsafe impl aya::Pod for super::SockInfo {}
    unsafe impl aya::Pod for super::ListenKey {}
    unsafe impl aya::Pod for super::UdpFlowKey {}
    unsafe impl aya::Pod for super::Config {}
    unsafe impl aya::Pod for super::KernelOffsets {}
}
