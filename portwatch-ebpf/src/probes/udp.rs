//! UDP: which process holds which UDP port, and whom it sends to. UDP has no
//! state machine and no tracepoint of its own, so every attach mode reaches the
//! same four moments, each in the acting process's own context (never softirq):
//!
//! - [`bound`]: a `bind()` to a port the program chose (not 0) succeeded: a UDP
//!   server, event `listen`.
//! - [`connected`]: a `connect()` succeeded: a flow to that peer.
//! - [`sent`]: a datagram went out, to the address given with it or, on a
//!   connected socket, to its peer: a flow to that peer.
//! - [`released`]: the socket's last file reference went (mode fentry and
//!   kprobe; mode tracepoint has no hook there and userspace infers the close).
//!
//! A flow is reported once per socket and peer: the `UDP_FLOWS` table (LRU,
//! bounded) remembers which were. Its event is `connect` (role client), or, when
//! the socket was bound to its port by the program, `accept` (role server: a
//! server's first datagram to a new peer). The process in it is the one sending,
//! so a forked worker answering is named, not the process that bound.
//!
//! A UDP socket is named by its inode number (the `socket:[N]` of
//! `/proc/PID/fd`, and sock_diag's inode), the key of `UDP_SOCKS` and of the flow
//! table: unlike the sock's address it is never reused within a boot.
use aya_ebpf::helpers::{bpf_probe_read_kernel, bpf_probe_read_user};
use portwatch_common::{
    ConfigFlag, EventKind, Origin, SockInfo, TcpState, UdpFlowKey, AF_INET, AF_INET6, IPPROTO_UDP,
};

use crate::{
    config::setting,
    emit::{emit, Detail},
    kernel::{self, now_ns},
    maps::{UDP_FLOWS, UDP_SOCKS},
    owner::{current_owner, unknown_owner},
    tuple::Tuple,
};

/// Where a `struct sockaddr` lives: a kernel copy (fexit, kprobe) or the
/// process's own memory (syscall tracepoints).
#[derive(Clone, Copy)]
pub enum Memory {
    Kernel,
    User,
}

/// A peer: family, address (IPv4 in the first 4 bytes), port (host order).
/// Family 0: none given (a connected socket's own peer). Never an `Option`: the
/// verifier refuses the uninitialised bytes a `None` carries.
#[derive(Clone, Copy)]
pub struct Peer {
    pub family: u16,
    pub port: u16,
    pub addr: [u8; 16],
}

impl Peer {
    pub const NONE: Peer = Peer {
        family: 0,
        port: 0,
        addr: [0; 16],
    };
}

#[inline(always)]
fn read_at<T>(memory: Memory, addr: u64) -> Result<T, i64> {
    let ptr = addr as *const T;
    // SAFETY: both helpers fail rather than fault; T is an integer or byte array.
    unsafe {
        match memory {
            Memory::Kernel => bpf_probe_read_kernel(ptr),
            Memory::User => bpf_probe_read_user(ptr),
        }
    }
    .map_err(|e| e as i64)
}

/// The `struct sockaddr_in`/`sockaddr_in6` at `addr`: [`Peer::NONE`] for another
/// family or a null pointer.
#[inline(always)]
pub fn sockaddr(memory: Memory, addr: u64) -> Result<Peer, i64> {
    if addr == 0 {
        return Ok(Peer::NONE);
    }
    let family: u16 = read_at(memory, addr)?;
    let port = u16::from_be(read_at::<u16>(memory, addr + 2)?);
    let mut peer = Peer {
        family,
        addr: [0; 16],
        port,
    };
    match family {
        AF_INET => {
            let a: [u8; 4] = read_at(memory, addr + 4)?;
            peer.addr[..4].copy_from_slice(&a);
        }
        // sin6_flowinfo comes first.
        AF_INET6 => peer.addr = read_at(memory, addr + 8)?,
        _ => return Ok(Peer::NONE),
    }
    Ok(peer)
}

