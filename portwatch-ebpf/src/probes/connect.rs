//! The connecting process: recorded as the socket's owner inside connect(), in the
//! caller's context, for the tracepoint's later transitions (which mostly run in
//! softirq context). Where the kernel allows, `tcp_connect` (fentry or kprobe) does
//! it, once the local port is chosen; else the tracepoint's CLOSE -> SYN_SENT.
use aya_ebpf::{
    programs::{FEntryContext, ProbeContext},
    EbpfContext,
};
use portwatch_common::Origin;

use crate::{
    kernel::now_ns,
    owner::{current_owner, remember},
};

/// Record the current task as the connecting owner of `sk`, born now.
pub fn record_connecting<C: EbpfContext>(ctx: &C, sk: u64) -> Result<(), i64> {
    if sk != 0 {
        remember(ctx, sk, &current_owner(Origin::Client, now_ns()));
    }
    Ok(())
}

/// fentry `tcp_connect(sk)`.
pub fn try_fentry_tcp_connect(ctx: &FEntryContext) -> Result<(), i64> {
    let sk: *const u8 = ctx.arg(0);
    record_connecting(ctx, sk as u64)
}

/// kprobe `tcp_connect(sk)`.
pub fn try_kprobe_tcp_connect(ctx: &ProbeContext) -> Result<(), i64> {
    match ctx.arg::<*const u8>(0) {
        Some(sk) => record_connecting(ctx, sk as u64),
        None => Ok(()),
    }
}
