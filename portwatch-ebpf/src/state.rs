//! `sock:inet_sock_set_state`: the TCP lifecycle.
//!
//! Only two transitions run in the acting process's own context: CLOSE -> LISTEN
//! (inside listen()) and CLOSE -> SYN_SENT (inside connect()). The owner is recorded
//! there, per socket, and every later transition of that socket (which usually runs
//! in softirq context, where the current task is unrelated) uses the recorded owner.
use aya_ebpf::{programs::TracePointContext, EbpfContext};
use aya_log_ebpf::warn;
use portwatch_common::{
    config_flags, event_kind, flags, origin, tcp_state, ListenKey, SockInfo, AF_INET, IPPROTO_TCP,
};

use crate::{
    config::{has, setting},
    emit::{current_owner, emit, now_ns, unknown_owner, Detail, Tuple},
    kernel,
    maps::{LISTENERS, SOCKS},
};

#[inline(always)]
fn field<T>(ctx: &TracePointContext, offset: u32) -> Result<T, i64> {
    unsafe { ctx.read_at::<T>(offset as usize) }.map_err(|e| e as i64)
}

#[inline(always)]
fn read_tuple(ctx: &TracePointContext) -> Result<Tuple, i64> {
    let family: u16 = field(ctx, setting!(tp_family))?;
    let mut tuple = Tuple {
        family,
        sport: field(ctx, setting!(tp_sport))?,
        dport: field(ctx, setting!(tp_dport))?,
        saddr: [0; 16],
        daddr: [0; 16],
    };
    if family == AF_INET {
        let s: [u8; 4] = field(ctx, setting!(tp_saddr))?;
        let d: [u8; 4] = field(ctx, setting!(tp_daddr))?;
        tuple.saddr[..4].copy_from_slice(&s);
        tuple.daddr[..4].copy_from_slice(&d);
    } else {
        tuple.saddr = field(ctx, setting!(tp_saddr_v6))?;
        tuple.daddr = field(ctx, setting!(tp_daddr_v6))?;
    }
    Ok(tuple)
}

pub fn try_inet_sock_set_state(ctx: &TracePointContext) -> Result<(), i64> {
    let protocol: u16 = field(ctx, setting!(tp_protocol))?;
    if protocol != IPPROTO_TCP {
        return Ok(());
    }
    let sk: u64 = field(ctx, setting!(tp_skaddr))?;
    let old = field::<i32>(ctx, setting!(tp_oldstate))? as u8;
    let new = field::<i32>(ctx, setting!(tp_newstate))? as u8;
    let detail = Detail {
        kind: 0,
        sock_id: sk,
        old_state: old,
        new_state: new,
        duration_ns: 0,
        error: 0,
    };
    match (old, new) {
        (tcp_state::CLOSE, tcp_state::LISTEN) => on_listen(ctx, sk, detail),
        (tcp_state::CLOSE, tcp_state::SYN_SENT) if !has(config_flags::CONNECT_HOOKED) => {
            remember(ctx, sk, &current_owner(origin::CLIENT, now_ns()));
            Ok(())
        }
        (tcp_state::SYN_SENT, tcp_state::ESTABLISHED) => on_connected(ctx, sk, detail),
        (tcp_state::SYN_SENT, tcp_state::CLOSE) => on_connect_failed(ctx, sk, detail),
        (tcp_state::LISTEN, tcp_state::SYN_RECV) => on_child(ctx, sk),
        (tcp_state::SYN_RECV, tcp_state::ESTABLISHED) if !has(config_flags::ACCEPT_HOOKED) => {
            on_child_established(ctx, sk, detail)
        }
        (_, tcp_state::CLOSE) => on_close(ctx, sk, detail),
        _ => Ok(()),
    }
}

#[inline(always)]
/// Record a socket's owner; a failure is logged, never silent.
pub fn remember<C: EbpfContext>(ctx: &C, sk: u64, info: &SockInfo) {
    if let Err(e) = SOCKS.insert(sk, info, 0) {
        warn!(ctx, "portwatch: socket map insert failed: {}", e);
    }
}

#[inline(always)]
fn listen_key(tuple: &Tuple) -> ListenKey {
    ListenKey {
        family: tuple.family,
        port: tuple.sport,
    }
}

