//! `syscalls:sys_exit_accept{,4}`: the one moment the process that receives a
//! server-side connection is the current task. The returned fd is walked to its
//! `struct sock`, whose endpoints are read directly, so the event is exact even when
//! a forked worker, not the listener's owner, accepts.
use aya_ebpf::programs::TracePointContext;
use portwatch_common::{config_flags, event_kind, origin, AF_INET, AF_INET6, IPPROTO_TCP};

use crate::{
    config::config,
    emit::{current_owner, emit, now_ns, Detail},
    kernel,
    maps::SOCKS,
};

pub fn try_sys_exit_accept(ctx: &TracePointContext) -> Result<(), i64> {
    let c = config();
    if c.flags & config_flags::ACCEPT_FD_WALK == 0 {
        return Ok(());
    }
    let ret: i64 = unsafe { ctx.read_at::<i64>(c.tp_accept_ret as usize) }.map_err(|e| e as i64)?;
    if ret < 0 {
        return Ok(());
    }
    let sk = kernel::sock_of_fd(&c, ret as u32)?;
    let family = kernel::sock_family(&c, sk)?;
    if family != AF_INET && family != AF_INET6 {
        return Ok(());
    }
    if c.flags & config_flags::SK_PROTOCOL != 0 && kernel::sock_protocol(&c, sk)? != IPPROTO_TCP {
        return Ok(());
    }
    let tuple = kernel::sock_tuple(&c, sk, family)?;
    let state = kernel::sock_state(&c, sk)?;
    let mut owner = current_owner(origin::SERVER, now_ns());
    if let Some(child) = unsafe { SOCKS.get(sk) } {
        owner.start_ns = child.start_ns;
    }
    let _ = SOCKS.insert(sk, owner, 0);
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
