//! Reading kernel memory at offsets userspace took from the kernel's BTF.
use aya_ebpf::helpers::{bpf_get_current_task, bpf_probe_read_kernel};
use portwatch_common::{config_flags, AF_INET};

use crate::{
    config::{has, setting},
    emit::Tuple,
};

#[inline(always)]
unsafe fn read<T>(base: u64, offset: u32) -> Result<T, i64> {
    bpf_probe_read_kernel((base + offset as u64) as *const T).map_err(|e| e as i64)
}

/// The `struct sock` behind file descriptor `fd` of the current task:
/// task->files->fdt->fd[fd]->private_data (a `struct socket`)->sk.
#[inline(always)]
pub fn sock_of_fd(fd: u32) -> Result<u64, i64> {
    unsafe {
        let task = bpf_get_current_task();
        let files: u64 = read(task, setting!(task_files))?;
        let fdt: u64 = read(files, setting!(files_fdt))?;
        let max_fds: u32 = read(fdt, setting!(fdt_max_fds))?;
        if fd >= max_fds {
            return Err(-1);
        }
        let fd_array: u64 = read(fdt, setting!(fdt_fd))?;
        let file: u64 = read(fd_array, fd * 8)?;
        let socket: u64 = read(file, setting!(file_private_data))?;
        let sk: u64 = read(socket, setting!(socket_sk))?;
        if sk == 0 {
            return Err(-1);
        }
        Ok(sk)
    }
}

/// `sk->sk_family`.
#[inline(always)]
pub fn sock_family(sk: u64) -> Result<u16, i64> {
    unsafe { read(sk, setting!(skc_family)) }
}

/// `sk->sk_protocol`.
#[inline(always)]
pub fn sock_protocol(sk: u64) -> Result<u16, i64> {
    unsafe { read(sk, setting!(sk_protocol)) }
}

/// `sk->sk_state`.
#[inline(always)]
pub fn sock_state(sk: u64) -> Result<u8, i64> {
    unsafe { read(sk, setting!(skc_state)) }
}

/// `sk->sk_err`: the error a failed connect left on the socket.
#[inline(always)]
pub fn sock_error(sk: u64) -> Result<i32, i64> {
    unsafe { read(sk, setting!(sk_err)) }
}

/// Both endpoints, from `sock_common`.
#[inline(always)]
pub fn sock_tuple(sk: u64, family: u16) -> Result<Tuple, i64> {
    unsafe {
        let dport_be: u16 = read(sk, setting!(skc_dport))?;
        let mut tuple = Tuple {
            family,
            sport: read(sk, setting!(skc_num))?,
            dport: u16::from_be(dport_be),
            saddr: [0; 16],
            daddr: [0; 16],
        };
        if family == AF_INET {
            let s: [u8; 4] = read(sk, setting!(skc_rcv_saddr))?;
            let d: [u8; 4] = read(sk, setting!(skc_daddr))?;
            tuple.saddr[..4].copy_from_slice(&s);
            tuple.daddr[..4].copy_from_slice(&d);
        } else {
            tuple.saddr = read(sk, setting!(skc_v6_rcv_saddr))?;
            tuple.daddr = read(sk, setting!(skc_v6_daddr))?;
        }
        Ok(tuple)
    }
}

/// The current task's parent's pid and its own start time (ns since boot), or
/// zeros when the kernel's BTF did not give the offsets.
#[inline(always)]
pub fn current_parent_and_start() -> (u32, u64) {
    if !has(config_flags::TASK_FIELDS) {
        return (0, 0);
    }
    unsafe {
        let task = bpf_get_current_task();
        let ppid = read::<u64>(task, setting!(task_real_parent))
            .and_then(|parent| read::<u32>(parent, setting!(task_tgid)))
            .unwrap_or(0);
        let start = read::<u64>(task, setting!(task_start_boottime)).unwrap_or(0);
        (ppid, start)
    }
}