fn on_listen(ctx: &TracePointContext, sk: u64, mut detail: Detail) -> Result<(), i64> {
    let tuple = read_tuple(ctx)?;
    let owner = current_owner(origin::LISTENER, now_ns());
    remember(ctx, sk, &owner);
    let _ = LISTENERS.insert(listen_key(&tuple), owner, 0);
    detail.kind = event_kind::LISTEN;
    emit(&tuple, &owner, &detail);
    Ok(())
}

fn on_connected(ctx: &TracePointContext, sk: u64, mut detail: Detail) -> Result<(), i64> {
    let tuple = read_tuple(ctx)?;
    let now = now_ns();
    let mut owner = match unsafe { SOCKS.get(sk) } {
        Some(info) => *info,
        // connect() began before tracing started.
        None => unknown_owner(origin::CLIENT, now),
    };
    detail.duration_ns = now.saturating_sub(owner.start_ns);
    detail.kind = event_kind::CONNECT;
    emit(&tuple, &owner, &detail);
    // From here on the connection's age counts from its establishment.
    owner.start_ns = now;
    remember(ctx, sk, &owner);
    Ok(())
}

fn on_connect_failed(ctx: &TracePointContext, sk: u64, mut detail: Detail) -> Result<(), i64> {
    let tuple = read_tuple(ctx)?;
    let now = now_ns();
    let owner = match unsafe { SOCKS.get(sk) } {
        Some(info) => *info,
        None => unknown_owner(origin::CLIENT, now),
    };
    if has(config_flags::SK_ERR) {
        detail.error = kernel::sock_error(sk).unwrap_or(0);
    }
    detail.duration_ns = now.saturating_sub(owner.start_ns);
    detail.kind = event_kind::CONNECT_FAILED;
    emit(&tuple, &owner, &detail);
    let _ = SOCKS.remove(sk);
    Ok(())
}

/// A new server-side socket, cloned from its listener. Nobody has accepted it yet:
/// until someone does, it is attributed (inexactly) to the listener's owner.
fn on_child(ctx: &TracePointContext, sk: u64) -> Result<(), i64> {
    let tuple = read_tuple(ctx)?;
    let now = now_ns();
    let mut info = match unsafe { LISTENERS.get(listen_key(&tuple)) } {
        Some(listener) => *listener,
        None => unknown_owner(origin::SERVER, now),
    };
    info.origin = origin::SERVER;
    info.start_ns = now;
    info.flags &= !flags::PID_EXACT;
    // BPF_NOEXIST: accept() may already have recorded the exact owner.
    let _ = SOCKS.insert(sk, info, 1);
    Ok(())
}

/// Without an accept program (no BTF), the best the tracepoint can say about an accepted
/// connection is that it was established on a listener: report it then, inexactly.
fn on_child_established(ctx: &TracePointContext, sk: u64, mut detail: Detail) -> Result<(), i64> {
    let tuple = read_tuple(ctx)?;
    let owner = match unsafe { SOCKS.get(sk) } {
        Some(info) => *info,
        None => unknown_owner(origin::SERVER, now_ns()),
    };
    detail.kind = event_kind::ACCEPT;
    emit(&tuple, &owner, &detail);
    Ok(())
}

fn on_close(ctx: &TracePointContext, sk: u64, mut detail: Detail) -> Result<(), i64> {
    let tuple = read_tuple(ctx)?;
    let now = now_ns();
    let owner = match unsafe { SOCKS.get(sk) } {
        Some(info) => *info,
        None => {
            let guess = if detail.old_state == tcp_state::LISTEN {
                origin::LISTENER
            } else {
                origin::UNKNOWN
            };
            unknown_owner(guess, 0)
        }
    };
    if owner.start_ns != 0 {
        detail.duration_ns = now.saturating_sub(owner.start_ns);
    }
    detail.kind = event_kind::CLOSE;
    emit(&tuple, &owner, &detail);
    let _ = SOCKS.remove(sk);
    if detail.old_state == tcp_state::LISTEN {
        let key = listen_key(&tuple);
        // Only forget the listener if it is this socket's entry (SO_REUSEPORT may
        // have several listeners on one port).
        if let Some(l) = unsafe { LISTENERS.get(key) } {
            if l.start_ns == owner.start_ns {
                let _ = LISTENERS.remove(key);
            }
        }
    }
    Ok(())
}