/// Whether the UDP programs may run: the offsets they need, and the protocol
/// readable from the sock.
#[inline(always)]
fn enabled() -> bool {
    let needed = ConfigFlag::UdpFields.bit()
        | ConfigFlag::SockFields.bit()
        | ConfigFlag::FdWalk.bit()
        | ConfigFlag::SkProtocol.bit();
    setting!(flags) & needed == needed
}

/// A UDP sock over IPv4 or IPv6: its family, else `None`.
#[inline(always)]
pub fn udp_family(sk: u64) -> Result<Option<u16>, i64> {
    if sk == 0 || !enabled() {
        return Ok(None);
    }
    let family = kernel::sock_family(sk)?;
    if family != AF_INET && family != AF_INET6 {
        return Ok(None);
    }
    // SAFETY: a kernel read of an integer.
    let protocol: u16 = unsafe { kernel::read(sk, setting!(offsets.sk_protocol)) }?;
    Ok((protocol == IPPROTO_UDP).then_some(family))
}

/// The inode number of the `struct socket` at `socket`.
#[inline(always)]
pub fn socket_ino(socket: u64) -> Result<u32, i64> {
    let at = setting!(offsets.socket_inode) + setting!(offsets.inode_ino);
    // SAFETY: a kernel read of an integer (`unsigned long`; the numbers sockets
    // get are 32-bit).
    let ino: u64 = unsafe { kernel::read(socket, at) }?;
    Ok(ino as u32)
}

/// The `struct sock` of the `struct socket` at `socket`.
#[inline(always)]
pub fn socket_sock(socket: u64) -> Result<u64, i64> {
    // SAFETY: a kernel read of a pointer.
    unsafe { kernel::read(socket, setting!(offsets.socket_sk)) }
}

/// The inode number of the socket `sk` belongs to.
#[inline(always)]
pub fn sock_ino(sk: u64) -> Result<u32, i64> {
    // SAFETY: a kernel read of a pointer.
    let socket: u64 = unsafe { kernel::read(sk, setting!(offsets.sk_socket)) }?;
    if socket == 0 {
        return Err(-1);
    }
    socket_ino(socket)
}

/// One event of a UDP socket.
#[inline(always)]
fn report(kind: EventKind, sk: u64, ino: u32, tuple: &Tuple, owner: &SockInfo, duration: u64) {
    // UDP sockets keep TCP's state numbers: CLOSE when unconnected (ss: UNCONN),
    // ESTABLISHED when connected; a close goes from there to CLOSE.
    let state = kernel::sock_state(sk).unwrap_or(0);
    let new_state = if kind == EventKind::Close {
        TcpState::Close as u8
    } else {
        state
    };
    let mut detail = Detail::new(kind, sk, state, new_state);
    detail.proto = IPPROTO_UDP as u8;
    detail.sock_ino = ino;
    detail.duration_ns = duration;
    emit(tuple, owner, &detail);
}

/// `bind()` of `sk` to `requested` (the port the program asked for) succeeded.
/// (This and the two below are BPF functions of their own, not inlined: each
/// frame counts on its own toward the 512-byte stack, and a syscall exit calls
/// [`flow`] from several places.)
#[inline(never)]
pub fn bound(sk: u64, requested: u16) -> Result<(), i64> {
    if requested == 0 {
        // A port the kernel picked: a client's, reported with its first flow.
        return Ok(());
    }
    let Some(family) = udp_family(sk)? else {
        return Ok(());
    };
    let ino = sock_ino(sk)?;
    let tuple = Tuple::from_sock(sk, family)?;
    let owner = current_owner(Origin::Listener, now_ns());
    let _ = UDP_SOCKS.insert(ino, owner, 0);
    report(EventKind::Listen, sk, ino, &tuple, &owner, 0);
    Ok(())
}

