//! `sock:inet_sock_set_state`: the TCP lifecycle.
//!
//! Only two transitions run in the acting process's own context: CLOSE -> LISTEN
//! (inside listen()) and CLOSE -> SYN_SENT (inside connect()). The owner is recorded
//! there, per socket, and every later transition of that socket (which usually runs
//! in softirq context, where the current task is unrelated) uses the recorded owner.
use aya_ebpf::programs::TracePointContext;
use portwatch_common::{
    ConfigFlag, EventKind, ListenKey, Origin, OwnerFlag, TcpState, IPPROTO_TCP,
};

use crate::{
    config::{has, setting},
    emit::{emit, Detail},
    kernel::{self, now_ns, tp_field},
    maps::LISTENERS,
    owner::{current_owner, forget, recorded, remember, remember_if_new, unknown_owner},
    probes::connect::record_connecting,
    tuple::Tuple,
};

// The transitions matched, as raw states (matching the raw byte compiles smaller
// than converting to `TcpState` first).
const CLOSE: u8 = TcpState::Close as u8;
const LISTEN: u8 = TcpState::Listen as u8;
const SYN_SENT: u8 = TcpState::SynSent as u8;
const SYN_RECV: u8 = TcpState::SynRecv as u8;
const ESTABLISHED: u8 = TcpState::Established as u8;

/// One state change of one socket, states raw as the tracepoint gave them.
struct Change {
    sk: u64,
    old: u8,
    new: u8,
}

impl Change {
    #[inline(always)]
    fn detail(&self, kind: EventKind) -> Detail {
        Detail::new(kind, self.sk, self.old, self.new)
    }
}

pub fn try_inet_sock_set_state(ctx: &TracePointContext) -> Result<(), i64> {
    let protocol: u16 = tp_field(ctx, setting!(offsets.tp_protocol))?;
    if protocol != IPPROTO_TCP {
        return Ok(());
    }
    let change = Change {
        sk: tp_field(ctx, setting!(offsets.tp_skaddr))?,
        old: tp_field::<i32>(ctx, setting!(offsets.tp_oldstate))? as u8,
        new: tp_field::<i32>(ctx, setting!(offsets.tp_newstate))? as u8,
    };
    match (change.old, change.new) {
        (CLOSE, LISTEN) => on_listen(ctx, &change),
        (CLOSE, SYN_SENT) if !has(ConfigFlag::ConnectHooked) => record_connecting(ctx, change.sk),
        (SYN_SENT, ESTABLISHED) => on_connected(ctx, &change),
        (SYN_SENT, CLOSE) => on_connect_failed(ctx, &change),
        (LISTEN, SYN_RECV) => on_child(ctx, &change),
        (SYN_RECV, ESTABLISHED) if !has(ConfigFlag::AcceptHooked) => {
            on_child_established(ctx, &change)
        }
        (_, CLOSE) => on_close(ctx, &change),
        _ => Ok(()),
    }
}

#[inline(always)]
fn listen_key(tuple: &Tuple) -> ListenKey {
    ListenKey {
        family: tuple.family,
        port: tuple.sport,
    }
}

fn on_listen(ctx: &TracePointContext, change: &Change) -> Result<(), i64> {
    let tuple = Tuple::from_tracepoint(ctx)?;
    let owner = current_owner(Origin::Listener, now_ns());
    remember(ctx, change.sk, &owner);
    let _ = LISTENERS.insert(listen_key(&tuple), owner, 0);
    emit(&tuple, &owner, &change.detail(EventKind::Listen));
    Ok(())
}

fn on_connected(ctx: &TracePointContext, change: &Change) -> Result<(), i64> {
    let tuple = Tuple::from_tracepoint(ctx)?;
    let now = now_ns();
    let mut owner = match recorded(change.sk) {
        Some(info) => info,
        // connect() began before tracing started: not seen born (born_ns 0, and
        // it stays 0 in every later event of this socket).
        None => unknown_owner(Origin::Client, now),
    };
    let mut detail = change.detail(EventKind::Connect);
    detail.duration_ns = now.saturating_sub(owner.start_ns);
    emit(&tuple, &owner, &detail);
    // From here on the connection's age counts from its establishment; its
    // identity (born_ns) does not change.
    owner.start_ns = now;
    remember(ctx, change.sk, &owner);
    Ok(())
}

fn on_connect_failed(ctx: &TracePointContext, change: &Change) -> Result<(), i64> {
    let tuple = Tuple::from_tracepoint(ctx)?;
    let now = now_ns();
    let owner = match recorded(change.sk) {
        Some(info) => info,
        None => unknown_owner(Origin::Client, now),
    };
    let mut detail = change.detail(EventKind::ConnectFailed);
    if has(ConfigFlag::SkErr) {
        detail.error = kernel::sock_error(change.sk).unwrap_or(0);
    }
    detail.duration_ns = now.saturating_sub(owner.start_ns);
    emit(&tuple, &owner, &detail);
    forget(change.sk);
    Ok(())
}

/// A new server-side socket, cloned from its listener: born now. Nobody has
/// accepted it yet: until someone does, it is attributed (inexactly) to the
/// listener's owner.
fn on_child(ctx: &TracePointContext, change: &Change) -> Result<(), i64> {
    let tuple = Tuple::from_tracepoint(ctx)?;
    let now = now_ns();
    let mut info = match unsafe { LISTENERS.get(listen_key(&tuple)) } {
        Some(listener) => *listener,
        None => unknown_owner(Origin::Server, now),
    };
    info.origin = Origin::Server as u8;
    info.start_ns = now;
    // A socket of its own, not the listener (whose born_ns was copied above).
    info.born_ns = now;
    info.flags &= !OwnerFlag::PidExact.bit();
    // accept() may already have recorded the exact owner.
    remember_if_new(change.sk, &info);
    Ok(())
}

/// Without an accept program (no BTF), the best the tracepoint can say about an accepted
/// connection is that it was established on a listener: report it then, inexactly.
fn on_child_established(ctx: &TracePointContext, change: &Change) -> Result<(), i64> {
    let tuple = Tuple::from_tracepoint(ctx)?;
    let owner = match recorded(change.sk) {
        Some(info) => info,
        None => unknown_owner(Origin::Server, now_ns()),
    };
    emit(&tuple, &owner, &change.detail(EventKind::Accept));
    Ok(())
}

fn on_close(ctx: &TracePointContext, change: &Change) -> Result<(), i64> {
    let tuple = Tuple::from_tracepoint(ctx)?;
    let now = now_ns();
    let was_listener = change.old == LISTEN;
    let owner = match recorded(change.sk) {
        Some(info) => info,
        None => {
            let guess = if was_listener {
                Origin::Listener
            } else {
                Origin::Unknown
            };
            unknown_owner(guess, 0)
        }
    };
    let mut detail = change.detail(EventKind::Close);
    if owner.start_ns != 0 {
        detail.duration_ns = now.saturating_sub(owner.start_ns);
    }
    emit(&tuple, &owner, &detail);
    forget(change.sk);
    if was_listener {
        let key = listen_key(&tuple);
        // Only forget the listener if it is this socket's entry (SO_REUSEPORT may
        // have several listeners on one port): the same socket, born at the same
        // moment.
        if let Some(l) = unsafe { LISTENERS.get(key) } {
            if owner.born_ns != 0 && l.born_ns == owner.born_ns {
                let _ = LISTENERS.remove(key);
            }
        }
    }
    Ok(())
}
