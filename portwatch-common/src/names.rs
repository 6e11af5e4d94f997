//! Names both sides must agree on: the eBPF object's programs, maps and global, and
//! the kernel hooks they attach to. Userspace refers to these constants, never to
//! string literals.
//!
//! The eBPF side cannot name its programs, maps and global from these constants:
//! aya's `#[tracepoint]`, `#[fexit]`, `#[map]`... use the Rust item's own name (and
//! `#[fentry(function = "...")]` takes only a literal). So every entry point, map and
//! the global in `portwatch-ebpf` carries a comment naming its constant here, and a
//! compile-time assertion next to it (`portwatch-ebpf/src/names.rs`) fails the eBPF
//! build when the item's name and the constant differ. A unit test here cannot
//! check that: this crate does not see the eBPF object.

/// Tracepoint program on `sock:inet_sock_set_state`: listen, connect, connect
/// failure, close (every attach mode).
pub const PROG_INET_SOCK_SET_STATE: &str = "inet_sock_set_state";
/// Tracepoint program attached to both `syscalls:sys_exit_accept` and
/// `syscalls:sys_exit_accept4` (mode `tracepoint`).
pub const PROG_SYS_EXIT_ACCEPT: &str = "sys_exit_accept";
/// BTF tracepoint program on `sock:inet_sock_set_state` (every attach mode where
/// the kernel has BTF and socket storage for tracing programs, Linux 5.12+):
/// owners in socket storage.
pub const PROG_BTF_INET_SOCK_SET_STATE: &str = "btf_inet_sock_set_state";
/// Its twin on the same BTF tracepoint, attached after it (so it runs after it for
/// every state change): it handles only the state changes the kernel's recursion
/// guard made [`PROG_BTF_INET_SOCK_SET_STATE`] miss, and returns at once
/// otherwise.
pub const PROG_BTF_INET_SOCK_SET_STATE_NESTED: &str = "btf_inet_sock_set_state_nested";
/// fexit program on [`KFUNC_INET_CSK_ACCEPT`] for its two-argument prototype
/// (Linux 6.10+). See [`fexit_accept_program`].
pub const PROG_FEXIT_ACCEPT_2ARGS: &str = "fexit_inet_csk_accept_2args";
/// fexit program on [`KFUNC_INET_CSK_ACCEPT`] for its four-argument prototype
/// (before Linux 6.10). See [`fexit_accept_program`].
pub const PROG_FEXIT_ACCEPT_4ARGS: &str = "fexit_inet_csk_accept_4args";
/// kretprobe program on [`KFUNC_INET_CSK_ACCEPT`] (mode `kprobe`; the return value
/// does not depend on the prototype).
pub const PROG_KRETPROBE_INET_CSK_ACCEPT: &str = "kretprobe_inet_csk_accept";

/// BPF LSM program on the [`LSM_SOCK_GRAFT`] hook (mode `tracepoint`, where the
/// kernel runs BPF LSM programs): who received an accepted socket, in that
/// process's own context, without the accept syscall tracepoints.
pub const PROG_LSM_SOCK_GRAFT: &str = "lsm_sock_graft";

/// Empty programs on the BTF and the classic `sock:inet_sock_set_state`, for
/// `cargo xtask bench` (`portwatch --bench-floor`): what the kernel's own call of
/// a program costs, the floor under portwatch's.
pub const PROG_FLOOR_BTF: &str = "floor_btf";
pub const PROG_FLOOR_CLASSIC: &str = "floor_classic";

