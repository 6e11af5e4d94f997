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
