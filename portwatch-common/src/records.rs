//! The records the kernel side writes: ring-buffer events and map values.
//!
//! Fields that hold enum values stay raw integers (the kernel writes bytes; an
//! enum field holding an invalid value would be undefined behaviour); the accessors
//! give them typed, rejecting unknown values.
use crate::values::{EventKind, Origin, OwnerFlag, TcpState, UnknownValue};

/// Length of a task's `comm` in the kernel, including the trailing NUL.
pub const COMM_LEN: usize = 16;

/// One record in the ring buffer.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Event {
    /// `bpf_ktime_get_ns()` (CLOCK_MONOTONIC) when the event happened.
    pub ts_ns: u64,
    /// Kernel address of the `struct sock`. Not unique within a run: the kernel
    /// reuses a freed sock's memory for later sockets. With [`Event::sock_born_ns`]
    /// it names one socket.
    pub sock_id: u64,
    /// When the kernel side first recorded this socket (listen, connect, the
    /// child's creation on a listener, or an accept of a socket it had not seen),
    /// CLOCK_MONOTONIC ns; the same in every event of the socket. 0 when the socket
    /// is unknown (it existed before tracing began).
    pub sock_born_ns: u64,
    /// The kernel's socket cookie (`sock_common.skc_cookie`, unique for the boot and
    /// never reused; the id `ss -e` and sock_diag show), 0 where the kernel side
    /// could not get it (no socket storage mode). Where it is known it names the
    /// socket alone.
    pub sock_cookie: u64,
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
    /// A raw [`EventKind`]; see [`Event::kind()`].
    pub kind: u8,
    /// A raw [`Origin`]; see [`Event::origin()`].
    pub origin: u8,
    /// A raw [`TcpState`]; see [`Event::old_state()`].
    pub old_state: u8,
    /// A raw [`TcpState`]; see [`Event::new_state()`].
    pub new_state: u8,
    /// Bits of [`OwnerFlag`]; see [`Event::has`].
    pub flags: u8,
    /// The socket's protocol: [`crate::IPPROTO_TCP`] or [`crate::IPPROTO_UDP`].
    pub proto: u8,
    /// Local address: IPv4 in the first 4 bytes, or IPv6.
    pub saddr: [u8; 16],
    /// Remote address, laid out like `saddr`.
    pub daddr: [u8; 16],
    /// Task name, NUL-padded.
    pub comm: [u8; COMM_LEN],
    /// Parent process id (0 when the kernel's BTF did not give the offsets).
    pub ppid: u32,
    /// The socket's network namespace, by inode number (0 when unknown).
    pub netns: u32,
    /// UDP: the socket's inode number (what `/proc/PID/fd` and sock_diag show; it
    /// names the socket for the boot). 0 for TCP.
    pub sock_ino: u32,
    /// cgroup v2 id of the process (the inode number of its cgroup directory).
    pub cgroup_id: u64,
    /// The process's start time, ns since boot (`task_struct.start_boottime`; 0 when
    /// unknown): with the pid it names one process, so userspace can tell whether
    /// /proc/PID is still the same process.
    pub task_start_ns: u64,
}

impl Event {
    pub const SIZE: usize = core::mem::size_of::<Event>();

    /// What happened.
    pub fn kind(&self) -> Result<EventKind, UnknownValue> {
        EventKind::try_from(self.kind)
    }

    /// Which end of the connection the local socket is.
    pub fn origin(&self) -> Result<Origin, UnknownValue> {
        Origin::try_from(self.origin)
    }

    /// The TCP state before the event.
    pub fn old_state(&self) -> Result<TcpState, UnknownValue> {
        TcpState::try_from(self.old_state)
    }

    /// The TCP state after the event.
    pub fn new_state(&self) -> Result<TcpState, UnknownValue> {
        TcpState::try_from(self.new_state)
    }

    /// Whether `flag` is set in [`Event::flags`].
    pub fn has(&self, flag: OwnerFlag) -> bool {
        flag.is_set(self.flags)
    }
}

/// What the kernel side remembers about a socket between its state changes (the
/// value of the `SOCKS` map, and of `LISTENERS` for a listener's owner).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SockInfo {
    /// When the connection (or listen) began, CLOCK_MONOTONIC ns: reset when a
    /// connection is established, so a close reports the connection's age.
    pub start_ns: u64,
    /// When the kernel side first recorded the socket, CLOCK_MONOTONIC ns; never
    /// changed afterwards (0: the socket was not seen begin). Copied into
    /// [`Event::sock_born_ns`].
    pub born_ns: u64,
    pub pid: u32,
    pub tid: u32,
    pub uid: u32,
    /// A raw [`Origin`]; see [`SockInfo::origin()`].
    pub origin: u8,
    /// Bits of [`OwnerFlag`]; see [`SockInfo::has`].
    pub flags: u8,
    pub _pad0: u16,
    pub comm: [u8; COMM_LEN],
    pub ppid: u32,
    pub _pad1: u32,
    pub cgroup_id: u64,
    pub task_start_ns: u64,
}

