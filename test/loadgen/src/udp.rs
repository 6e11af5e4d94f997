//! Loopback UDP load for `cargo xtask bench`.
//!
//! Flows (`--udp-flows F`): F sender sockets, each with a peer of its own (see
//! `sink` for where the datagrams go: `--sink loopback`, the default, or
//! `bridge`); no socket binds a port it chose, so the only events are one flow
//! per sender. The senders are split over `--senders T` threads (default: one per
//! CPU, pinned), which send on their sockets in turn, `--batch B` datagrams of
//! `--payload` bytes per sendmmsg() call, for `--datagrams N` in all or for
//! `--seconds S`. Each sender socket is connected to its peer (`connect()`, then
//! sendmmsg() without addresses), or with `--sendto` left unconnected, the peer's
//! address on every datagram. Every socket sends one datagram before the clock
//! starts, so that each flow exists however short the run.
//!
//! Short-lived sockets (`--udp-sockets N`): N times, a new socket sends one
//! datagram to a peer and is closed (one thread).
//!
//! Empty sends (`--udp-empty-sends N`): N sendmmsg() calls with no message on one
//! connected socket (one thread): the syscall does next to nothing, but its
//! tracepoints fire as for any send, so what a program on them costs per call
//! stands out of the noise.
//!
//! Each prints one JSON object: what was sent, seconds, rate, the pid, and the CPU
//! time of the sending threads over the timed part (user_seconds,
//! system_seconds: the system time is where the kernel's send path and any
//! program on its syscalls run).
use std::{
    net::{Ipv4Addr, SocketAddr, UdpSocket},
    os::fd::AsRawFd,
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Barrier, OnceLock,
    },
    thread,
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};
use nix::{
    libc,
    sys::resource::{getrlimit, setrlimit, Resource},
};

use crate::{
    pin,
    sink::{self, Sink},
    timer::{thread_cpu, Timer},
};

/// `--udp-flows`' settings.
pub struct Flows {
    pub flows: u64,
    /// Stop after this many datagrams in all (the default, 5,000,000)...
    pub datagrams: Option<u64>,
    /// ...or after this long.
    pub seconds: Option<f64>,
    pub senders: usize,
    pub batch: usize,
    pub payload: usize,
    pub sendto: bool,
    pub drain: bool,
    pub sink: Sink,
    pub pin: bool,
}

impl Default for Flows {
    fn default() -> Flows {
        Flows {
            flows: 1000,
            datagrams: None,
            seconds: None,
            senders: thread::available_parallelism().map_or(1, |n| n.get()),
            batch: 64,
            payload: 16,
            sendto: false,
            drain: false,
            sink: Sink::Loopback,
            pin: true,
        }
    }
}

/// As many file descriptors as this host lets a process have.
fn raise_fd_limit() -> Result<()> {
    let (_, hard) = getrlimit(Resource::RLIMIT_NOFILE)?;
    setrlimit(Resource::RLIMIT_NOFILE, hard, hard)?;
    Ok(())
}

fn sockaddr_in(at: SocketAddr) -> libc::sockaddr_in {
    let SocketAddr::V4(v4) = at else {
        unreachable!("the peers are IPv4")
    };
    // SAFETY: all-zero is a valid sockaddr_in.
    let mut sa: libc::sockaddr_in = unsafe { std::mem::zeroed() };
    sa.sin_family = libc::AF_INET as libc::sa_family_t;
    sa.sin_port = v4.port().to_be();
    sa.sin_addr.s_addr = u32::from(*v4.ip()).to_be();
    sa
}

/// One sender's sockets, with their peers' addresses (used with `--sendto`).
struct Sender {
    sockets: Vec<(UdpSocket, libc::sockaddr_in)>,
}

