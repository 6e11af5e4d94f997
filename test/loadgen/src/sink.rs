//! Where the UDP load's datagrams go (`--sink`).
//!
//! - `loopback` (the default): a receiver socket per peer on 127.0.0.1, bound to a
//!   port the kernel picks (no `listen` event). Each datagram goes through the
//!   loopback device and the receive path into its peer's socket, in the sender's
//!   own softirq or in ksoftirqd's. Nobody reads them (a small buffer, then
//!   drops) unless `--drain` adds a thread reading every receiver with recvmmsg().
//! - `bridge`: the load generator moves to a network namespace of its own, with a
//!   bridge that has no ports (10.77.0.1/24) and a permanent neighbour entry for
//!   the peer 10.77.0.2, so that each datagram takes the whole send path (UDP, IP,
//!   neighbour, device transmit) and the bridge, having nowhere to forward it,
//!   frees it: what sending costs, without a receive path whose share of the
//!   sender's CPU time depends on whether ksoftirqd took it. Needs root and
//!   iproute2; the host's network is not touched (the namespace goes with the
//!   process).
use std::{
    io::Write,
    net::{Ipv4Addr, SocketAddr, UdpSocket},
    os::fd::AsRawFd,
    process::{Command, Stdio},
    sync::atomic::{AtomicBool, AtomicU64, Ordering},
};

use anyhow::{bail, Context, Result};
use nix::{
    libc,
    sched::{unshare, CloneFlags},
};

#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Sink {
    Loopback,
    Bridge,
}

impl std::str::FromStr for Sink {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<Sink> {
        match s {
            "loopback" => Ok(Sink::Loopback),
            "bridge" => Ok(Sink::Bridge),
            other => bail!("--sink loopback or bridge, not {other}"),
        }
    }
}

/// A receiver's buffer when nobody reads it: a few datagrams, then drops.
const UNREAD_RCVBUF: libc::c_int = 4096;
/// The bridge sink's peer, and its first port (one port per flow).
const BRIDGE_PEER: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 2);
const FIRST_PORT: u16 = 10_000;

/// The peers of `n` flows, and the receiver sockets behind them (loopback).
pub fn peers(sink: Sink, n: u64, drain: bool) -> Result<(Vec<SocketAddr>, Vec<UdpSocket>)> {
    match sink {
        Sink::Loopback => {
            let receivers: Vec<UdpSocket> =
                (0..n).map(|_| receiver(!drain)).collect::<Result<_>>()?;
            let peers = receivers
                .iter()
                .map(|r| r.local_addr())
                .collect::<std::io::Result<_>>()?;
            Ok((peers, receivers))
        }
        Sink::Bridge => {
            if drain {
                bail!("--drain reads loopback receivers: the bridge sink has none");
            }
            if n > u64::from(u16::MAX - FIRST_PORT) {
                bail!(
                    "the bridge sink has ports for at most {} flows",
                    u16::MAX - FIRST_PORT
                );
            }
            bridge()?;
            let peers = (0..n)
                .map(|i| SocketAddr::from((BRIDGE_PEER, FIRST_PORT + i as u16)))
                .collect();
            Ok((peers, vec![]))
        }
    }
}

/// A receiver on 127.0.0.1, port chosen by the kernel.
pub fn receiver(small_buffer: bool) -> Result<UdpSocket> {
    let s = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).context("binding a receiver")?;
    if small_buffer {
        let bytes = UNREAD_RCVBUF;
        // SAFETY: a valid descriptor and an int option of the right size.
        unsafe {
            libc::setsockopt(
                s.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVBUF,
                (&bytes as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            );
        }
    }
    s.set_nonblocking(true)?;
    Ok(s)
}

/// Into a network namespace of its own (this thread, and the threads and
/// commands it starts after), with the port-less bridge.
fn bridge() -> Result<()> {
    unshare(CloneFlags::CLONE_NEWNET).context("a network namespace of its own (root?)")?;
    let script = format!(
        "link set lo up\nlink add pwsink0 type bridge\nlink set pwsink0 up\naddr add 10.77.0.1/24 dev pwsink0\nneigh add {BRIDGE_PEER} lladdr 02:00:00:00:00:02 dev pwsink0 nud permanent\n"
    );
    let mut ip = Command::new("ip")
        .args(["-batch", "-"])
        .stdin(Stdio::piped())
        .spawn()
        .context("starting ip (iproute2)")?;
    ip.stdin
        .take()
        .context("ip's stdin")?
        .write_all(script.as_bytes())?;
    if !ip.wait()?.success() {
        bail!("ip could not make the bridge sink");
    }
    Ok(())
}

/// Read every receiver until `stop`, with epoll and recvmmsg(), counting.
pub fn drain(receivers: &[UdpSocket], stop: &AtomicBool, received: &AtomicU64) -> Result<()> {
    // SAFETY: plain syscalls on descriptors this function keeps alive.
    let ep = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
    if ep < 0 {
        return Err(std::io::Error::last_os_error()).context("epoll_create1");
    }
    for (i, r) in receivers.iter().enumerate() {
        let mut ev = libc::epoll_event {
            events: libc::EPOLLIN as u32,
            u64: i as u64,
        };
        // SAFETY: as above.
        if unsafe { libc::epoll_ctl(ep, libc::EPOLL_CTL_ADD, r.as_raw_fd(), &mut ev) } < 0 {
            return Err(std::io::Error::last_os_error()).context("epoll_ctl");
        }
    }
    let mut bufs = vec![[0u8; 64]; 64];
    let mut iovs: Vec<libc::iovec> = bufs
        .iter_mut()
        .map(|b| libc::iovec {
            iov_base: b.as_mut_ptr().cast(),
            iov_len: b.len(),
        })
        .collect();
    // SAFETY: all-zero is a valid mmsghdr.
    let mut hdrs: Vec<libc::mmsghdr> = (0..64).map(|_| unsafe { std::mem::zeroed() }).collect();
    for (h, iov) in hdrs.iter_mut().zip(iovs.iter_mut()) {
        h.msg_hdr.msg_iov = iov;
        h.msg_hdr.msg_iovlen = 1;
    }
    let mut events = vec![libc::epoll_event { events: 0, u64: 0 }; 256];
    while !stop.load(Ordering::Relaxed) {
        // SAFETY: as above; `events` outlives the call.
        let n = unsafe { libc::epoll_wait(ep, events.as_mut_ptr(), events.len() as i32, 100) };
        for ev in &events[..n.max(0) as usize] {
            let fd = receivers[ev.u64 as usize].as_raw_fd();
            loop {
                // SAFETY: 64 headers pointing at live buffers.
                let got = unsafe {
                    libc::recvmmsg(
                        fd,
                        hdrs.as_mut_ptr(),
                        64,
                        libc::MSG_DONTWAIT,
                        std::ptr::null_mut(),
                    )
                };
                if got <= 0 {
                    break;
                }
                received.fetch_add(got as u64, Ordering::Relaxed);
            }
        }
    }
    // SAFETY: closing the descriptor made above.
    unsafe { libc::close(ep) };
    Ok(())
}