/// UDP, mode `fentry`: fexit on [`KFUNC_INET_BIND`] and [`KFUNC_INET6_BIND`] (one
/// program each, the same code), [`KFUNC_INET_DGRAM_CONNECT`], [`KFUNC_UDP_SENDMSG`]
/// and [`KFUNC_UDPV6_SENDMSG`]; fentry on [`KFUNC_INET_RELEASE`].
pub const PROG_FEXIT_INET_BIND: &str = "fexit_inet_bind";
pub const PROG_FEXIT_INET6_BIND: &str = "fexit_inet6_bind";
pub const PROG_FEXIT_INET_DGRAM_CONNECT: &str = "fexit_inet_dgram_connect";
pub const PROG_FEXIT_UDP_SENDMSG: &str = "fexit_udp_sendmsg";
pub const PROG_FEXIT_UDPV6_SENDMSG: &str = "fexit_udpv6_sendmsg";
pub const PROG_FENTRY_INET_RELEASE: &str = "fentry_inet_release";
/// UDP, mode `kprobe`: a kprobe and a kretprobe per call (the bind and sendmsg
/// ones attached to both families' functions), and a kprobe on
/// [`KFUNC_INET_RELEASE`].
pub const PROG_KPROBE_UDP_BIND: &str = "kprobe_udp_bind";
pub const PROG_KRETPROBE_UDP_BIND: &str = "kretprobe_udp_bind";
pub const PROG_KPROBE_UDP_CONNECT: &str = "kprobe_udp_connect";
pub const PROG_KRETPROBE_UDP_CONNECT: &str = "kretprobe_udp_connect";
pub const PROG_KPROBE_UDP_SENDMSG: &str = "kprobe_udp_sendmsg";
pub const PROG_KRETPROBE_UDP_SENDMSG: &str = "kretprobe_udp_sendmsg";
pub const PROG_KPROBE_INET_RELEASE: &str = "kprobe_inet_release";
/// UDP, mode `tracepoint`: one program per `syscalls:sys_enter_*` and
/// `sys_exit_*` of [`TP_UDP_SYSCALLS`].
pub const PROG_UDP_SYS_ENTER_BIND: &str = "udp_sys_enter_bind";
pub const PROG_UDP_SYS_EXIT_BIND: &str = "udp_sys_exit_bind";
pub const PROG_UDP_SYS_ENTER_CONNECT: &str = "udp_sys_enter_connect";
pub const PROG_UDP_SYS_EXIT_CONNECT: &str = "udp_sys_exit_connect";
pub const PROG_UDP_SYS_ENTER_SENDTO: &str = "udp_sys_enter_sendto";
pub const PROG_UDP_SYS_EXIT_SENDTO: &str = "udp_sys_exit_sendto";
pub const PROG_UDP_SYS_ENTER_SENDMSG: &str = "udp_sys_enter_sendmsg";
pub const PROG_UDP_SYS_EXIT_SENDMSG: &str = "udp_sys_exit_sendmsg";
pub const PROG_UDP_SYS_ENTER_SENDMMSG: &str = "udp_sys_enter_sendmmsg";
pub const PROG_UDP_SYS_EXIT_SENDMMSG: &str = "udp_sys_exit_sendmmsg";
/// An empty program for `--bench-floor udp-syscalls`: attached to every UDP
/// syscall tracepoint, the kernel's own cost of running a program there.
pub const PROG_FLOOR_UDP_SYSCALLS: &str = "floor_udp_syscalls";

/// The ring buffer of [`crate::Event`]s (its size can be set at load time).
pub const MAP_EVENTS: &str = "EVENTS";
/// Per-socket [`crate::SockInfo`], keyed by the `struct sock` address (LRU): the
/// owner store where socket storage is not used.
pub const MAP_SOCKS: &str = "SOCKS";
/// Per-socket [`crate::SockInfo`] in socket storage (`BPF_MAP_TYPE_SK_STORAGE`):
/// the owner store of the BTF tracepoint program.
pub const MAP_SK_OWNERS: &str = "SK_OWNERS";
/// Exact owners of accepted sockets, keyed by the `struct sock` address, left by an
/// accept program that cannot write socket storage until the socket's next state
/// change moves them there (hash, allocated as used, no eviction).
pub const MAP_ACCEPTED: &str = "ACCEPTED";
/// Listener owners, [`crate::ListenKey`] to [`crate::SockInfo`] (LRU).
pub const MAP_LISTENERS: &str = "LISTENERS";
/// Per-CPU counters of what the kernel side could not do, indexed by
/// [`crate::Counter`] (u64 each).
pub const MAP_COUNTERS: &str = "COUNTERS";

/// UDP sockets by inode number (LRU), their first owner.
pub const MAP_UDP_SOCKS: &str = "UDP_SOCKS";
/// UDP flows already reported, [`crate::UdpFlowKey`] (LRU).
pub const MAP_UDP_FLOWS: &str = "UDP_FLOWS";
/// Per-thread arguments a call's entry leaves for its return (LRU).
pub const MAP_PENDING_ARGS: &str = "PENDING_ARGS";

/// Per-CPU notes of the state changes [`PROG_BTF_INET_SOCK_SET_STATE`] handled,
/// which its twin takes back.
pub const MAP_HANDLED: &str = "HANDLED";

/// The read-only global holding the [`crate::Config`].
pub const GLOBAL_CONFIG: &str = "PORTWATCH_CONFIG";

/// The LSM hook run inside `accept()` when the accepted sock is grafted onto its
/// new socket (`security_sock_graft`, from `inet_accept`); BPF attaches to its
/// `bpf_lsm_` function.
pub const LSM_SOCK_GRAFT: &str = "sock_graft";

