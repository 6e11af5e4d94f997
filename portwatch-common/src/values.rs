//! What the raw integers in records and in the configuration mean, as typed enums.
//!
//! The kernel side writes raw integers (`#[repr(C)]` records keep them raw, since an
//! enum read from bytes that hold an invalid value is undefined behaviour). Each enum
//! here converts from its raw integer with `TryFrom` (or the `const`
//! `from_raw`, usable in the eBPF programs), rejecting unknown values with
//! [`UnknownValue`], and to it with `as` or `From`.
use core::fmt;

/// A raw value that names no variant of the enum it was read as.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct UnknownValue {
    /// What was being read, e.g. `"event kind"`.
    pub what: &'static str,
    /// The raw value (widened to u32: [`ConfigFlag`] is a u32).
    pub value: u32,
}

impl fmt::Display for UnknownValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "unknown {} {}", self.what, self.value)
    }
}

impl core::error::Error for UnknownValue {}

/// An enum over raw values of type `$repr`, with `ALL`, `from_raw`, `TryFrom<$repr>`
/// and `From<Self> for $repr`.
macro_rules! raw_enum {
    (
        $(#[$meta:meta])*
        pub enum $name:ident: $repr:ident, $what:literal {
            $( $(#[$vmeta:meta])* $variant:ident = $value:literal, )+
        }
    ) => {
        $(#[$meta])*
        #[repr($repr)]
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        pub enum $name {
            $( $(#[$vmeta])* $variant = $value, )+
        }

        impl $name {
            /// Every variant, in declaration order.
            pub const ALL: [$name; [$($value),+].len()] = [$($name::$variant),+];

            /// The variant whose raw value is `value`, if any.
            #[inline(always)]
            pub const fn from_raw(value: $repr) -> Option<$name> {
                match value {
                    $( $value => Some($name::$variant), )+
                    _ => None,
                }
            }
        }

        impl TryFrom<$repr> for $name {
            type Error = UnknownValue;

            fn try_from(value: $repr) -> Result<Self, UnknownValue> {
                Self::from_raw(value).ok_or(UnknownValue {
                    what: $what,
                    value: value as u32,
                })
            }
        }

        impl From<$name> for $repr {
            fn from(value: $name) -> $repr {
                value as $repr
            }
        }
    };
}

raw_enum! {
    /// What happened to a socket ([`crate::Event::kind`]).
    pub enum EventKind: u8, "event kind" {
        /// `listen()` put the socket in LISTEN.
        Listen = 1,
        /// `accept()`/`accept4()` handed an established connection to a process.
        Accept = 2,
        /// An outgoing connection reached ESTABLISHED.
        Connect = 3,
        /// An outgoing connection went from SYN_SENT to CLOSE.
        ConnectFailed = 4,
        /// A connection or listener reached CLOSE.
        Close = 5,
    }
}

raw_enum! {
    /// Which end of a connection the local socket is, as the kernel side saw it
    /// begin ([`crate::Event::origin`], [`crate::SockInfo::origin`]).
    pub enum Origin: u8, "origin" {
        /// Not seen begin (it existed before tracing started).
        Unknown = 0,
        /// A listening socket.
        Listener = 1,
        /// A connection accepted from a listener.
        Server = 2,
        /// An outgoing connection.
        Client = 3,
    }
}

raw_enum! {
    /// TCP states as numbered in the kernel's `include/net/tcp_states.h`.
    pub enum TcpState: u8, "TCP state" {
        Established = 1,
        SynSent = 2,
        SynRecv = 3,
        FinWait1 = 4,
        FinWait2 = 5,
        TimeWait = 6,
        Close = 7,
        CloseWait = 8,
        LastAck = 9,
        Listen = 10,
        Closing = 11,
        NewSynRecv = 12,
    }
}

impl TcpState {
    /// The kernel's name for the state, as `ss` and netstat print it.
    pub const fn name(self) -> &'static str {
        match self {
            TcpState::Established => "ESTABLISHED",
            TcpState::SynSent => "SYN_SENT",
            TcpState::SynRecv => "SYN_RECV",
            TcpState::FinWait1 => "FIN_WAIT1",
            TcpState::FinWait2 => "FIN_WAIT2",
            TcpState::TimeWait => "TIME_WAIT",
            TcpState::Close => "CLOSE",
            TcpState::CloseWait => "CLOSE_WAIT",
            TcpState::LastAck => "LAST_ACK",
            TcpState::Listen => "LISTEN",
            TcpState::Closing => "CLOSING",
            TcpState::NewSynRecv => "NEW_SYN_RECV",
        }
    }
}

raw_enum! {
    /// Bits of [`crate::Event::flags`] and [`crate::SockInfo::flags`].
    pub enum OwnerFlag: u8, "owner flag" {
        /// `pid`, `tid`, `uid` and `comm` name a process (otherwise they are zero).
        Known = 1,
        /// The owner was read in the process's own context (listen, connect,
        /// accept), not inferred (for example from the listener of a
        /// never-accepted connection).
        PidExact = 2,
    }
}

impl OwnerFlag {
    /// This flag's bit.
    #[inline(always)]
    pub const fn bit(self) -> u8 {
        self as u8
    }

    /// Whether this flag's bit is set in `bits`.
    #[inline(always)]
    pub const fn is_set(self, bits: u8) -> bool {
        bits & self.bit() != 0
    }
}

raw_enum! {
    /// Indices of the per-CPU `COUNTERS` map: what the kernel side could not do,
    /// counted so that nothing is lost silently.
    pub enum Counter: u32, "counter" {
        /// Events the ring buffer had no room for.
        Lost = 0,
        /// Accepts whose exact owner could not be kept (the `ACCEPTED` map was
        /// full): that socket's later events name the listener's owner, inexactly.
        AcceptUnrecorded = 1,
        /// Owners that could not be stored (the kernel could not allocate socket
        /// storage, or an LRU map entry): that socket's later events name no
        /// process.
        OwnerUnstored = 2,
        /// State changes the BTF program missed because it was already running on
        /// that CPU (the kernel's recursion guard: an interrupt's softirq, on the
        /// same CPU, changed another socket's state), handled by its nested
        /// twin instead. Each is one of the BTF program's recursion misses that
        /// lost nothing.
        NestedCaught = 3,
        /// State changes and accepts dropped because reading the kernel's memory
        /// failed (a helper refused a read): each may have been an event.
        Unreadable = 4,
    }
}

impl Counter {
    /// How many counters there are (the `COUNTERS` map's entries).
    pub const COUNT: u32 = Counter::ALL.len() as u32;
}

raw_enum! {
    /// Bits of [`crate::Config::flags`]: what the kernel side may rely on. The
    /// offset-backed ones are set by userspace only when every [`crate::Offset`]
    /// of that feature was found in the kernel's BTF.
    pub enum ConfigFlag: u32, "config flag" {
        /// The `sock_common` offsets are valid: endpoints can be read from a sock.
        SockFields = 1,
        /// The fd-to-sock walk offsets are valid.
        FdWalk = 2,
        /// `sock.sk_err` is valid: connect failures carry the kernel's reason.
        SkErr = 4,
        /// `sock.sk_protocol` is a plain u16 member (Linux 5.6+).
        SkProtocol = 8,
        /// An accept program (sys_exit_accept, fexit or kretprobe on
        /// inet_csk_accept) is attached: the tracepoint does not report accepts
        /// itself.
        AcceptHooked = 16,
        /// Owners live in socket storage (the BTF tracepoint program): no map
        /// entry per socket, nothing to evict or delete.
        SockStorage = 32,
        /// The task_struct offsets (parent, tgid, start time) are valid.
        TaskFields = 64,
        /// With [`ConfigFlag::SockStorage`]: the accept program cannot write socket
        /// storage (a kretprobe or a syscall tracepoint), so it leaves the exact
        /// owner in the `ACCEPTED` map, which the socket's next state change moves
        /// into its storage.
        AcceptsPending = 128,
        /// `sock_common.skc_net` and `net.ns.inum` are valid: events carry their
        /// socket's network namespace.
        NetNs = 256,
        /// The offsets UDP needs beyond the sock's (the socket's inode number,
        /// `msghdr.msg_name`) are valid, with [`ConfigFlag::SockFields`],
        /// [`ConfigFlag::FdWalk`] and [`ConfigFlag::SkProtocol`]: the UDP
        /// programs may run.
        UdpFields = 512,
    }
}

impl ConfigFlag {
    /// This flag's bit.
    #[inline(always)]
    pub const fn bit(self) -> u32 {
        self as u32
    }

    /// Whether this flag's bit is set in `bits`.
    #[inline(always)]
    pub const fn is_set(self, bits: u32) -> bool {
        bits & self.bit() != 0
    }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use std::string::ToString;

    use super::*;

    /// Every variant converts to its raw value and back, and `from_raw` agrees
    /// with `TryFrom`.
    macro_rules! round_trip {
        ($ty:ident, $repr:ident) => {
            for v in $ty::ALL {
                let raw: $repr = v.into();
                assert_eq!(raw, v as $repr);
                assert_eq!($ty::try_from(raw), Ok(v));
                assert_eq!($ty::from_raw(raw), Some(v));
            }
        };
    }

    #[test]
    fn event_kind() {
        round_trip!(EventKind, u8);
        assert_eq!(EventKind::ALL.len(), 5);
        assert_eq!(EventKind::ConnectFailed as u8, 4);
        for bad in [0, 6, 255] {
            assert_eq!(
                EventKind::try_from(bad),
                Err(UnknownValue {
                    what: "event kind",
                    value: bad as u32
                })
            );
        }
    }

    #[test]
    fn origin() {
        round_trip!(Origin, u8);
        assert_eq!(Origin::ALL.len(), 4);
        assert_eq!(Origin::Client as u8, 3);
        assert!(Origin::try_from(4).is_err());
        assert_eq!(Origin::from_raw(255), None);
    }

    #[test]
    fn tcp_state_keeps_kernel_numbering() {
        round_trip!(TcpState, u8);
        assert_eq!(TcpState::ALL.len(), 12);
        for (i, s) in TcpState::ALL.iter().enumerate() {
            assert_eq!(*s as u8, i as u8 + 1);
        }
        assert_eq!(TcpState::Listen as u8, 10);
        assert_eq!(TcpState::NewSynRecv as u8, 12);
        assert!(TcpState::try_from(0).is_err());
        assert!(TcpState::try_from(13).is_err());
    }

    #[test]
    fn owner_flag() {
        round_trip!(OwnerFlag, u8);
        assert_eq!(OwnerFlag::ALL.len(), 2);
        assert!(OwnerFlag::try_from(0).is_err());
        assert!(
            OwnerFlag::try_from(3).is_err(),
            "a combination is not a flag"
        );
        let bits = OwnerFlag::Known.bit() | OwnerFlag::PidExact.bit();
        assert_eq!(bits, 3);
        assert!(OwnerFlag::Known.is_set(bits) && OwnerFlag::PidExact.is_set(bits));
        assert!(OwnerFlag::Known.is_set(1) && !OwnerFlag::PidExact.is_set(1));
        assert!(!OwnerFlag::Known.is_set(0));
    }

    #[test]
    fn config_flag() {
        round_trip!(ConfigFlag, u32);
        assert_eq!(ConfigFlag::ALL.len(), 10);
        // One distinct bit each.
        let mut all = 0u32;
        for f in ConfigFlag::ALL {
            assert_eq!(f.bit().count_ones(), 1, "{f:?}");
            assert_eq!(all & f.bit(), 0, "{f:?}");
            all |= f.bit();
            assert!(f.is_set(all) && !f.is_set(!f.bit()));
        }
        assert_eq!(all, 1023);
        for bad in [0, 3, 1024, u32::MAX] {
            assert_eq!(
                ConfigFlag::try_from(bad),
                Err(UnknownValue {
                    what: "config flag",
                    value: bad
                })
            );
        }
    }

    #[test]
    fn unknown_value_says_what_and_which() {
        let e = EventKind::try_from(9).unwrap_err();
        assert_eq!(e.to_string(), "unknown event kind 9");
        assert_eq!(
            TcpState::try_from(42).unwrap_err().to_string(),
            "unknown TCP state 42"
        );
    }
}
