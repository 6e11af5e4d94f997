//! `sock:inet_sock_set_state`: the TCP lifecycle, from either tracepoint flavour.
//!
//! Only two transitions run in the acting process's own context: CLOSE -> LISTEN
//! (inside listen()) and CLOSE -> SYN_SENT (inside connect()). The owner is recorded
//! there, per socket, and every later transition of that socket (which usually runs
//! in softirq context, where the current task is unrelated) uses the recorded owner.
//!
//! The BTF tracepoint (`try_btf_inet_sock_set_state`) gets the `struct sock` itself,
//! reads the endpoints from it and keeps owners in socket storage; the classic
//! tracepoint (`try_inet_sock_set_state`, where the kernel has no BTF or socket
//! storage for tracing programs) reads its copied record and keeps owners in the
//! LRU map. The lifecycle below is the same for both.
use core::ffi::c_void;

use aya_ebpf::programs::{BtfTracePointContext, TracePointContext};
use portwatch_common::{
    ConfigFlag, Counter, EventKind, ListenKey, Origin, OwnerFlag, TcpState, IPPROTO_TCP,
};

use crate::{
    config::{has, setting},
    counters::count,
    emit::{emit, Detail},
    handled,
    kernel::{self, now_ns, tp_field},
    kernel_versions,
    maps::LISTENERS,
    owner::{current_owner, unknown_owner},
    store::{MapStore, OwnerStore, SkStore},
    tuple::Tuple,
};

// The transitions matched, as raw states (matching the raw byte compiles smaller
// than converting to `TcpState` first).
const CLOSE: u8 = TcpState::Close as u8;
const LISTEN: u8 = TcpState::Listen as u8;
const SYN_SENT: u8 = TcpState::SynSent as u8;
const SYN_RECV: u8 = TcpState::SynRecv as u8;
const ESTABLISHED: u8 = TcpState::Established as u8;

/// Where a state change's endpoints are read from.
trait Endpoints {
    fn tuple(&self) -> Result<Tuple, i64>;
}

/// The classic tracepoint's copied record.
struct Record<'c>(&'c TracePointContext);

impl Endpoints for Record<'_> {
    #[inline(always)]
    fn tuple(&self) -> Result<Tuple, i64> {
        Tuple::from_tracepoint(self.0)
    }
}

/// The sock itself (BTF tracepoint).
struct Sock {
    sk: u64,
    family: u16,
}

impl Endpoints for Sock {
    #[inline(always)]
    fn tuple(&self) -> Result<Tuple, i64> {
        Tuple::from_sock(self.sk, self.family)
    }
}

/// One state change of one socket, states raw as the tracepoint gave them.
struct Change<'s, E, S> {
    old: u8,
    new: u8,
    ends: E,
    store: &'s S,
}

impl<E: Endpoints, S: OwnerStore> Change<'_, E, S> {
    #[inline(always)]
    fn detail(&self, kind: EventKind) -> Detail {
        let mut detail = Detail::new(kind, self.store.sk(), self.old, self.new);
        detail.cookie = self.store.cookie();
        detail
    }
}

/// Classic `sock:inet_sock_set_state`: owners in the LRU map.
pub fn try_inet_sock_set_state(ctx: &TracePointContext) -> Result<(), i64> {
    let protocol: u16 = tp_field(ctx, setting!(offsets.tp_protocol))?;
    if protocol != IPPROTO_TCP {
        return Ok(());
    }
    let old = tp_field::<i32>(ctx, setting!(offsets.tp_oldstate))? as u8;
    let new = tp_field::<i32>(ctx, setting!(offsets.tp_newstate))? as u8;
    if !acted_on(old, new) {
        return Ok(());
    }
    let sk: u64 = tp_field(ctx, setting!(offsets.tp_skaddr))?;
    let store = MapStore::new(sk);
    let change = Change {
        old,
        new,
        ends: Record(ctx),
        store: &store,
    };
    on_change(&change)
}

/// BTF `sock:inet_sock_set_state(sk, oldstate, newstate)`: owners in socket
/// storage. Notes on this CPU which state change it handled (see
/// [`try_btf_inet_sock_set_state_nested`]).
pub fn try_btf_inet_sock_set_state(ctx: &BtfTracePointContext) -> Result<(), i64> {
    let result = btf_state_change(ctx);
    handled::note(&handled::Change::of(ctx));
    result
}

/// The twin, attached after the program above: for every state change it runs
/// right after that program on the same CPU. If that program noted the change, this
/// one takes the note and returns; if not (the kernel's recursion guard skipped that
/// program, because it was already running on this CPU when this change came),
/// this one handles the change.
pub fn try_btf_inet_sock_set_state_nested(ctx: &BtfTracePointContext) -> Result<(), i64> {
    if handled::take(&handled::Change::of(ctx)) {
        return Ok(());
    }
    count(Counter::NestedCaught);
    btf_state_change(ctx)
}

