//! Accept: the moment the process that receives a server-side connection is the
//! current task. Four hooks reach it: the return of `inet_csk_accept` (fexit in
//! mode fentry, kretprobe in mode kprobe) and the BPF LSM hook `sock_graft` (mode
//! tracepoint, where the kernel runs BPF LSM programs), which hand over the new
//! `struct sock` directly, or else `syscalls:sys_exit_accept{,4}`, whose returned
//! fd is walked to its sock. Either way the endpoints are read from the sock itself, so the event is
//! exact even when a forked worker, not the listener's owner, accepts.
//!
//! Where owners live in socket storage, fexit and the LSM program write it directly; the kretprobe and
//! the syscall tracepoint cannot, so they leave the owner in `ACCEPTED`
//! (`store::PendingStore`) for the socket's next state change to move in.
use core::ffi::c_void;

use aya_ebpf::programs::{FExitContext, LsmContext, RetProbeContext, TracePointContext};
use portwatch_common::{ConfigFlag, EventKind, Origin, AF_INET, AF_INET6};

use crate::{
    config::{has, setting},
    emit::{emit, Detail},
    kernel::{self, now_ns},
    kernel_versions,
    owner::current_owner,
    store::{MapStore, OwnerStore, PendingStore, SkStore},
    tuple::Tuple,
};

/// Report that the current task accepted the socket of `store`.
#[inline(always)]
fn accepted<S: OwnerStore>(store: &S) -> Result<(), i64> {
    let sk = store.sk();
    if sk == 0 || !has(ConfigFlag::SockFields) {
        return Ok(());
    }
    let family = kernel::sock_family(sk)?;
    if family != AF_INET && family != AF_INET6 {
        return Ok(());
    }
    if !kernel_versions::sock_is_tcp(sk)? {
        return Ok(());
    }
    let tuple = Tuple::from_sock(sk, family)?;
    let state = kernel::sock_state(sk)?;
    let mut owner = current_owner(Origin::Server, now_ns());
    if let Some(child) = store.get() {
        // Recorded when the connection was created on its listener: its age and
        // its identity (born_ns) carry over; only the owner becomes exact.
        owner.start_ns = child.start_ns;
        owner.born_ns = child.born_ns;
    }
    store.set(&owner);
    let mut detail = Detail::new(EventKind::Accept, sk, state, state);
    detail.cookie = store.cookie();
    emit(&tuple, &owner, &detail);
    Ok(())
}

/// An accept program that cannot write socket storage: the pending map where
/// owners live in socket storage, else the LRU map.
#[inline(always)]
fn accepted_without_storage(sk: u64) -> Result<(), i64> {
    if has(ConfigFlag::SockStorage) {
        accepted(&PendingStore::new(sk))
    } else {
        accepted(&MapStore::new(sk))
    }
}

/// An accept program that may write socket storage (fexit, BPF LSM), with the
/// kernel's own sock pointer: socket storage where owners live there, else the LRU
/// map.
#[inline(always)]
fn accepted_with_storage(sk: *mut c_void) -> Result<(), i64> {
    if sk.is_null() {
        return Ok(());
    }
    if has(ConfigFlag::SockStorage) {
        accepted(&SkStore::new(sk))
    } else {
        accepted(&MapStore::new(sk as u64))
    }
}

/// `syscalls:sys_exit_accept{,4}`: the returned fd, walked to its sock.
pub fn try_sys_exit_accept(ctx: &TracePointContext) -> Result<(), i64> {
    if !has(ConfigFlag::FdWalk) {
        return Ok(());
    }
    let ret: i64 = kernel::tp_field(ctx, setting!(tp_accept_ret))?;
    if ret < 0 {
        return Ok(());
    }
    accepted_without_storage(kernel::sock_of_fd(ret as u32)?)
}

/// fexit `inet_csk_accept`: the returned sock is argument `RET_ARG` (one of
/// `kernel_versions::ACCEPT_RET_ARG_*`), a constant so the verifier accepts the
/// context read.
pub fn try_fexit_inet_csk_accept<const RET_ARG: usize>(ctx: &FExitContext) -> Result<(), i64> {
    accepted_with_storage(ctx.arg(RET_ARG))
}

/// BPF LSM `sock_graft(sk, parent)`: `sk` is the accepted sock, grafted onto the
/// acceptor's new socket inside `accept()` (also through io_uring). An LSM program
/// may write socket storage, like fexit. Other families and protocols graft too;
/// `accepted` keeps only TCP over IPv4/IPv6.
pub fn try_lsm_sock_graft(ctx: &LsmContext) -> Result<(), i64> {
    accepted_with_storage(ctx.arg(0))
}

/// kretprobe `inet_csk_accept`: the returned sock.
pub fn try_kretprobe_inet_csk_accept(ctx: &RetProbeContext) -> Result<(), i64> {
    let sk: *const u8 = ctx.ret();
    accepted_without_storage(sk as u64)
}
