//! portwatch's kernel half: the TCP lifecycle from `sock:inet_sock_set_state` (the
//! BTF tracepoint with owners in socket storage where the kernel allows, else the
//! classic one with an LRU map); connecting processes from that tracepoint's
//! CLOSE -> SYN_SENT inside connect(); accepting processes from the return of
//! `inet_csk_accept` (fexit or kretprobe) where the kernel allows them, else from
//! `syscalls:sys_exit_accept{,4}`; events out through one ring buffer.
//!
//! This file holds only the entry points, each calling a `try_*` function of its
//! topic in `probes`. Each is named like its `portwatch_common::names::PROG_*`
//! constant (aya names a program after its function), which `named!` checks at
//! compile time.
//!
//! Modules import one way, each only from modules in the layers below it (no
//! cycles):
//!
//! 1. `main` (entry points)
//! 2. `probes::state`, `probes::accept`: what each hook does
//! 3. `emit`: ring buffer reserve/submit, loss counter, wakeups
//! 4. `filter`: the kernel-side filters
//! 5. `tuple` (endpoints), `owner` (the socket's owner record), `kernel_versions`
//! 6. `kernel`: reading kernel memory, the tracepoint record, the clock
//! 7. `config` (the load-time global), `maps`
//! 8. `names` (compile-time name checks)
#![cfg_attr(target_arch = "bpf", no_std)]
#![cfg_attr(target_arch = "bpf", no_main)]
// Inline BPF assembly, for the one atomic add core does not offer on this target.
#![cfg_attr(target_arch = "bpf", feature(asm_experimental_arch))]

mod config;
mod counters;
mod emit;
mod filter;
mod handled;
mod kernel;
mod kernel_versions;
mod maps;
mod names;
mod owner;
mod probes;
mod store;
mod tuple;

use aya_ebpf::{
    macros::{btf_tracepoint, fentry, fexit, kprobe, kretprobe, lsm, tracepoint},
    programs::{
        BtfTracePointContext, FEntryContext, FExitContext, LsmContext, ProbeContext,
        RetProbeContext, TracePointContext,
    },
};

use crate::{
    kernel_versions::{ACCEPT_RET_ARG_2ARGS, ACCEPT_RET_ARG_4ARGS},
    names::named,
    probes::{
        accept, state,
        udp_hooks::{self as udp, Call},
    },
};

/// BTF `sock:inet_sock_set_state` (wherever the kernel has BTF and socket storage
/// for tracing programs): listen, connect, connect failure, close; owners in socket
/// storage. Named `names::PROG_BTF_INET_SOCK_SET_STATE`.
#[btf_tracepoint(function = "inet_sock_set_state")]
pub fn btf_inet_sock_set_state(ctx: BtfTracePointContext) -> u32 {
    counted(state::try_btf_inet_sock_set_state(&ctx));
    0
}
named!(btf_inet_sock_set_state, PROG_BTF_INET_SOCK_SET_STATE);

/// The same BTF tracepoint, for the state changes the program above misses while
/// it runs on the same CPU. Named `names::PROG_BTF_INET_SOCK_SET_STATE_NESTED`.
#[btf_tracepoint(function = "inet_sock_set_state")]
pub fn btf_inet_sock_set_state_nested(ctx: BtfTracePointContext) -> u32 {
    counted(state::try_btf_inet_sock_set_state_nested(&ctx));
    0
}
named!(
    btf_inet_sock_set_state_nested,
    PROG_BTF_INET_SOCK_SET_STATE_NESTED
);

/// Classic `sock:inet_sock_set_state` (the fallback): the same, owners in the LRU
/// map. Named `names::PROG_INET_SOCK_SET_STATE`.
#[tracepoint]
pub fn inet_sock_set_state(ctx: TracePointContext) -> u32 {
    counted(state::try_inet_sock_set_state(&ctx));
    0
}
named!(inet_sock_set_state, PROG_INET_SOCK_SET_STATE);

