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
    macros::{btf_tracepoint, fexit, kretprobe, lsm, tracepoint},
    programs::{
        BtfTracePointContext, FExitContext, LsmContext, RetProbeContext, TracePointContext,
    },
};

use crate::{
    kernel_versions::{ACCEPT_RET_ARG_2ARGS, ACCEPT_RET_ARG_4ARGS},
    names::named,
    probes::{accept, state},
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
