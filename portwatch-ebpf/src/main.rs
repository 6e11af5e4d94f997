//! portwatch's kernel half: TCP lifecycle from `sock:inet_sock_set_state`; process
//! attribution from `tcp_connect` and `inet_csk_accept` (fentry/fexit or
//! kprobe/kretprobe) where the kernel allows them, else from the tracepoint's
//! process-context transitions and `syscalls:sys_exit_accept{,4}`; events out through
//! one ring buffer. Entry points stay thin; each calls a `try_*` function in its topic's
//! module.
#![cfg_attr(target_arch = "bpf", no_std)]
#![cfg_attr(target_arch = "bpf", no_main)]
// Inline BPF assembly, for the one atomic add core does not offer on this target.
#![cfg_attr(target_arch = "bpf", feature(asm_experimental_arch))]

mod accept;
mod config;
mod connect;
mod emit;
mod filter;
mod kernel;
mod maps;
mod state;

use aya_ebpf::{
    macros::{fentry, fexit, kprobe, kretprobe, tracepoint},
    programs::{FEntryContext, FExitContext, ProbeContext, RetProbeContext, TracePointContext},
};

/// `sock:inet_sock_set_state`: listen, connect, connect failure, close.
#[tracepoint]
pub fn inet_sock_set_state(ctx: TracePointContext) -> u32 {
    let _ = state::try_inet_sock_set_state(&ctx);
    0
}

/// `syscalls:sys_exit_accept` and `syscalls:sys_exit_accept4`: who received the socket.
#[tracepoint]
pub fn sys_exit_accept(ctx: TracePointContext) -> u32 {
    let _ = accept::try_sys_exit_accept(&ctx);
    0
}

/// fentry `tcp_connect` (mode `fentry`): the connecting process.
#[fentry(function = "tcp_connect")]
pub fn fentry_tcp_connect(ctx: FEntryContext) -> u32 {
    let sk: *const u8 = ctx.arg(0);
    let _ = connect::record_connecting(&ctx, sk as u64);
    0
}

/// fexit `inet_csk_accept` (mode `fentry`) on kernels where it takes two
/// arguments (Linux 6.10+): the returned sock follows them, at index 2. One program
/// per prototype keeps the context offset a constant, which the verifier requires;
/// userspace loads the one that matches the kernel's BTF.
#[fexit(function = "inet_csk_accept")]
pub fn fexit_inet_csk_accept_2args(ctx: FExitContext) -> u32 {
    let sk: *const u8 = ctx.arg(2);
    let _ = accept::accepted_by_current(&ctx, sk as u64);
    0
}

/// fexit `inet_csk_accept` where it takes four arguments (before Linux 6.10).
#[fexit(function = "inet_csk_accept")]
pub fn fexit_inet_csk_accept_4args(ctx: FExitContext) -> u32 {
    let sk: *const u8 = ctx.arg(4);
    let _ = accept::accepted_by_current(&ctx, sk as u64);
    0
}

/// kprobe `tcp_connect` (mode `kprobe`).
#[kprobe]
pub fn kprobe_tcp_connect(ctx: ProbeContext) -> u32 {
    if let Some(sk) = ctx.arg::<*const u8>(0) {
        let _ = connect::record_connecting(&ctx, sk as u64);
    }
    0
}

/// kretprobe `inet_csk_accept` (mode `kprobe`).
#[kretprobe]
pub fn kretprobe_inet_csk_accept(ctx: RetProbeContext) -> u32 {
    let _ = accept::try_kretprobe_inet_csk_accept(&ctx);
    0
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
