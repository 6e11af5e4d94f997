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
/// fentry program on [`KFUNC_TCP_CONNECT`] (mode `fentry`).
pub const PROG_FENTRY_TCP_CONNECT: &str = "fentry_tcp_connect";
/// fexit program on [`KFUNC_INET_CSK_ACCEPT`] for its two-argument prototype
/// (Linux 6.10+). See [`fexit_accept_program`].
pub const PROG_FEXIT_ACCEPT_2ARGS: &str = "fexit_inet_csk_accept_2args";
/// fexit program on [`KFUNC_INET_CSK_ACCEPT`] for its four-argument prototype
/// (before Linux 6.10). See [`fexit_accept_program`].
pub const PROG_FEXIT_ACCEPT_4ARGS: &str = "fexit_inet_csk_accept_4args";
/// kprobe program on [`KFUNC_TCP_CONNECT`] (mode `kprobe`).
pub const PROG_KPROBE_TCP_CONNECT: &str = "kprobe_tcp_connect";
/// kretprobe program on [`KFUNC_INET_CSK_ACCEPT`] (mode `kprobe`; the return value
/// does not depend on the prototype).
pub const PROG_KRETPROBE_INET_CSK_ACCEPT: &str = "kretprobe_inet_csk_accept";

/// The ring buffer of [`crate::Event`]s (its size can be set at load time).
pub const MAP_EVENTS: &str = "EVENTS";
/// Per-socket [`crate::SockInfo`], keyed by the `struct sock` address (LRU).
pub const MAP_SOCKS: &str = "SOCKS";
/// Listener owners, [`crate::ListenKey`] to [`crate::SockInfo`] (LRU).
pub const MAP_LISTENERS: &str = "LISTENERS";
/// Per-CPU count of events the ring buffer had no room for (index 0, u64).
pub const MAP_LOST: &str = "LOST";

/// The read-only global holding the [`crate::Config`].
pub const GLOBAL_CONFIG: &str = "PORTWATCH_CONFIG";

/// Kernel function hooked to record connecting processes.
pub const KFUNC_TCP_CONNECT: &str = "tcp_connect";
/// Kernel function whose return hands an accepted sock to the acceptor.
pub const KFUNC_INET_CSK_ACCEPT: &str = "inet_csk_accept";
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