/// One BPF function both programs call (not inlined: its stack is its own, and
/// the programs around it stay within the 512-byte limit). Tight: about 470
/// bytes here plus the caller's 24, each frame rounded up to 32 as Linux 6.1
/// counts them; a call more (a memset not expanded inline) or a few bytes more
/// and 6.1 refuses the program ("combined stack size ... Too large"), which the
/// suite's `[auto]` check on 6.1 catches.
#[inline(never)]
fn btf_state_change(ctx: &BtfTracePointContext) -> Result<(), i64> {
    let (old, new) = (ctx.arg::<i32>(1) as u8, ctx.arg::<i32>(2) as u8);
    if !acted_on(old, new) {
        return Ok(());
    }
    let sk: *mut c_void = ctx.arg(0);
    let family = kernel::sock_family(sk as u64)?;
    if !kernel_versions::sock_is_inet_tcp(sk as u64, family)? {
        return Ok(());
    }
    let store = SkStore::new(sk);
    let change = Change {
        old,
        new,
        ends: Sock {
            sk: sk as u64,
            family,
        },
        store: &store,
    };
    on_change(&change)
}

/// Whether the lifecycle acts on this transition (the others, like ESTABLISHED ->
/// FIN_WAIT1, cost only this test: the shorter a run, the less often another state
/// change on the same CPU comes while it runs).
#[inline(always)]
fn acted_on(old: u8, new: u8) -> bool {
    new == CLOSE
        || matches!(
            (old, new),
            (CLOSE, LISTEN) | (CLOSE, SYN_SENT) | (SYN_SENT, ESTABLISHED) | (LISTEN, SYN_RECV)
        )
        || (old == SYN_RECV && new == ESTABLISHED && !has(ConfigFlag::AcceptHooked))
}

#[inline(always)]
fn on_change<E: Endpoints, S: OwnerStore>(change: &Change<'_, E, S>) -> Result<(), i64> {
    match (change.old, change.new) {
        (CLOSE, LISTEN) => on_listen(change),
        (CLOSE, SYN_SENT) => {
            change.store.set(&current_owner(Origin::Client, now_ns()));
            Ok(())
        }
        (SYN_SENT, ESTABLISHED) => on_connected(change),
        (SYN_SENT, CLOSE) => on_connect_failed(change),
        (LISTEN, SYN_RECV) => on_child(change),
        (SYN_RECV, ESTABLISHED) if !has(ConfigFlag::AcceptHooked) => on_child_established(change),
        (_, CLOSE) => on_close(change),
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

#[inline(always)]
fn on_listen<E: Endpoints, S: OwnerStore>(change: &Change<'_, E, S>) -> Result<(), i64> {
    let tuple = change.ends.tuple()?;
    let owner = current_owner(Origin::Listener, now_ns());
    change.store.set(&owner);
    let _ = LISTENERS.insert(listen_key(&tuple), owner, 0);
    emit(&tuple, &owner, &change.detail(EventKind::Listen));
    Ok(())
}

#[inline(always)]
fn on_connected<E: Endpoints, S: OwnerStore>(change: &Change<'_, E, S>) -> Result<(), i64> {
    let tuple = change.ends.tuple()?;
    let now = now_ns();
    let mut owner = match change.store.get() {
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
    change.store.set(&owner);
    Ok(())
}

#[inline(always)]
fn on_connect_failed<E: Endpoints, S: OwnerStore>(change: &Change<'_, E, S>) -> Result<(), i64> {
    let tuple = change.ends.tuple()?;
    let now = now_ns();
    let owner = match change.store.get() {
        Some(info) => info,
        None => unknown_owner(Origin::Client, now),
    };
    let mut detail = change.detail(EventKind::ConnectFailed);
    if has(ConfigFlag::SkErr) {
        detail.error = kernel::sock_error(change.store.sk()).unwrap_or(0);
    }
    detail.duration_ns = now.saturating_sub(owner.start_ns);
    emit(&tuple, &owner, &detail);
    change.store.forget();
    Ok(())
}

/// A new server-side socket, cloned from its listener: born now. Nobody has
/// accepted it yet: until someone does, it is attributed (inexactly) to the
/// listener's owner.
#[inline(always)]
fn on_child<E: Endpoints, S: OwnerStore>(change: &Change<'_, E, S>) -> Result<(), i64> {
    let tuple = change.ends.tuple()?;
    let now = now_ns();
    // SAFETY: copied out at once.
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
    change.store.set_if_new(&info);
    // The cookie is made now, so that accept programs that cannot make it (a
    // kretprobe, a syscall tracepoint) can read it.
    let _ = change.store.cookie();
    Ok(())
}

/// Without an accept program (no BTF), the best the tracepoint can say about an accepted
/// connection is that it was established on a listener: report it then, inexactly.
#[inline(always)]
fn on_child_established<E: Endpoints, S: OwnerStore>(change: &Change<'_, E, S>) -> Result<(), i64> {
    let tuple = change.ends.tuple()?;
    let owner = match change.store.get() {
        Some(info) => info,
        None => unknown_owner(Origin::Server, now_ns()),
    };
    emit(&tuple, &owner, &change.detail(EventKind::Accept));
    Ok(())
}

#[inline(always)]
fn on_close<E: Endpoints, S: OwnerStore>(change: &Change<'_, E, S>) -> Result<(), i64> {
    let tuple = change.ends.tuple()?;
    let now = now_ns();
    let was_listener = change.old == LISTEN;
    let owner = match change.store.get() {
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
    change.store.forget();
    if was_listener {
        let key = listen_key(&tuple);
        // Only forget the listener if it is this socket's entry (SO_REUSEPORT may
        // have several listeners on one port): the same socket, born at the same
        // moment.
        // SAFETY: compared at once.
        if let Some(l) = unsafe { LISTENERS.get(key) } {
            if owner.born_ns != 0 && l.born_ns == owner.born_ns {
                let _ = LISTENERS.remove(key);
            }
        }
    }
    Ok(())
}