/// `syscalls:sys_exit_accept` and `syscalls:sys_exit_accept4` (mode `tracepoint`):
/// who received the socket. Named `names::PROG_SYS_EXIT_ACCEPT`.
#[tracepoint]
pub fn sys_exit_accept(ctx: TracePointContext) -> u32 {
    counted(accept::try_sys_exit_accept(&ctx));
    0
}
named!(sys_exit_accept, PROG_SYS_EXIT_ACCEPT);

/// fexit `inet_csk_accept` (mode `fentry`) where it takes two arguments (Linux
/// 6.10+; see `kernel_versions`). Named `names::PROG_FEXIT_ACCEPT_2ARGS`; the
/// function is `names::KFUNC_INET_CSK_ACCEPT`.
#[fexit(function = "inet_csk_accept")]
pub fn fexit_inet_csk_accept_2args(ctx: FExitContext) -> u32 {
    counted(accept::try_fexit_inet_csk_accept::<ACCEPT_RET_ARG_2ARGS>(
        &ctx,
    ));
    0
}
named!(fexit_inet_csk_accept_2args, PROG_FEXIT_ACCEPT_2ARGS);

/// fexit `inet_csk_accept` where it takes four arguments (before Linux 6.10).
/// Named `names::PROG_FEXIT_ACCEPT_4ARGS`.
#[fexit(function = "inet_csk_accept")]
pub fn fexit_inet_csk_accept_4args(ctx: FExitContext) -> u32 {
    counted(accept::try_fexit_inet_csk_accept::<ACCEPT_RET_ARG_4ARGS>(
        &ctx,
    ));
    0
}
named!(fexit_inet_csk_accept_4args, PROG_FEXIT_ACCEPT_4ARGS);

/// kretprobe `inet_csk_accept` (mode `kprobe`).
/// Named `names::PROG_KRETPROBE_INET_CSK_ACCEPT`.
#[kretprobe]
pub fn kretprobe_inet_csk_accept(ctx: RetProbeContext) -> u32 {
    counted(accept::try_kretprobe_inet_csk_accept(&ctx));
    0
}
named!(kretprobe_inet_csk_accept, PROG_KRETPROBE_INET_CSK_ACCEPT);

/// BPF LSM `sock_graft` (mode `tracepoint`, where the kernel runs BPF LSM
/// programs): inside `accept()`, the accepted sock and its new owner. Named
/// `names::PROG_LSM_SOCK_GRAFT`; the hook is `names::LSM_SOCK_GRAFT`. Always
/// allows (a void hook: its return value is not used).
#[lsm(hook = "sock_graft")]
pub fn lsm_sock_graft(ctx: LsmContext) -> i32 {
    counted(accept::try_lsm_sock_graft(&ctx));
    0
}
named!(lsm_sock_graft, PROG_LSM_SOCK_GRAFT);

/// UDP `bind()` returned (mode fentry): fexit `inet_bind`. Named
/// `names::PROG_FEXIT_INET_BIND`.
#[fexit(function = "inet_bind")]
pub fn fexit_inet_bind(ctx: FExitContext) -> u32 {
    counted(udp::try_fexit_bind(&ctx));
    0
}
named!(fexit_inet_bind, PROG_FEXIT_INET_BIND);

/// The same for IPv6 sockets: fexit `inet6_bind`. Named `names::PROG_FEXIT_INET6_BIND`.
#[fexit(function = "inet6_bind")]
pub fn fexit_inet6_bind(ctx: FExitContext) -> u32 {
    counted(udp::try_fexit_bind(&ctx));
    0
}
named!(fexit_inet6_bind, PROG_FEXIT_INET6_BIND);

/// UDP `connect()` returned (both families): fexit `inet_dgram_connect`. Named
/// `names::PROG_FEXIT_INET_DGRAM_CONNECT`.
#[fexit(function = "inet_dgram_connect")]
pub fn fexit_inet_dgram_connect(ctx: FExitContext) -> u32 {
    counted(udp::try_fexit_connect(&ctx));
    0
}
named!(fexit_inet_dgram_connect, PROG_FEXIT_INET_DGRAM_CONNECT);