/// A datagram from `sk` (of socket inode `ino`) to `to`, or ([`Peer::NONE`]) to
/// its connected peer (also what a successful `connect()` reports).
///
/// Most datagrams belong to a flow already reported, so that is checked first,
/// from the fewest reads: the family, the peer, the flow table. Only a new flow
/// pays for the protocol check, the endpoints and the owner.
#[inline(never)]
pub fn flow(sk: u64, ino: u32, to: &Peer) -> Result<(), i64> {
    if sk == 0 {
        return Ok(());
    }
    let family = kernel::sock_family(sk)?;
    if family != AF_INET && family != AF_INET6 {
        return Ok(());
    }
    let mut key = UdpFlowKey {
        sock_ino: ino,
        dport: to.port,
        family,
        daddr: to.addr,
    };
    if to.family == 0 {
        // SAFETY: kernel reads of integers and byte arrays.
        unsafe {
            key.dport = u16::from_be(kernel::read(sk, setting!(offsets.skc_dport))?);
            if family == AF_INET {
                let d: [u8; 4] = kernel::read(sk, setting!(offsets.skc_daddr))?;
                key.daddr[..4].copy_from_slice(&d);
            } else {
                key.daddr = kernel::read(sk, setting!(offsets.skc_v6_daddr))?;
            }
        }
    } else if to.family == AF_INET && family == AF_INET6 {
        // An IPv6 socket's IPv4 peer (udpv6_sendmsg hands those to udp_sendmsg),
        // as the socket holds it: IPv4-mapped.
        key.daddr = [0; 16];
        key.daddr[10] = 0xff;
        key.daddr[11] = 0xff;
        key.daddr[12..].copy_from_slice(&to.addr[..4]);
    } else if to.family != family {
        return Ok(());
    }
    if key.dport == 0 {
        // connect(AF_UNSPEC) dissolves a connection; nothing was sent.
        return Ok(());
    }
    // SAFETY: only tested for presence.
    if unsafe { UDP_FLOWS.get(key) }.is_some() {
        return Ok(());
    }
    if udp_family(sk)?.is_none() {
        return Ok(());
    }
    let mut tuple = Tuple::from_sock(sk, family)?;
    tuple.daddr = key.daddr;
    tuple.dport = key.dport;
    let _ = UDP_FLOWS.insert(key, 1u8, 0);
    let now = now_ns();
    // SAFETY: copied out at once.
    let known = unsafe { UDP_SOCKS.get(ino) }.copied();
    let (kind, origin) = match known {
        Some(s) if s.origin == Origin::Listener as u8 => (EventKind::Accept, Origin::Server),
        _ => (EventKind::Connect, Origin::Client),
    };
    let mut owner = current_owner(origin, now);
    match known {
        // The socket's identity is its first sighting.
        Some(s) => owner.born_ns = s.born_ns,
        None => {
            let _ = UDP_SOCKS.insert(ino, owner, 0);
        }
    }
    report(kind, sk, ino, &tuple, &owner, 0);
    Ok(())
}

/// The socket at `socket` is being released (its last file reference is gone).
#[inline(never)]
pub fn released(socket: u64) -> Result<(), i64> {
    if socket == 0 {
        return Ok(());
    }
    let sk = socket_sock(socket)?;
    let Some(family) = udp_family(sk)? else {
        return Ok(());
    };
    let ino = socket_ino(socket)?;
    let tuple = Tuple::from_sock(sk, family)?;
    // SAFETY: copied out at once.
    let owner = match unsafe { UDP_SOCKS.get(ino) } {
        Some(s) => *s,
        // Never bound, connected or sending while traced, and holding no port:
        // nothing was reported, nothing ends.
        None if tuple.sport == 0 => return Ok(()),
        None => unknown_owner(Origin::Unknown, 0),
    };
    let duration = if owner.start_ns != 0 {
        now_ns().saturating_sub(owner.start_ns)
    } else {
        0
    };
    report(EventKind::Close, sk, ino, &tuple, &owner, duration);
    let _ = UDP_SOCKS.remove(ino);
    Ok(())
}