impl Sender {
    /// Send `n` (at most the batch) datagrams on socket `i`; how many went.
    fn send(&self, i: usize, hdrs: &mut [libc::mmsghdr], n: usize, sendto: bool) -> Result<u64> {
        let (socket, peer) = &self.sockets[i];
        if sendto {
            for h in hdrs[..n].iter_mut() {
                h.msg_hdr.msg_name = (peer as *const libc::sockaddr_in).cast_mut().cast();
                h.msg_hdr.msg_namelen = std::mem::size_of::<libc::sockaddr_in>() as u32;
            }
        }
        // SAFETY: `n` initialised headers whose iovecs point at a live buffer.
        let sent = unsafe { libc::sendmmsg(socket.as_raw_fd(), hdrs.as_mut_ptr(), n as u32, 0) };
        if sent < 0 {
            let e = std::io::Error::last_os_error();
            match e.raw_os_error() {
                // The loopback device's queue full: nothing went, try again.
                Some(libc::ENOBUFS) | Some(libc::EAGAIN) => return Ok(0),
                _ => return Err(e).context("sendmmsg"),
            }
        }
        Ok(sent as u64)
    }

    /// One datagram per socket, then batches in turn until `quota` or `deadline`;
    /// datagrams sent (the first ones included) and the CPU time of the batches.
    fn run(
        &self,
        o: &Flows,
        quota: u64,
        deadline: &dyn Fn() -> bool,
        start: &Barrier,
    ) -> Result<(u64, (f64, f64))> {
        let payload = vec![0x5au8; o.payload];
        let mut iov = libc::iovec {
            iov_base: payload.as_ptr().cast_mut().cast(),
            iov_len: payload.len(),
        };
        // SAFETY: all-zero is a valid mmsghdr (no name, no control data).
        let mut hdrs: Vec<libc::mmsghdr> = (0..o.batch)
            .map(|_| unsafe { std::mem::zeroed() })
            .collect();
        for h in hdrs.iter_mut() {
            h.msg_hdr.msg_iov = &mut iov;
            h.msg_hdr.msg_iovlen = 1;
        }
        let mut sent = 0;
        for i in 0..self.sockets.len() {
            while self.send(i, &mut hdrs, 1, o.sendto)? == 0 {}
            sent += 1;
        }
        start.wait();
        let cpu0 = thread_cpu();
        'run: while sent < quota && !deadline() {
            for i in 0..self.sockets.len() {
                let n = (quota - sent).min(o.batch as u64) as usize;
                sent += self.send(i, &mut hdrs, n, o.sendto)?;
                if sent >= quota {
                    break 'run;
                }
            }
        }
        let cpu1 = thread_cpu();
        Ok((sent, (cpu1.0 - cpu0.0, cpu1.1 - cpu0.1)))
    }
}

