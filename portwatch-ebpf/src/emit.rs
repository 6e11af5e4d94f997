//! Building events and putting them in the ring buffer, counting what does not fit.
use aya_ebpf::helpers::{
    bpf_get_current_cgroup_id, bpf_get_current_comm, bpf_get_current_pid_tgid,
    bpf_get_current_uid_gid, bpf_ktime_get_ns,
};
use portwatch_common::{flags, SockInfo};

use aya_ebpf::bindings::{BPF_RB_AVAIL_DATA, BPF_RB_FORCE_WAKEUP, BPF_RB_NO_WAKEUP};

use crate::{
    config::setting,
    filter, kernel,
    maps::{EVENTS, LOST},
};

/// A connection's endpoints as the kernel side read them.
#[derive(Clone, Copy)]
pub struct Tuple {
    pub family: u16,
    pub sport: u16,
    pub dport: u16,
    pub saddr: [u8; 16],
    pub daddr: [u8; 16],
}

/// What an event says beyond its endpoints.
pub struct Detail {
    pub kind: u8,
    pub sock_id: u64,
    pub old_state: u8,
    pub new_state: u8,
    pub duration_ns: u64,
    pub error: i32,
}

/// The task running now, as the owner of a socket it is acting on.
#[inline(always)]
pub fn current_owner(origin: u8, start_ns: u64) -> SockInfo {
    let pid_tgid = bpf_get_current_pid_tgid();
    let uid_gid = bpf_get_current_uid_gid();
    let (ppid, task_start_ns) = kernel::current_parent_and_start();
    SockInfo {
        start_ns,
        pid: (pid_tgid >> 32) as u32,
        tid: pid_tgid as u32,
        uid: uid_gid as u32,
        origin,
        flags: flags::OWNER_KNOWN | flags::PID_EXACT,
        _pad0: 0,
        comm: bpf_get_current_comm().unwrap_or([0; 16]),
        ppid,
        _pad1: 0,
        // SAFETY: no preconditions; tracing programs may call it.
        cgroup_id: unsafe { bpf_get_current_cgroup_id() },
        task_start_ns,
    }
}

/// An owner for a socket nobody is known to own.
#[inline(always)]
pub fn unknown_owner(origin: u8, start_ns: u64) -> SockInfo {
    SockInfo {
        start_ns,
        pid: 0,
        tid: 0,
        uid: 0,
        origin,
        flags: 0,
        _pad0: 0,
        comm: [0; 16],
        ppid: 0,
        _pad1: 0,
        cgroup_id: 0,
        task_start_ns: 0,
    }
}

#[inline(always)]
pub fn now_ns() -> u64 {
    unsafe { bpf_ktime_get_ns() }
}

/// `*counter += n` as one BPF atomic instruction (`lock xadd`).
///
/// # Safety
/// `counter` must point to a live, 8-byte aligned u64 in a map value.
#[inline(always)]
unsafe fn atomic_add(counter: *mut u64, n: u64) {
    #[cfg(target_arch = "bpf")]
    unsafe {
        core::arch::asm!("lock *(u64 *)({0} + 0) += {1}", in(reg) counter, in(reg) n);
    }
    #[cfg(not(target_arch = "bpf"))]
    unsafe {
        *counter += n;
    }
}

/// Batch notifications: under load the reader is woken once per `wakeup_bytes`
/// rather than per event; it also drains on a timer, so a lone event still shows
/// promptly.
#[inline(always)]
fn wakeup_flags() -> u64 {
    let batch = setting!(wakeup_bytes) as u64;
    if batch == 0 {
        return 0;
    }
    if EVENTS.query(BPF_RB_AVAIL_DATA as u64) + portwatch_common::Event::SIZE as u64 >= batch {
        BPF_RB_FORCE_WAKEUP as u64
    } else {
        BPF_RB_NO_WAKEUP as u64
    }
}

/// Reserve, fill and submit one event, unless the kernel-side filters drop it;
/// count it as lost when the buffer is full.
#[inline(always)]
pub fn emit(tuple: &Tuple, owner: &SockInfo, detail: &Detail) {
    if !filter::passes(owner, tuple) {
        return;
    }
    match EVENTS.reserve::<portwatch_common::Event>(0) {
        Some(mut entry) => {
            // Filled in place: building the event on the stack first would cost
            // another 104 of the 512 bytes BPF programs have.
            let e = entry.as_mut_ptr();
            // SAFETY: `e` points to a reserved, writable Event-sized record; every
            // field is written before it is submitted.
            unsafe {
                (*e).ts_ns = now_ns();
                (*e).sock_id = detail.sock_id;
                (*e).duration_ns = detail.duration_ns;
                (*e).pid = owner.pid;
                (*e).tid = owner.tid;
                (*e).uid = owner.uid;
                (*e).error = detail.error;
                (*e).sport = tuple.sport;
                (*e).dport = tuple.dport;
                (*e).family = tuple.family;
                (*e).kind = detail.kind;
                (*e).origin = owner.origin;
                (*e).old_state = detail.old_state;
                (*e).new_state = detail.new_state;
                (*e).flags = owner.flags;
                (*e)._pad0 = 0;
                (*e).saddr = tuple.saddr;
                (*e).daddr = tuple.daddr;
                (*e).comm = owner.comm;
                (*e).ppid = owner.ppid;
                (*e).cgroup_id = owner.cgroup_id;
                (*e).task_start_ns = owner.task_start_ns;
            }
            entry.submit(wakeup_flags());
        }
        None => {
            if let Some(count) = LOST.get_ptr_mut(0) {
                // Atomic: on this CPU a softirq may run another portwatch program
                // in the middle of this one, and a plain increment could lose a
                // count.
                // SAFETY: the map value is a live, aligned u64 for this CPU.
                unsafe { atomic_add(count, 1) };
            }
        }
    }
}
