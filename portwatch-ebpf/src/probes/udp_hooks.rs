//! UDP's hooks in each attach mode, reduced to `probes::udp`'s four moments:
//!
//! | moment | fentry | kprobe | tracepoint |
//! | --- | --- | --- | --- |
//! | bound | fexit `inet_bind`, `inet6_bind` | kprobe + kretprobe on both | `sys_enter/exit_bind` |
//! | connected | fexit `inet_dgram_connect` | kprobe + kretprobe | `sys_enter/exit_connect` |
//! | sent | fexit `udp_sendmsg`, `udpv6_sendmsg` | kprobe + kretprobe on both | `sys_enter/exit_sendto`, `_sendmsg`, `_sendmmsg` |
//! | released | fentry `inet_release` (IPv6's release calls it) | kprobe `inet_release` | none: userspace infers it |
//!
//! What happens is known only at the return (did the call succeed, which port did
//! the kernel give), and a kretprobe or a syscall exit no longer sees the
//! arguments: the entry leaves them in `PENDING_ARGS` under the thread's id, tagged
//! with the call, and the return takes them back. fexit sees both at once. In
//! mode tracepoint the entry leaves the fd's `struct socket`, and only a UDP
//! socket's; the exit reads through it (reads that cannot fault: were the fd
//! closed by another thread meanwhile, they see a socket being freed, where a
//! second walk of the fd would find another file or none).
//!
//! The syscall tracepoints see the process's own arguments: a file descriptor
//! (walked to its sock) and addresses in user memory. They do not see io_uring's
//! sends, which reach only the kernel functions the other modes hook.
use aya_ebpf::{
    helpers::{bpf_get_current_pid_tgid, bpf_probe_read_user},
    programs::{FEntryContext, FExitContext, ProbeContext, RetProbeContext, TracePointContext},
};

use crate::{
    config::setting,
    kernel::{self, tp_field},
    maps::{Pending, PENDING_ARGS},
    probes::udp::{self, sockaddr, Memory},
};

/// Which call left its arguments in `PENDING_ARGS`.
#[derive(Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub enum Call {
    Bind = 1,
    Connect = 2,
    /// `udp_sendmsg`/`udpv6_sendmsg` (kprobe), `sendmsg()`.
    SendMsg = 3,
    SendTo = 4,
    SendMmsg = 5,
}

/// How many messages of one `sendmmsg()` are looked at for new peers: the first
/// only. Each one more is another copy of the flow check for the verifier, and
/// Linux 6.1's took minutes over 8 of them under emulation (and refused a variant
/// outright): a flow whose first datagram is a later message of a call is
/// reported at its next datagram that starts a call.
const SENDMMSG_PEERS: u64 = 1;
/// `struct mmsghdr` in the 64-bit user ABI: a `struct msghdr` (56 bytes, the
/// name pointer first) and the sent length, padded.
const MMSGHDR_SIZE: u64 = 64;

#[inline(always)]
fn stash(call: Call, a: u64, b: u64, c: u64) {
    let args = Pending {
        call: call as u32,
        _pad: 0,
        a,
        b,
        c,
    };
    let _ = PENDING_ARGS.insert(bpf_get_current_pid_tgid(), args, 0);
}

/// The arguments `call` left for this thread. Not deleted (a delete costs as
/// much as the lookup): the thread's next call of a hooked kind overwrites them,
/// its entry always running before its return, and a thread gone leaves its
/// entry to the LRU's eviction.
#[inline(always)]
fn take(call: Call) -> Option<Pending> {
    // SAFETY: copied out at once.
    let args = unsafe { PENDING_ARGS.get(bpf_get_current_pid_tgid()) }.copied()?;
    (args.call == call as u32).then_some(args)
}

/// The port a `struct sockaddr` asks for (offset 2 in both families).
#[inline(always)]
fn requested_port(memory: Memory, addr: u64) -> Result<u16, i64> {
    Ok(sockaddr(memory, addr)?.port)
}