impl SockInfo {
    /// Which end of the connection the socket is.
    pub fn origin(&self) -> Result<Origin, UnknownValue> {
        Origin::try_from(self.origin)
    }

    /// Whether `flag` is set in [`SockInfo::flags`].
    pub fn has(&self, flag: OwnerFlag) -> bool {
        flag.is_set(self.flags)
    }
}

/// One UDP flow the kernel side has reported: a socket (by inode number) and a
/// peer. The key of the bounded table that makes a socket's datagrams to one peer
/// one event.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UdpFlowKey {
    pub sock_ino: u32,
    /// Host byte order.
    pub dport: u16,
    /// The socket's family: an IPv6 socket's IPv4 peers are IPv4-mapped.
    pub family: u16,
    pub daddr: [u8; 16],
}

/// Who owns a listening port: kept per (family, port) so a connection that is closed
/// before any process accepts it can still be attributed, inexactly, to its listener.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ListenKey {
    pub family: u16,
    pub port: u16,
}

#[cfg(test)]
mod tests {
    use core::mem::{offset_of, size_of};

    use super::*;

    #[test]
    fn layouts_have_no_hidden_padding() {
        // Event: 5 u64s, 4 u32s, 3 u16s, 6 u8s, 3 [u8; 16], 3 u32s, 2 u64s.
        assert_eq!(
            size_of::<Event>(),
            5 * 8 + 4 * 4 + 3 * 2 + 6 + 3 * 16 + 3 * 4 + 2 * 8
        );
        assert_eq!(Event::SIZE, 144);
        assert_eq!(offset_of!(Event, sock_born_ns), 16);
        assert_eq!(offset_of!(Event, sock_cookie), 24);
        assert_eq!(offset_of!(Event, cgroup_id), 128);
        // SockInfo: 2 u64s, 3 u32s, 2 u8s, a u16, [u8; 16], 2 u32s, 2 u64s.
        assert_eq!(
            size_of::<SockInfo>(),
            2 * 8 + 3 * 4 + 2 + 2 + 16 + 2 * 4 + 2 * 8
        );
        assert_eq!(size_of::<SockInfo>(), 72);
        assert_eq!(offset_of!(SockInfo, born_ns), 8);
        assert_eq!(size_of::<ListenKey>(), 4);
        assert_eq!(size_of::<UdpFlowKey>(), 24);
        assert_eq!(offset_of!(Event, proto), 67);
        assert_eq!(offset_of!(Event, sock_ino), 124);
    }

    fn event() -> Event {
        Event {
            ts_ns: 1,
            sock_id: 0xffff_8880_0000_1000,
            sock_born_ns: 2,
            sock_cookie: 3,
            duration_ns: 0,
            pid: 0,
            tid: 0,
            uid: 0,
            error: 0,
            sport: 0,
            dport: 0,
            family: crate::AF_INET,
            kind: EventKind::Connect as u8,
            origin: Origin::Client as u8,
            old_state: TcpState::SynSent as u8,
            new_state: TcpState::Established as u8,
            flags: OwnerFlag::Known.bit(),
            proto: crate::IPPROTO_TCP as u8,
            saddr: [0; 16],
            daddr: [0; 16],
            comm: [0; COMM_LEN],
            ppid: 0,
            netns: 0,
            sock_ino: 0,
            cgroup_id: 0,
            task_start_ns: 0,
        }
    }

    #[test]
    fn event_accessors() {
        let mut e = event();
        assert_eq!(e.kind(), Ok(EventKind::Connect));
        assert_eq!(e.origin(), Ok(Origin::Client));
        assert_eq!(e.old_state(), Ok(TcpState::SynSent));
        assert_eq!(e.new_state(), Ok(TcpState::Established));
        assert!(e.has(OwnerFlag::Known));
        assert!(!e.has(OwnerFlag::PidExact));
        e.kind = 0;
        e.origin = 9;
        e.old_state = 0;
        e.new_state = 200;
        assert_eq!(e.kind().unwrap_err().value, 0);
        assert_eq!(e.origin().unwrap_err().what, "origin");
        assert!(e.old_state().is_err() && e.new_state().is_err());
    }

    #[test]
    fn sock_info_accessors() {
        let info = SockInfo {
            start_ns: 0,
            born_ns: 0,
            pid: 0,
            tid: 0,
            uid: 0,
            origin: Origin::Server as u8,
            flags: OwnerFlag::Known.bit() | OwnerFlag::PidExact.bit(),
            _pad0: 0,
            comm: [0; COMM_LEN],
            ppid: 0,
            _pad1: 0,
            cgroup_id: 0,
            task_start_ns: 0,
        };
        assert_eq!(info.origin(), Ok(Origin::Server));
        assert!(info.has(OwnerFlag::Known) && info.has(OwnerFlag::PidExact));
    }
}