/// Kernel function whose return hands an accepted sock to the acceptor.
pub const KFUNC_INET_CSK_ACCEPT: &str = "inet_csk_accept";
/// The kernel functions UDP is traced at (modes fentry and kprobe).
pub const KFUNC_INET_BIND: &str = "inet_bind";
pub const KFUNC_INET6_BIND: &str = "inet6_bind";
pub const KFUNC_INET_DGRAM_CONNECT: &str = "inet_dgram_connect";
pub const KFUNC_UDP_SENDMSG: &str = "udp_sendmsg";
pub const KFUNC_UDPV6_SENDMSG: &str = "udpv6_sendmsg";
pub const KFUNC_INET_RELEASE: &str = "inet_release";
/// All of them (their BTF ids are looked up with the accept function's).
pub const UDP_FUNCTIONS: [&str; 6] = [
    KFUNC_INET_BIND,
    KFUNC_INET6_BIND,
    KFUNC_INET_DGRAM_CONNECT,
    KFUNC_UDP_SENDMSG,
    KFUNC_UDPV6_SENDMSG,
    KFUNC_INET_RELEASE,
];

/// The syscalls UDP is traced at in mode tracepoint: for each, its
/// `syscalls:sys_enter_*` tracepoint and program, then its `sys_exit_*` ones.
pub const TP_UDP_SYSCALLS: [UdpSyscall; 5] = [
    UdpSyscall {
        enter: ("sys_enter_bind", PROG_UDP_SYS_ENTER_BIND),
        exit: ("sys_exit_bind", PROG_UDP_SYS_EXIT_BIND),
    },
    UdpSyscall {
        enter: ("sys_enter_connect", PROG_UDP_SYS_ENTER_CONNECT),
        exit: ("sys_exit_connect", PROG_UDP_SYS_EXIT_CONNECT),
    },
    UdpSyscall {
        enter: ("sys_enter_sendto", PROG_UDP_SYS_ENTER_SENDTO),
        exit: ("sys_exit_sendto", PROG_UDP_SYS_EXIT_SENDTO),
    },
    UdpSyscall {
        enter: ("sys_enter_sendmsg", PROG_UDP_SYS_ENTER_SENDMSG),
        exit: ("sys_exit_sendmsg", PROG_UDP_SYS_EXIT_SENDMSG),
    },
    UdpSyscall {
        enter: ("sys_enter_sendmmsg", PROG_UDP_SYS_ENTER_SENDMMSG),
        exit: ("sys_exit_sendmmsg", PROG_UDP_SYS_EXIT_SENDMMSG),
    },
];

/// One syscall UDP is traced at: (tracepoint, program) for its entry and exit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UdpSyscall {
    pub enter: (&'static str, &'static str),
    pub exit: (&'static str, &'static str),
}

/// Tracepoint category and name of the TCP lifecycle tracepoint.
pub const TP_CATEGORY_SOCK: &str = "sock";
pub const TP_INET_SOCK_SET_STATE: &str = "inet_sock_set_state";
/// Tracepoint category and names of the accept syscall exits ([`PROG_SYS_EXIT_ACCEPT`]
/// attaches to both; their `ret` offsets must agree, see
/// [`crate::Config::tp_accept_ret`]).
pub const TP_CATEGORY_SYSCALLS: &str = "syscalls";
pub const TP_SYS_EXIT_ACCEPT: &str = "sys_exit_accept";
pub const TP_SYS_EXIT_ACCEPT4: &str = "sys_exit_accept4";

/// The fexit program for an `inet_csk_accept` taking `arg_count` parameters (the
/// count of its BTF prototype), or `None` for a prototype portwatch does not know.
///
/// `inet_csk_accept(sk, flags, err, kern)` became `inet_csk_accept(sk, arg)` in
/// Linux 6.10. fexit finds the return value right after the arguments, and the
/// verifier needs that context offset to be a constant, hence one program each.
pub const fn fexit_accept_program(arg_count: u32) -> Option<&'static str> {
    match arg_count {
        2 => Some(PROG_FEXIT_ACCEPT_2ARGS),
        4 => Some(PROG_FEXIT_ACCEPT_4ARGS),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fexit_program_per_prototype() {
        assert_eq!(fexit_accept_program(2), Some(PROG_FEXIT_ACCEPT_2ARGS));
        assert_eq!(fexit_accept_program(4), Some(PROG_FEXIT_ACCEPT_4ARGS));
        for n in [0, 1, 3, 5] {
            assert_eq!(fexit_accept_program(n), None);
        }
    }
}
