//! Who owns a socket: building the [`SockInfo`] record (`store` keeps it).
//!
//! `born_ns` is set once, when the kernel side first records a socket (listen,
//! connect, a child's creation on its listener, or an accept of a socket it had not
//! seen), and never changed after: with the sock's address it names the socket for
//! userspace, since the kernel reuses a freed sock's address.
use aya_ebpf::helpers::{
    bpf_get_current_cgroup_id, bpf_get_current_comm, bpf_get_current_pid_tgid,
    bpf_get_current_uid_gid,
};
use portwatch_common::{Origin, OwnerFlag, SockInfo, COMM_LEN};

use crate::kernel;

/// The task running now, as the owner of a socket it is acting on, first seen
/// `now` (both `start_ns` and `born_ns`).
#[inline(always)]
pub fn current_owner(origin: Origin, now: u64) -> SockInfo {
    let pid_tgid = bpf_get_current_pid_tgid();
    let uid_gid = bpf_get_current_uid_gid();
    let (ppid, task_start_ns) = kernel::current_parent_and_start();
    SockInfo {
        start_ns: now,
        born_ns: now,
        pid: (pid_tgid >> 32) as u32,
        tid: pid_tgid as u32,
        uid: uid_gid as u32,
        origin: origin as u8,
        flags: OwnerFlag::Known.bit() | OwnerFlag::PidExact.bit(),
        _pad0: 0,
        comm: bpf_get_current_comm().unwrap_or([0; COMM_LEN]),
        ppid,
        _pad1: 0,
        // SAFETY: no preconditions; tracing programs may call it.
        cgroup_id: unsafe { bpf_get_current_cgroup_id() },
        task_start_ns,
    }
}

/// An owner for a socket nobody is known to own, not seen born (`born_ns` 0).
#[inline(always)]
pub fn unknown_owner(origin: Origin, start_ns: u64) -> SockInfo {
    SockInfo {
        start_ns,
        born_ns: 0,
        pid: 0,
        tid: 0,
        uid: 0,
        origin: origin as u8,
        flags: 0,
        _pad0: 0,
        comm: [0; COMM_LEN],
        ppid: 0,
        _pad1: 0,
        cgroup_id: 0,
        task_start_ns: 0,
    }
}