/// `--udp-flows`.
pub fn flows(o: &Flows) -> Result<()> {
    if o.flows == 0 || o.senders == 0 || o.batch == 0 || o.batch > 1024 {
        bail!("--udp-flows, --senders need at least 1; --batch 1 to 1024");
    }
    let datagrams = match (o.datagrams, o.seconds) {
        (Some(_), Some(_)) => bail!("--datagrams or --seconds, not both"),
        (None, Some(_)) => u64::MAX,
        (Some(n), None) => n,
        (None, None) => 5_000_000,
    };
    if datagrams < o.flows {
        bail!("--datagrams must be at least --udp-flows (one per flow)");
    }
    raise_fd_limit()?;
    let (peers, receivers) = sink::peers(o.sink, o.flows, o.drain)?;
    let senders = o.senders.min(o.flows as usize);
    let mut groups: Vec<Sender> = (0..senders).map(|_| Sender { sockets: vec![] }).collect();
    for (i, peer) in peers.into_iter().enumerate() {
        // Port 0: the kernel's choice, as connect() or a first send would make it.
        let s = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0)).context("a sender socket")?;
        if !o.sendto {
            s.connect(peer)?;
        }
        groups[i % senders].sockets.push((s, sockaddr_in(peer)));
    }
    let stop = AtomicBool::new(false);
    let received = AtomicU64::new(0);
    let start = Barrier::new(senders + 1);
    let until = o.seconds.map(Duration::from_secs_f64);
    let t0 = OnceLock::<Instant>::new();
    let (sent, cpu, seconds) = thread::scope(|scope| -> Result<_> {
        let drainer = o
            .drain
            .then(|| scope.spawn(|| sink::drain(&receivers, &stop, &received)));
        let workers: Vec<_> = groups
            .iter()
            .enumerate()
            .map(|(k, g)| {
                let quota =
                    datagrams / senders as u64 + u64::from((k as u64) < datagrams % senders as u64);
                let (start, t0) = (&start, &t0);
                scope.spawn(move || {
                    if o.pin {
                        pin(Some(k));
                    }
                    let deadline =
                        move || until.is_some_and(|u| t0.get().is_some_and(|t| t.elapsed() >= u));
                    g.run(o, quota, &deadline, start)
                })
            })
            .collect();
        start.wait();
        let began = *t0.get_or_init(Instant::now);
        let mut sent = 0;
        let mut cpu = (0.0, 0.0);
        for w in workers {
            let (n, (u, s)) = w.join().expect("sender thread")?;
            sent += n;
            cpu = (cpu.0 + u, cpu.1 + s);
        }
        let seconds = began.elapsed().as_secs_f64();
        stop.store(true, Ordering::Relaxed);
        if let Some(d) = drainer {
            d.join().expect("drain thread")?;
        }
        Ok((sent, cpu, seconds))
    })?;
    let timed = sent - o.flows;
    let mut out = serde_json::json!({
        "datagrams": sent,
        "timed_datagrams": timed,
        "flows": o.flows,
        "senders": senders,
        "batch": o.batch,
        "payload": o.payload,
        "connected": !o.sendto,
        "sink": if o.sink == Sink::Bridge { "bridge" } else { "loopback" },
        "seconds": seconds,
        "rate": timed as f64 / seconds,
        "user_seconds": cpu.0,
        "system_seconds": cpu.1,
        "pid": std::process::id(),
    });
    if o.drain {
        out["received"] = received.load(Ordering::Relaxed).into();
    }
    println!("{out}");
    Ok(())
}

/// `--udp-sockets N`: N sockets, each created, sending one datagram and closed.
pub fn short_lived(n: u64, sink: Sink, cpu: Option<usize>) -> Result<()> {
    let (peers, _receivers) = sink::peers(sink, 1, false)?;
    let peer = sockaddr_in(peers[0]);
    pin(cpu);
    let byte = [0x5au8; 1];
    let timer = Timer::start();
    for i in 0..n {
        // SAFETY: plain syscalls on a descriptor this loop owns; `peer` and `byte`
        // outlive them.
        unsafe {
            let fd = libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0);
            if fd < 0 {
                return Err(std::io::Error::last_os_error()).with_context(|| format!("socket {i}"));
            }
            let sent = libc::sendto(
                fd,
                byte.as_ptr().cast(),
                byte.len(),
                0,
                (&peer as *const libc::sockaddr_in).cast(),
                std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
            );
            let e = std::io::Error::last_os_error();
            libc::close(fd);
            if sent < 0 {
                return Err(e).with_context(|| format!("sendto from socket {i}"));
            }
        }
    }
    let mut out = timer.stop("sockets", n);
    out["port"] = u16::from_be(peer.sin_port).into();
    println!("{out}");
    Ok(())
}

/// `--udp-empty-sends N`: N sendmmsg() calls of no message on one socket.
pub fn empty_sends(n: u64, sink: Sink, cpu: Option<usize>) -> Result<()> {
    let (peers, _receivers) = sink::peers(sink, 1, false)?;
    let socket = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0)).context("a sender socket")?;
    socket.connect(peers[0])?;
    pin(cpu);
    // SAFETY: all-zero is a valid mmsghdr; none is read with a length of 0.
    let mut hdr: libc::mmsghdr = unsafe { std::mem::zeroed() };
    let timer = Timer::start();
    for _ in 0..n {
        // SAFETY: a live descriptor and header.
        if unsafe { libc::sendmmsg(socket.as_raw_fd(), &mut hdr, 0, 0) } < 0 {
            return Err(std::io::Error::last_os_error()).context("sendmmsg");
        }
    }
    println!("{}", timer.stop("calls", n));
    Ok(())
}
