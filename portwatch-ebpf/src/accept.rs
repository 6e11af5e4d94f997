//! Accept: the moment the process that receives a server-side connection is the
//! current task. Three hooks reach it, one per attach mode: the return of
//! `inet_csk_accept` (fexit or kretprobe), which hands over the new `struct sock`
//! directly, or `syscalls:sys_exit_accept{,4}`, whose returned fd is walked to its
//! sock. Either way the endpoints are read from the sock itself, so the event is
//! exact even when a forked worker, not the listener's owner, accepts.
use aya_ebpf::{
    programs::{FExitContext, RetProbeContext, TracePointContext},
    EbpfContext,
};
use portwatch_common::{config_flags, event_kind, origin, Config, AF_INET, AF_INET6, IPPROTO_TCP};

use crate::{
    config::config,
    emit::{current_owner, emit, now_ns, Detail},
    kernel,
    maps::SOCKS,
    state::remember,
};

/// Report that the current task accepted `sk`.
fn accepted<C: EbpfContext>(ctx: &C, c: &Config, sk: u64) -> Result<(), i64> {
    if sk == 0 || c.flags & config_flags::SOCK_FIELDS == 0 {
        return Ok(());
    }
    let family = kernel::sock_family(c, sk)?;
    if family != AF_INET && family != AF_INET6 {
        return Ok(());
    }
    if c.flags & config_flags::SK_PROTOCOL != 0 && kernel::sock_protocol(c, sk)? != IPPROTO_TCP {
        return Ok(());
    }
    let tuple = kernel::sock_tuple(c, sk, family)?;
    let state = kernel::sock_state(c, sk)?;
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
    let c = config();
    if c.flags & config_flags::FD_WALK == 0 {
        return Ok(());
    }
    let ret: i64 =
        unsafe { ctx.read_at::<i64>(c.tp_accept_ret as usize) }.map_err(|e| e as i64)?;
    if ret < 0 {
        return Ok(());
    }
    let sk = kernel::sock_of_fd(&c, ret as u32)?;
    accepted(ctx, &c, sk)
}

/// fexit: the return value follows the arguments, so its slot depends on how many
/// arguments this kernel's `inet_csk_accept` has (read from BTF at load time). The
/// indices are literals so the verifier sees a constant context offset.
pub fn try_fexit_inet_csk_accept(ctx: &FExitContext) -> Result<(), i64> {
    let c = config();
    let sk: *const u8 = match c.accept_nargs {
        2 => ctx.arg(2),
        3 => ctx.arg(3),
        4 => ctx.arg(4),
        5 => ctx.arg(5),
        _ => return Ok(()),
    };
    accepted(ctx, &c, sk as u64)
}

pub fn try_kretprobe_inet_csk_accept(ctx: &RetProbeContext) -> Result<(), i64> {
    let c = config();
    let sk: *const u8 = ctx.ret();
    accepted(ctx, &c, sk as u64)
}
