//! portwatch's kernel half: TCP lifecycle from `sock:inet_sock_set_state`; process
//! attribution from `tcp_connect` and `inet_csk_accept` (fentry/fexit or
//! kprobe/kretprobe) where the kernel allows them, else from the tracepoint's
//! process-context transitions and `syscalls:sys_exit_accept{,4}`; events out through
//! one ring buffer.
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
//! 2. `probes::state` (also uses `probes::connect`), `probes::accept`,
//!    `probes::connect`: what each hook does
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
mod emit;
mod filter;
mod kernel;
mod kernel_versions;
mod maps;
mod names;
mod owner;
mod probes;
mod tuple;

use aya_ebpf::{
    macros::{fentry, fexit, kprobe, kretprobe, tracepoint},
    programs::{FEntryContext, FExitContext, ProbeContext, RetProbeContext, TracePointContext},
};

use crate::{
    kernel_versions::{ACCEPT_RET_ARG_2ARGS, ACCEPT_RET_ARG_4ARGS},
    names::named,
    probes::{accept, connect, state},
};

/// `sock:inet_sock_set_state`: listen, connect, connect failure, close.
/// Named `names::PROG_INET_SOCK_SET_STATE`.
#[tracepoint]
pub fn inet_sock_set_state(ctx: TracePointContext) -> u32 {
    let _ = state::try_inet_sock_set_state(&ctx);
    0
}
named!(inet_sock_set_state, PROG_INET_SOCK_SET_STATE);

/// `syscalls:sys_exit_accept` and `syscalls:sys_exit_accept4` (mode `tracepoint`):
/// who received the socket. Named `names::PROG_SYS_EXIT_ACCEPT`.
#[tracepoint]
pub fn sys_exit_accept(ctx: TracePointContext) -> u32 {
    let _ = accept::try_sys_exit_accept(&ctx);
    0
}
named!(sys_exit_accept, PROG_SYS_EXIT_ACCEPT);

/// fentry `tcp_connect` (mode `fentry`): the connecting process.
/// Named `names::PROG_FENTRY_TCP_CONNECT`; the function is `names::KFUNC_TCP_CONNECT`.
#[fentry(function = "tcp_connect")]
pub fn fentry_tcp_connect(ctx: FEntryContext) -> u32 {
    let _ = connect::try_fentry_tcp_connect(&ctx);
    0
}
named!(fentry_tcp_connect, PROG_FENTRY_TCP_CONNECT);

/// fexit `inet_csk_accept` (mode `fentry`) where it takes two arguments (Linux
/// 6.10+; see `kernel_versions`). Named `names::PROG_FEXIT_ACCEPT_2ARGS`; the
/// function is `names::KFUNC_INET_CSK_ACCEPT`.
#[fexit(function = "inet_csk_accept")]
pub fn fexit_inet_csk_accept_2args(ctx: FExitContext) -> u32 {
    let _ = accept::try_fexit_inet_csk_accept::<ACCEPT_RET_ARG_2ARGS>(&ctx);
    0
}
named!(fexit_inet_csk_accept_2args, PROG_FEXIT_ACCEPT_2ARGS);

/// fexit `inet_csk_accept` where it takes four arguments (before Linux 6.10).
/// Named `names::PROG_FEXIT_ACCEPT_4ARGS`.
#[fexit(function = "inet_csk_accept")]
pub fn fexit_inet_csk_accept_4args(ctx: FExitContext) -> u32 {
    let _ = accept::try_fexit_inet_csk_accept::<ACCEPT_RET_ARG_4ARGS>(&ctx);
    0
}
named!(fexit_inet_csk_accept_4args, PROG_FEXIT_ACCEPT_4ARGS);

/// kprobe `tcp_connect` (mode `kprobe`). Named `names::PROG_KPROBE_TCP_CONNECT`.
#[kprobe]
pub fn kprobe_tcp_connect(ctx: ProbeContext) -> u32 {
    let _ = connect::try_kprobe_tcp_connect(&ctx);
    0
}
named!(kprobe_tcp_connect, PROG_KPROBE_TCP_CONNECT);

/// kretprobe `inet_csk_accept` (mode `kprobe`).
/// Named `names::PROG_KRETPROBE_INET_CSK_ACCEPT`.
#[kretprobe]
pub fn kretprobe_inet_csk_accept(ctx: RetProbeContext) -> u32 {
    let _ = accept::try_kretprobe_inet_csk_accept(&ctx);
    0
}
named!(kretprobe_inet_csk_accept, PROG_KRETPROBE_INET_CSK_ACCEPT);

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
