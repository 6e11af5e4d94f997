//! Accept: the moment the process that receives a server-side connection is the
//! current task. Three hooks reach it, one per attach mode: the return of
//! `inet_csk_accept` (fexit or kretprobe), which hands over the new `struct sock`
//! directly, or `syscalls:sys_exit_accept{,4}`, whose returned fd is walked to its
//! sock. Either way the endpoints are read from the sock itself, so the event is
//! exact even when a forked worker, not the listener's owner, accepts.
use aya_ebpf::{
    programs::{RetProbeContext, TracePointContext},
    EbpfContext,
};
use portwatch_common::{config_flags, event_kind, origin, AF_INET, AF_INET6, IPPROTO_TCP};

use crate::{
    config::{has, setting},
    emit::{current_owner, emit, now_ns, Detail},
    kernel,
    maps::SOCKS,
    state::remember,
};

/// Report that the current task accepted `sk`.
fn accepted<C: EbpfContext>(ctx: &C, sk: u64) -> Result<(), i64> {
    if sk == 0 || !has(config_flags::SOCK_FIELDS) {
        return Ok(());
    }
    let family = kernel::sock_family(sk)?;
    if family != AF_INET && family != AF_INET6 {
        return Ok(());
    }
    if has(config_flags::SK_PROTOCOL) && kernel::sock_protocol(sk)? != IPPROTO_TCP {
        return Ok(());
    }
    let tuple = kernel::sock_tuple(sk, family)?;
    let state = kernel::sock_state(sk)?;
    let mut owner = current_owner(origin::SERVER, now_ns());
    if let Some(child) = unsafe { SOCKS.get(sk) } {
        owner.start_ns = child.start_ns;
    }
    remember(ctx, sk, &owner);
    emit(
        &tuple,
        &owner,
        &Detail {
            kind: event_kind::ACCEPT,
            sock_id: sk,
            old_state: state,
            new_state: state,
            duration_ns: 0,
            error: 0,
        },
    );
    Ok(())
}

pub fn try_sys_exit_accept(ctx: &TracePointContext) -> Result<(), i64> {
    if !has(config_flags::FD_WALK) {
        return Ok(());
    }
    let ret: i64 =
        unsafe { ctx.read_at::<i64>(setting!(tp_accept_ret) as usize) }.map_err(|e| e as i64)?;
    if ret < 0 {
        return Ok(());
    }
    let sk = kernel::sock_of_fd(ret as u32)?;
    accepted(ctx, sk)
}

/// The current task accepted `sk` (fexit/kretprobe on `inet_csk_accept`).
pub fn accepted_by_current<C: EbpfContext>(ctx: &C, sk: u64) -> Result<(), i64> {
    accepted(ctx, sk)
}

pub fn try_kretprobe_inet_csk_accept(ctx: &RetProbeContext) -> Result<(), i64> {
    let sk: *const u8 = ctx.ret();
    accepted_by_current(ctx, sk as u64)
}