/// A datagram went out: fexit `udp_sendmsg`. Named `names::PROG_FEXIT_UDP_SENDMSG`.
#[fexit(function = "udp_sendmsg")]
pub fn fexit_udp_sendmsg(ctx: FExitContext) -> u32 {
    counted(udp::try_fexit_sendmsg(&ctx));
    0
}
named!(fexit_udp_sendmsg, PROG_FEXIT_UDP_SENDMSG);

/// The same for IPv6 sockets: fexit `udpv6_sendmsg`. Named
/// `names::PROG_FEXIT_UDPV6_SENDMSG`.
#[fexit(function = "udpv6_sendmsg")]
pub fn fexit_udpv6_sendmsg(ctx: FExitContext) -> u32 {
    counted(udp::try_fexit_sendmsg(&ctx));
    0
}
named!(fexit_udpv6_sendmsg, PROG_FEXIT_UDPV6_SENDMSG);

/// A socket's last file reference went: fentry `inet_release` (IPv6's release
/// calls it). Named `names::PROG_FENTRY_INET_RELEASE`.
#[fentry(function = "inet_release")]
pub fn fentry_inet_release(ctx: FEntryContext) -> u32 {
    counted(udp::try_fentry_release(&ctx));
    0
}
named!(fentry_inet_release, PROG_FENTRY_INET_RELEASE);

/// kprobe `inet_bind`/`inet6_bind` (mode kprobe): the arguments, for the return.
/// Named `names::PROG_KPROBE_UDP_BIND`.
#[kprobe]
pub fn kprobe_udp_bind(ctx: ProbeContext) -> u32 {
    counted(udp::try_kprobe_args(&ctx, Call::Bind));
    0
}
named!(kprobe_udp_bind, PROG_KPROBE_UDP_BIND);

/// Their return. Named `names::PROG_KRETPROBE_UDP_BIND`.
#[kretprobe]
pub fn kretprobe_udp_bind(ctx: RetProbeContext) -> u32 {
    counted(udp::try_kretprobe(&ctx, Call::Bind));
    0
}
named!(kretprobe_udp_bind, PROG_KRETPROBE_UDP_BIND);

/// kprobe `inet_dgram_connect`. Named `names::PROG_KPROBE_UDP_CONNECT`.
#[kprobe]
pub fn kprobe_udp_connect(ctx: ProbeContext) -> u32 {
    counted(udp::try_kprobe_args(&ctx, Call::Connect));
    0
}
named!(kprobe_udp_connect, PROG_KPROBE_UDP_CONNECT);

/// Its return. Named `names::PROG_KRETPROBE_UDP_CONNECT`.
#[kretprobe]
pub fn kretprobe_udp_connect(ctx: RetProbeContext) -> u32 {
    counted(udp::try_kretprobe(&ctx, Call::Connect));
    0
}
named!(kretprobe_udp_connect, PROG_KRETPROBE_UDP_CONNECT);

/// kprobe `udp_sendmsg`/`udpv6_sendmsg`. Named `names::PROG_KPROBE_UDP_SENDMSG`.
#[kprobe]
pub fn kprobe_udp_sendmsg(ctx: ProbeContext) -> u32 {
    counted(udp::try_kprobe_args(&ctx, Call::SendMsg));
    0
}
named!(kprobe_udp_sendmsg, PROG_KPROBE_UDP_SENDMSG);

/// Their return. Named `names::PROG_KRETPROBE_UDP_SENDMSG`.
#[kretprobe]
pub fn kretprobe_udp_sendmsg(ctx: RetProbeContext) -> u32 {
    counted(udp::try_kretprobe(&ctx, Call::SendMsg));
    0
}
named!(kretprobe_udp_sendmsg, PROG_KRETPROBE_UDP_SENDMSG);