/// The destination of a `struct msghdr` in kernel memory.
#[inline(always)]
fn msghdr_peer(msg: u64) -> Result<udp::Peer, i64> {
    // SAFETY: a kernel read of a pointer.
    let name: u64 = unsafe { kernel::read(msg, setting!(offsets.msghdr_name)) }?;
    sockaddr(Memory::Kernel, name)
}

// --- fentry ---

/// fexit `inet_bind`/`inet6_bind(sock, uaddr, addr_len)`: returns argument 3.
pub fn try_fexit_bind(ctx: &FExitContext) -> Result<(), i64> {
    let ret: i32 = ctx.arg(3);
    if ret != 0 {
        return Ok(());
    }
    let socket: u64 = ctx.arg(0);
    let port = requested_port(Memory::Kernel, ctx.arg(1))?;
    udp::bound(udp::socket_sock(socket)?, port)
}

/// fexit `inet_dgram_connect(sock, uaddr, addr_len, flags)`: returns argument 4.
pub fn try_fexit_connect(ctx: &FExitContext) -> Result<(), i64> {
    let ret: i32 = ctx.arg(4);
    if ret != 0 {
        return Ok(());
    }
    connected(ctx.arg(0))
}

/// `connect()` of the `struct socket` at `socket` succeeded.
#[inline(always)]
fn connected(socket: u64) -> Result<(), i64> {
    udp::flow(
        udp::socket_sock(socket)?,
        udp::socket_ino(socket)?,
        &udp::Peer::NONE,
    )
}

/// A datagram from `sk` to the destination in the kernel's `struct msghdr` at
/// `msg`.
#[inline(always)]
fn sent(sk: u64, msg: u64) -> Result<(), i64> {
    udp::flow(sk, udp::sock_ino(sk)?, &msghdr_peer(msg)?)
}

/// fexit `udp_sendmsg`/`udpv6_sendmsg(sk, msg, len)`: returns argument 3.
pub fn try_fexit_sendmsg(ctx: &FExitContext) -> Result<(), i64> {
    let ret: i32 = ctx.arg(3);
    if ret < 0 {
        return Ok(());
    }
    sent(ctx.arg(0), ctx.arg(1))
}

/// fentry `inet_release(sock)`.
pub fn try_fentry_release(ctx: &FEntryContext) -> Result<(), i64> {
    udp::released(ctx.arg(0))
}

// --- kprobe ---

/// kprobe on a call whose return `try_kretprobe` handles: its first two arguments.
pub fn try_kprobe_args(ctx: &ProbeContext, call: Call) -> Result<(), i64> {
    let a: u64 = ctx.arg(0).ok_or(-1i64)?;
    let b: u64 = ctx.arg(1).ok_or(-1i64)?;
    stash(call, a, b, 0);
    Ok(())
}

/// kretprobe on `inet_bind`/`inet6_bind`, `inet_dgram_connect` or
/// `udp_sendmsg`/`udpv6_sendmsg` (`call`).
pub fn try_kretprobe(ctx: &RetProbeContext, call: Call) -> Result<(), i64> {
    let Some(args) = take(call) else {
        return Ok(());
    };
    let ret: i64 = ctx.ret::<i32>() as i64;
    match call {
        Call::Bind if ret == 0 => udp::bound(
            udp::socket_sock(args.a)?,
            requested_port(Memory::Kernel, args.b)?,
        ),
        Call::Connect if ret == 0 => connected(args.a),
        Call::SendMsg if ret >= 0 => sent(args.a, args.b),
        _ => Ok(()),
    }
}

/// kprobe `inet_release(sock)`.
pub fn try_kprobe_release(ctx: &ProbeContext) -> Result<(), i64> {
    udp::released(ctx.arg(0).ok_or(-1i64)?)
}

// --- tracepoint ---

/// The `n`-th argument of a `syscalls:sys_enter_*` record.
#[inline(always)]
fn syscall_arg(ctx: &TracePointContext, n: u32) -> Result<u64, i64> {
    tp_field(ctx, setting!(tp_syscall_args) + 8 * n)
}

