//! Reading the kernel: memory at offsets userspace took from the kernel's BTF, the
//! tracepoint record at offsets from tracefs, the clock, the current task.
//! Where kernel versions differ, see `kernel_versions`.
use aya_ebpf::{
    helpers::{bpf_get_current_task, bpf_ktime_get_ns, bpf_probe_read_kernel},
    programs::TracePointContext,
};
use portwatch_common::ConfigFlag;

use crate::config::{has, setting};

/// The `T` at `base + offset` in kernel memory.
///
/// # Safety
/// A read of kernel memory through the helper, which fails rather than faults;
/// `T` must be valid for any bytes (integers and arrays of them).
#[inline(always)]
pub unsafe fn read<T>(base: u64, offset: u32) -> Result<T, i64> {
    bpf_probe_read_kernel((base + offset as u64) as *const T).map_err(|e| e as i64)
}

/// The `T` at `offset` in a tracepoint's record.
#[inline(always)]
pub fn tp_field<T>(ctx: &TracePointContext, offset: u32) -> Result<T, i64> {
    // SAFETY: read through the helper, bounded by the record; T is an integer or
    // an array of them.
    unsafe { ctx.read_at::<T>(offset as usize) }.map_err(|e| e as i64)
}

/// CLOCK_MONOTONIC, ns.
#[inline(always)]
pub fn now_ns() -> u64 {
    // SAFETY: no preconditions.
    unsafe { bpf_ktime_get_ns() }
}

/// The `struct socket` behind file descriptor `fd` of the current task:
/// task->files->fdt->fd[fd]->private_data.
#[inline(always)]
pub fn socket_of_fd(fd: u32) -> Result<u64, i64> {
    // SAFETY: kernel reads through the helper, of pointers and integers.
    unsafe {
        let task = bpf_get_current_task();
        let files: u64 = read(task, setting!(offsets.task_files))?;
        let fdt: u64 = read(files, setting!(offsets.files_fdt))?;
        let max_fds: u32 = read(fdt, setting!(offsets.fdt_max_fds))?;
        if fd >= max_fds {
            return Err(-1);
        }
        let fd_array: u64 = read(fdt, setting!(offsets.fdt_fd))?;
        let file: u64 = read(fd_array, fd * 8)?;
        let socket: u64 = read(file, setting!(offsets.file_private_data))?;
        if socket == 0 {
            return Err(-1);
        }
        Ok(socket)
    }
}

/// The `struct sock` behind file descriptor `fd` of the current task: its
/// socket's `sk`.
#[inline(always)]
pub fn sock_of_fd(fd: u32) -> Result<u64, i64> {
    // SAFETY: a kernel read of a pointer.
    let sk: u64 = unsafe { read(socket_of_fd(fd)?, setting!(offsets.socket_sk)) }?;
    if sk == 0 {
        return Err(-1);
    }
    Ok(sk)
}

/// `sk->sk_family`.
#[inline(always)]
pub fn sock_family(sk: u64) -> Result<u16, i64> {
    // SAFETY: a kernel read of an integer.
    unsafe { read(sk, setting!(offsets.skc_family)) }
}

/// The inode number of `sk`'s network namespace into `*out` (left 0 where the
/// kernel's BTF gave no offsets or a read fails), `*scratch` holding the `struct
/// net` pointer on the way: both in the event being filled, so that no stack is
/// used (the BTF state program has none to spare on Linux 6.1).
///
/// # Safety
/// `out` and `scratch` must be writable: 4 and 8 bytes.
#[inline(always)]
pub unsafe fn sock_netns_into(sk: u64, out: *mut u32, scratch: *mut u64) {
    use aya_ebpf::helpers::generated::bpf_probe_read_kernel as read_raw;
    // SAFETY: the caller's pointers are writable; the helper fails rather than
    // faults on the kernel addresses.
    unsafe {
        *out = 0;
        if !has(ConfigFlag::NetNs) {
            return;
        }
        let net = (sk + setting!(offsets.sock_net) as u64) as *const core::ffi::c_void;
        if read_raw(scratch.cast(), 8, net) != 0 || *scratch == 0 {
            return;
        }
        let inum = (*scratch + setting!(offsets.net_ns_inum) as u64) as *const core::ffi::c_void;
        if read_raw(out.cast(), 4, inum) != 0 {
            *out = 0;
        }
    }
}

/// `sk->sk_state`.
#[inline(always)]
pub fn sock_state(sk: u64) -> Result<u8, i64> {
    // SAFETY: a kernel read of an integer.
    unsafe { read(sk, setting!(offsets.skc_state)) }
}

/// `sk->sk_err`: the error a failed connect left on the socket.
#[inline(always)]
pub fn sock_error(sk: u64) -> Result<i32, i64> {
    // SAFETY: a kernel read of an integer.
    unsafe { read(sk, setting!(offsets.sk_err)) }
}

/// The current task's parent's pid and its own start time (ns since boot), or
/// zeros when the kernel's BTF did not give the offsets (see `kernel_versions`
/// for `start_boottime`).
#[inline(always)]
pub fn current_parent_and_start() -> (u32, u64) {
    if !has(ConfigFlag::TaskFields) {
        return (0, 0);
    }
    // SAFETY: kernel reads through the helper, of pointers and integers.
    unsafe {
        let task = bpf_get_current_task();
        let ppid = read::<u64>(task, setting!(offsets.task_real_parent))
            .and_then(|parent| read::<u32>(parent, setting!(offsets.task_tgid)))
            .unwrap_or(0);
        let start = read::<u64>(task, setting!(offsets.task_start_boottime)).unwrap_or(0);
        (ppid, start)
    }
}
