//! Types shared by the eBPF programs and the userspace loader.
//!
//! Everything here is `#[repr(C)]` with explicit padding, so the byte layout the
//! kernel writes is exactly the layout userspace reads. The aya `Pod` impls that let
//! userspace read and write these types live behind the `user` feature.
#![no_std]

/// Length of a task's `comm` in the kernel, including the trailing NUL.
pub const COMM_LEN: usize = 16;

/// `AF_INET` / `AF_INET6` as the kernel spells them.
pub const AF_INET: u16 = 2;
pub const AF_INET6: u16 = 10;
/// `IPPROTO_TCP`.
pub const IPPROTO_TCP: u16 = 6;

/// TCP states as numbered in `include/net/tcp_states.h`.
pub mod tcp_state {
    pub const ESTABLISHED: u8 = 1;
    pub const SYN_SENT: u8 = 2;
    pub const SYN_RECV: u8 = 3;
    pub const FIN_WAIT1: u8 = 4;
    pub const FIN_WAIT2: u8 = 5;
    pub const TIME_WAIT: u8 = 6;
    pub const CLOSE: u8 = 7;
    pub const CLOSE_WAIT: u8 = 8;
    pub const LAST_ACK: u8 = 9;
    pub const LISTEN: u8 = 10;
    pub const CLOSING: u8 = 11;
    pub const NEW_SYN_RECV: u8 = 12;
}

/// What happened to a socket.
pub mod event_kind {
    /// `listen()` put the socket in LISTEN.
    pub const LISTEN: u8 = 1;
    /// `accept()`/`accept4()` handed an established connection to a process.
    pub const ACCEPT: u8 = 2;
    /// An outgoing connection reached ESTABLISHED.
    pub const CONNECT: u8 = 3;
    /// An outgoing connection went from SYN_SENT to CLOSE.
    pub const CONNECT_FAILED: u8 = 4;
    /// A connection or listener reached CLOSE.
    pub const CLOSE: u8 = 5;
}

/// Which end of a connection the local socket is, as the kernel side saw it begin.
pub mod origin {
    /// Not seen begin (it existed before tracing started).
    pub const UNKNOWN: u8 = 0;
    pub const LISTENER: u8 = 1;
    pub const SERVER: u8 = 2;
    pub const CLIENT: u8 = 3;
}

/// Bits of [`Event::flags`] and [`SockInfo::flags`].
pub mod flags {
    /// `pid`, `tid`, `uid` and `comm` name a process (otherwise they are zero).
    pub const OWNER_KNOWN: u8 = 1;
    /// The owner was read in the process's own context (listen, connect, accept),
    /// not inferred (for example from the listener of a never-accepted connection).
    pub const PID_EXACT: u8 = 2;
}

/// One record in the ring buffer.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Event {
    /// `bpf_ktime_get_ns()` (CLOCK_MONOTONIC) when the event happened.
    pub ts_ns: u64,
    /// Kernel address of the `struct sock`: an opaque id, stable for the socket's life.
    pub sock_id: u64,
    /// Connect: SYN_SENT to ESTABLISHED. Close: lifetime from the start of the
    /// connection (or listen). Otherwise 0.
    pub duration_ns: u64,
    /// Process id (the kernel's tgid).
    pub pid: u32,
    /// Thread id (the kernel's pid).
    pub tid: u32,
    pub uid: u32,
    /// Connect-failed: the socket's error (`sk_err`, a positive errno), or 0.
    pub error: i32,
    /// Local port, host byte order.
    pub sport: u16,
    /// Remote port, host byte order.
    pub dport: u16,
    /// `AF_INET` or `AF_INET6`.
    pub family: u16,
    /// One of [`event_kind`].
    pub kind: u8,
    /// One of [`origin`].
    pub origin: u8,
    pub old_state: u8,
    pub new_state: u8,
    /// Bits of [`flags`].
    pub flags: u8,
    pub _pad0: u8,
    /// Local address: IPv4 in the first 4 bytes, or IPv6.
    pub saddr: [u8; 16],
    /// Remote address, laid out like `saddr`.
    pub daddr: [u8; 16],
    /// Task name, NUL-padded.
    pub comm: [u8; COMM_LEN],
    /// Parent process id (0 when the kernel's BTF did not give the offsets).
    pub ppid: u32,
    /// cgroup v2 id of the process (the inode number of its cgroup directory).
    pub cgroup_id: u64,
    /// The process's start time, ns since boot (`task_struct.start_boottime`; 0 when
    /// unknown): with the pid it names one process, so userspace can tell whether
    /// /proc/PID is still the same process.
    pub task_start_ns: u64,
}

impl Event {
    pub const SIZE: usize = core::mem::size_of::<Event>();
}

/// What the kernel side remembers about a socket between its state changes.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SockInfo {
    /// When the connection (or listen) began, CLOCK_MONOTONIC ns.
    pub start_ns: u64,
    pub pid: u32,
    pub tid: u32,
    pub uid: u32,
    /// One of [`origin`].
    pub origin: u8,
    /// Bits of [`flags`].
    pub flags: u8,
    pub _pad0: u16,
    pub comm: [u8; COMM_LEN],
    pub ppid: u32,
    pub _pad1: u32,
    pub cgroup_id: u64,
    pub task_start_ns: u64,
}

/// Who owns a listening port: kept per (family, port) so a connection that is closed
/// before any process accepts it can still be attributed, inexactly, to its listener.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ListenKey {
    pub family: u16,
    pub port: u16,
}

