//! portwatch's kernel half: TCP lifecycle from `sock:inet_sock_set_state`, process
//! attribution for accept from `syscalls:sys_exit_accept{,4}`, events out through one
//! ring buffer. Entry points stay thin; each calls a `try_*` function in its topic's
//! module.
#![cfg_attr(target_arch = "bpf", no_std)]
#![cfg_attr(target_arch = "bpf", no_main)]

mod accept;
mod config;
mod emit;
mod kernel;
mod maps;
mod state;

use aya_ebpf::{macros::tracepoint, programs::TracePointContext};

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