/// `syscalls:sys_enter_{bind,connect,sendmsg,sendmmsg}(fd, ptr, n, ...)` and
/// `sys_enter_sendto(fd, buf, len, flags, addr, addr_len)`: for a UDP socket's
/// fd, the `struct socket` and the address (or message) pointer, for the exit.
///
/// These tracepoints fire for every socket's calls (a TCP server's every
/// `send()`): the fd is walked here, and a call on anything but a UDP socket
/// costs the walk and no map update, its exit a lookup that finds nothing.
pub fn try_sys_enter(ctx: &TracePointContext, call: Call) -> Result<(), i64> {
    if setting!(tp_syscall_args) == 0 {
        return Ok(());
    }
    let fd = syscall_arg(ctx, 0)?;
    let socket = udp_socket_of_fd(fd as u32);
    if socket == 0 {
        forget();
        return Ok(());
    }
    let (ptr, n) = match call {
        Call::SendTo => (syscall_arg(ctx, 4)?, 0),
        Call::SendMmsg => (syscall_arg(ctx, 1)?, syscall_arg(ctx, 2)?),
        _ => (syscall_arg(ctx, 1)?, 0),
    };
    stash(call, socket, ptr, n);
    Ok(())
}

/// The `struct socket` of `fd` if it is a UDP socket over IPv4 or IPv6, else 0.
#[inline(always)]
fn udp_socket_of_fd(fd: u32) -> u64 {
    let Ok(socket) = kernel::socket_of_fd(fd) else {
        return 0;
    };
    match udp::socket_sock(socket).and_then(udp::udp_family) {
        Ok(Some(_)) => socket,
        _ => 0,
    }
}

/// This thread's call is not one to look at: what an earlier call left in
/// `PENDING_ARGS` must not be taken for it at the exit.
#[inline(always)]
fn forget() {
    if let Some(args) = PENDING_ARGS.get_ptr_mut(bpf_get_current_pid_tgid()) {
        // SAFETY: the map's value for this thread, which only this thread writes.
        unsafe { (*args).call = 0 };
    }
}

/// The `syscalls:sys_exit_*` of a call `try_sys_enter` stashed.
pub fn try_sys_exit(ctx: &TracePointContext, call: Call) -> Result<(), i64> {
    let Some(args) = take(call) else {
        return Ok(());
    };
    let ret: i64 = tp_field(ctx, setting!(tp_syscall_ret))?;
    if ret < 0 {
        return Ok(());
    }
    let socket = args.a;
    let sk = udp::socket_sock(socket)?;
    if call == Call::Bind {
        return match ret {
            0 => udp::bound(sk, requested_port(Memory::User, args.b)?),
            _ => Ok(()),
        };
    }
    let ino = udp::socket_ino(socket)?;
    match call {
        Call::Connect if ret == 0 => udp::flow(sk, ino, &udp::Peer::NONE),
        Call::SendTo => udp::flow(sk, ino, &sockaddr(Memory::User, args.b)?),
        Call::SendMsg => udp::flow(sk, ino, &user_msghdr_peer(args.b)?),
        Call::SendMmsg => {
            let sent = if (ret as u64) < SENDMMSG_PEERS {
                ret as u64
            } else {
                SENDMMSG_PEERS
            };
            // Should SENDMMSG_PEERS grow: each message's outcome is dropped before
            // the next, and nothing is carried from one to the next, or the
            // verifier's paths multiply (Linux 6.1 refused such a program).
            let mut i = 0;
            while i < SENDMMSG_PEERS {
                if i < sent {
                    if let Ok(peer) = user_msghdr_peer(args.b + i * MMSGHDR_SIZE) {
                        let _ = udp::flow(sk, ino, &peer);
                    }
                }
                i += 1;
            }
            Ok(())
        }
        _ => Ok(()),
    }
}

/// The destination of a `struct msghdr` in user memory (its name pointer first).
#[inline(always)]
fn user_msghdr_peer(msg: u64) -> Result<udp::Peer, i64> {
    // SAFETY: the helper fails rather than faults.
    let name: u64 = unsafe { bpf_probe_read_user(msg as *const u64) }.map_err(|e| e as i64)?;
    sockaddr(Memory::User, name)
}