/// kprobe `inet_release`. Named `names::PROG_KPROBE_INET_RELEASE`.
#[kprobe]
pub fn kprobe_inet_release(ctx: ProbeContext) -> u32 {
    counted(udp::try_kprobe_release(&ctx));
    0
}
named!(kprobe_inet_release, PROG_KPROBE_INET_RELEASE);

/// The UDP syscall tracepoints (mode tracepoint), an entry and an exit program
/// per syscall; named like `names::PROG_UDP_SYS_*`.
macro_rules! udp_syscall {
    ($enter:ident, $enter_name:ident, $exit:ident, $exit_name:ident, $call:expr) => {
        #[tracepoint]
        pub fn $enter(ctx: TracePointContext) -> u32 {
            counted(udp::try_sys_enter(&ctx, $call));
            0
        }
        named!($enter, $enter_name);

        #[tracepoint]
        pub fn $exit(ctx: TracePointContext) -> u32 {
            counted(udp::try_sys_exit(&ctx, $call));
            0
        }
        named!($exit, $exit_name);
    };
}
udp_syscall!(
    udp_sys_enter_bind,
    PROG_UDP_SYS_ENTER_BIND,
    udp_sys_exit_bind,
    PROG_UDP_SYS_EXIT_BIND,
    Call::Bind
);
udp_syscall!(
    udp_sys_enter_connect,
    PROG_UDP_SYS_ENTER_CONNECT,
    udp_sys_exit_connect,
    PROG_UDP_SYS_EXIT_CONNECT,
    Call::Connect
);
udp_syscall!(
    udp_sys_enter_sendto,
    PROG_UDP_SYS_ENTER_SENDTO,
    udp_sys_exit_sendto,
    PROG_UDP_SYS_EXIT_SENDTO,
    Call::SendTo
);
udp_syscall!(
    udp_sys_enter_sendmsg,
    PROG_UDP_SYS_ENTER_SENDMSG,
    udp_sys_exit_sendmsg,
    PROG_UDP_SYS_EXIT_SENDMSG,
    Call::SendMsg
);
udp_syscall!(
    udp_sys_enter_sendmmsg,
    PROG_UDP_SYS_ENTER_SENDMMSG,
    udp_sys_exit_sendmmsg,
    PROG_UDP_SYS_EXIT_SENDMMSG,
    Call::SendMmsg
);

/// An empty program for the UDP syscall tracepoints (`cargo xtask bench`'s floor).
/// Named `names::PROG_FLOOR_UDP_SYSCALLS`.
#[tracepoint]
pub fn floor_udp_syscalls(_ctx: TracePointContext) -> u32 {
    0
}
named!(floor_udp_syscalls, PROG_FLOOR_UDP_SYSCALLS);

/// An empty program on the BTF tracepoint (`cargo xtask bench`'s floor). Named
/// `names::PROG_FLOOR_BTF`.
#[btf_tracepoint(function = "inet_sock_set_state")]
pub fn floor_btf(_ctx: BtfTracePointContext) -> u32 {
    0
}
named!(floor_btf, PROG_FLOOR_BTF);

/// An empty program on the classic tracepoint (`cargo xtask bench`'s floor).
/// Named `names::PROG_FLOOR_CLASSIC`.
#[tracepoint]
pub fn floor_classic(_ctx: TracePointContext) -> u32 {
    0
}
named!(floor_classic, PROG_FLOOR_CLASSIC);

/// What a program's `try_*` could not do is counted, never dropped silently.
#[inline(always)]
fn counted(result: Result<(), i64>) {
    if result.is_err() {
        counters::count(portwatch_common::Counter::Unreadable);
    }
}

#[cfg(target_arch = "bpf")]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

/// bpf_probe_read_kernel is GPL-only.
#[no_mangle]
#[link_section = "license"]
pub static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";

#[cfg(not(target_arch = "bpf"))]
fn main() {}