/// Capacity of the per-socket map (LRU: the least recently used entry is evicted).
pub const SOCKS_MAX_ENTRIES: u32 = 65_536;
/// Capacity of the listener map (LRU).
pub const LISTENERS_MAX_ENTRIES: u32 = 4_096;
/// Default ring buffer size in bytes (a power of two, a multiple of the page size).
pub const RINGBUF_DEFAULT_BYTES: u32 = 1 << 20;
/// Default wakeup batch: this many events wait before the reader is woken.
pub const WAKEUP_EVENTS_DEFAULT: u32 = 64;

/// Offsets the kernel side needs but cannot know by itself: the tracepoint's
/// field layout (from the kernel's tracefs format files) and kernel struct member
/// offsets (from the kernel's BTF). Userspace fills this in before loading; it is
/// a read-only global in the eBPF object.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Config {
    /// `sock:inet_sock_set_state` field offsets.
    pub tp_skaddr: u32,
    pub tp_oldstate: u32,
    pub tp_newstate: u32,
    pub tp_sport: u32,
    pub tp_dport: u32,
    pub tp_family: u32,
    pub tp_protocol: u32,
    pub tp_saddr: u32,
    pub tp_daddr: u32,
    pub tp_saddr_v6: u32,
    pub tp_daddr_v6: u32,
    /// `syscalls:sys_exit_accept{,4}` offset of `ret`.
    pub tp_accept_ret: u32,
    /// `task_struct.files`, `files_struct.fdt`, `fdtable.max_fds`, `fdtable.fd`,
    /// `file.private_data`, `socket.sk`: the walk from an accepted fd to its sock.
    pub task_files: u32,
    pub files_fdt: u32,
    pub fdt_max_fds: u32,
    pub fdt_fd: u32,
    pub file_private_data: u32,
    pub socket_sk: u32,
    /// `sock.sk_err`.
    pub sk_err: u32,
    /// `sock.sk_protocol` (a whole u16 member since Linux 5.6).
    pub sk_protocol: u32,
    /// `sock_common` members, as offsets from the start of `struct sock`.
    pub skc_daddr: u32,
    pub skc_rcv_saddr: u32,
    pub skc_dport: u32,
    pub skc_num: u32,
    pub skc_family: u32,
    pub skc_state: u32,
    pub skc_v6_daddr: u32,
    pub skc_v6_rcv_saddr: u32,
    /// `task_struct.real_parent`, `task_struct.tgid`, `task_struct.start_boottime`.
    pub task_real_parent: u32,
    pub task_tgid: u32,
    pub task_start_boottime: u32,
    /// Filters applied before an event is reserved: only events of these processes,
    /// users, ports (either end) and family get through. A count of 0 means no filter.
    pub filter_pids: [u32; FILTER_MAX],
    pub filter_pid_count: u32,
    pub filter_uids: [u32; FILTER_MAX],
    pub filter_uid_count: u32,
    /// Ports, widened to u32 to keep the layout free of padding.
    pub filter_ports: [u32; FILTER_MAX],
    pub filter_port_count: u32,
    /// 0 (any), `AF_INET` or `AF_INET6`, as seen on the wire (IPv4-mapped is IPv4).
    pub filter_family: u32,
    /// Wake the reader only once this many bytes wait in the ring buffer (0: the
    /// kernel's own rule, a wakeup whenever the reader had caught up). The reader
    /// also drains on a short timer, so a lone event is never held back long.
    pub wakeup_bytes: u32,
    /// Bits of [`config_flags`].
    pub flags: u32,
}

/// How many values each kernel-side filter takes.
pub const FILTER_MAX: usize = 8;

pub mod config_flags {
    /// The `sock_common` offsets are valid: endpoints can be read from a sock.
    pub const SOCK_FIELDS: u32 = 1;
    /// The fd-to-sock walk offsets are valid.
    pub const FD_WALK: u32 = 2;
    /// `sock.sk_err` is valid: connect failures carry the kernel's reason.
    pub const SK_ERR: u32 = 4;
    /// `sock.sk_protocol` is a plain u16 member.
    pub const SK_PROTOCOL: u32 = 8;
    /// An accept program (sys_exit_accept, fexit or kretprobe on inet_csk_accept)
    /// is attached: the tracepoint does not report accepts itself.
    pub const ACCEPT_HOOKED: u32 = 16;
    /// A tcp_connect program is attached: it records connecting processes, not the
    /// tracepoint's CLOSE -> SYN_SENT.
    pub const CONNECT_HOOKED: u32 = 32;
    /// The task_struct offsets (parent, tgid, start time) are valid.
    pub const TASK_FIELDS: u32 = 64;
}

#[cfg(feature = "user")]
mod pod {
    // SAFETY: all of these are #[repr(C)], made only of integers and integer
    // arrays, with every padding byte spelled out as a field.
    unsafe impl aya::Pod for super::Event {}
    unsafe impl aya::Pod for super::SockInfo {}
    unsafe impl aya::Pod for super::ListenKey {}
    unsafe impl aya::Pod for super::Config {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layouts_have_no_hidden_padding() {
        assert_eq!(core::mem::size_of::<Event>(), 120);
        assert_eq!(core::mem::size_of::<SockInfo>(), 64);
        assert_eq!(core::mem::size_of::<ListenKey>(), 4);
        assert_eq!(core::mem::size_of::<Config>(), (29 + 3 + 3 * 9 + 2) * 4);
    }
}
