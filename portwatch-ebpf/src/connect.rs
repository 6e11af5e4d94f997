//! `tcp_connect` (fentry or kprobe): runs inside connect(), in the caller's
//! context, once the local port is chosen. The caller is recorded as the socket's
//! owner for the tracepoint's later transitions.
use aya_ebpf::EbpfContext;
use portwatch_common::origin;

use crate::{
    emit::{current_owner, now_ns},
    state::remember,
};

pub fn record_connecting<C: EbpfContext>(ctx: &C, sk: u64) -> Result<(), i64> {
    if sk != 0 {
        remember(ctx, sk, &current_owner(origin::CLIENT, now_ns()));
    }
    Ok(())
}
