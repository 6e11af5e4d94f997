//! The UDP helper processes: a server bound to a known port whose forked worker
//! answers, clients sending through each of the calls portwatch hooks, and one
//! socket that sends to many peers. Each reports its pid, uid and port.
use std::{
    io::IoSlice,
    net::{IpAddr, SocketAddr, UdpSocket},
    time::Duration,
};

use nix::{
    sys::{
        socket::{self, MsgFlags, MultiHeaders, SockaddrStorage},
        wait::waitpid,
    },
    unistd::{fork, getpid, getuid, ForkResult},
};

use crate::helper::{hold, say, set_comm};

/// A UDP socket bound to the first of `ports` (comma-separated; 0 is any) that
/// binds on `addr`.
fn bind_first(addr: IpAddr, ports: &str) -> UdpSocket {
    ports
        .split(',')
        .find_map(|p| UdpSocket::bind(SocketAddr::new(addr, p.parse().unwrap())).ok())
        .expect("bind")
}

/// `udp-server ADDR PORTS NAME WORKER-NAME COUNT HOLD`: bind (see `bind_first`),
/// fork, and let the child (renamed) answer COUNT datagrams, one reply each,
/// saying `answered PID UID PEER-PORT`; then hold (see `hold`) and close.
pub fn udp_server(args: &[String]) {
    let addr: IpAddr = args[0].parse().unwrap();
    set_comm(&args[2]);
    let socket = bind_first(addr, &args[1]);
    let port = socket.local_addr().unwrap().port();
    say(format!("listening {} {} {}", getpid(), getuid(), port));
    let count: usize = args[4].parse().unwrap();
    // SAFETY: this helper is single-threaded.
    match unsafe { fork() }.expect("fork") {
        ForkResult::Child => {
            set_comm(&args[3]);
            let mut buf = [0u8; 512];
            for _ in 0..count {
                let (n, peer) = socket.recv_from(&mut buf).expect("recv_from");
                socket.send_to(&buf[..n], peer).expect("send_to");
                say(format!(
                    "answered {} {} {}",
                    getpid(),
                    getuid(),
                    peer.port()
                ));
            }
            hold(&args[5]);
            std::process::exit(0);
        }
        ForkResult::Parent { child } => {
            waitpid(child, None).expect("waitpid");
            drop(socket);
            say(format!("closed {}", getpid()));
        }
    }
}

/// A UDP socket of `addr`'s family, bound to nothing yet.
fn unbound(addr: IpAddr) -> UdpSocket {
    let any = crate::sock::any_of(addr);
    // Port 0 here is what an unbound socket's first send would choose anyway;
    // binding first only makes the local port known before anything is sent.
    UdpSocket::bind(SocketAddr::new(any, 0)).expect("bind")
}

/// `udp-client ADDR PORT NAME HOW HOLD`: send one datagram to ADDR:PORT and wait
/// for the answer, HOW being `connected` (connect, then send), `sendto`, or
/// `sendmsg` (the address in the message); say `sent PID UID LOCAL-PORT` and
/// `bound LOCAL-ADDR` (the wildcard until connected), hold, close.
pub fn udp_client(args: &[String]) {
    set_comm(&args[2]);
    let addr: IpAddr = args[0].parse().unwrap();
    let target = SocketAddr::new(addr, args[1].parse().unwrap());
    let socket = unbound(addr);
    let query =
        b"\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\x07example\x03com\x00\x00\x01\x00\x01";
    match args[3].as_str() {
        "connected" => {
            socket.connect(target).expect("connect");
            socket.send(query).expect("send");
        }
        "sendto" => {
            socket.send_to(query, target).expect("send_to");
        }
        "sendmsg" => {
            use std::os::fd::AsRawFd;
            let to = SockaddrStorage::from(target);
            socket::sendmsg(
                socket.as_raw_fd(),
                &[IoSlice::new(query)],
                &[],
                MsgFlags::empty(),
                Some(&to),
            )
            .expect("sendmsg");
        }
        other => panic!("unknown way to send: {other}"),
    }
    let local = socket.local_addr().unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut buf = [0u8; 512];
    socket.recv_from(&mut buf).expect("the server's answer");
    say(format!("sent {} {} {}", getpid(), getuid(), local.port()));
    say(format!("bound {}", local.ip()));
    hold(&args[4]);
}

/// `udp-spray ADDR NAME BASE COUNT ROUNDS`: one socket sends ROUNDS datagrams to
/// each of ADDR:BASE .. ADDR:BASE+COUNT-1 (nobody needs to listen), the first
/// round with sendto, the next ones with sendmmsg in batches of up to 8, then a
/// TCP send in the same thread (see `after_udp_a_tcp_send`); says `sprayed PID
/// UID LOCAL-PORT`.
pub fn udp_spray(args: &[String]) {
    set_comm(&args[1]);
    let addr: IpAddr = args[0].parse().unwrap();
    let base: u16 = args[2].parse().unwrap();
    let count: u16 = args[3].parse().unwrap();
    let rounds: usize = args[4].parse().unwrap();
    let socket = unbound(addr);
    let targets: Vec<SocketAddr> = (0..count)
        .map(|i| SocketAddr::new(addr, base + i))
        .collect();
    for t in &targets {
        socket.send_to(b"spray", t).expect("send_to");
    }
    for _ in 1..rounds {
        for batch in targets.chunks(8) {
            send_batch(&socket, batch);
        }
    }
    after_udp_a_tcp_send(&socket, targets[0], SocketAddr::new(addr, base + count));
    let local = socket.local_addr().unwrap().port();
    say(format!("sprayed {} {} {}", getpid(), getuid(), local));
}

/// In one thread, a UDP sendto() to `seen`, then a TCP send: what the UDP call
/// left for its syscall exit must not be taken for the TCP call's (in mode
/// tracepoint the entry keeps nothing for a TCP socket). The address the UDP call
/// named is overwritten with `unseen` in between: taken, it would make a flow to
/// a peer this socket never sent to.
fn after_udp_a_tcp_send(socket: &UdpSocket, seen: SocketAddr, unseen: SocketAddr) {
    use std::os::fd::AsRawFd;

    use nix::sys::socket::SockaddrLike;
    let mut to = Box::new(SockaddrStorage::from(seen));
    let data = b"spray";
    // SAFETY: live descriptors; buffers and addresses of the lengths given.
    unsafe {
        let sent = libc::sendto(
            socket.as_raw_fd(),
            data.as_ptr().cast(),
            data.len(),
            0,
            to.as_ptr(),
            to.len(),
        );
        assert_eq!(sent, data.len() as isize, "sendto");
        *to = SockaddrStorage::from(unseen);
        let listener = std::net::TcpListener::bind(SocketAddr::new(seen.ip(), 0)).unwrap();
        let tcp = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let sent = libc::sendto(
            tcp.as_raw_fd(),
            data.as_ptr().cast(),
            data.len(),
            0,
            std::ptr::null(),
            0,
        );
        assert_eq!(sent, data.len() as isize, "TCP send");
    }
    drop(to);
}

/// One sendmmsg() of a datagram to each of `targets`.
fn send_batch(socket: &UdpSocket, targets: &[SocketAddr]) {
    use std::os::fd::AsRawFd;
    let addrs: Vec<Option<SockaddrStorage>> = targets
        .iter()
        .map(|t| Some(SockaddrStorage::from(*t)))
        .collect();
    let payload = [IoSlice::new(b"spray")];
    let slices: Vec<[IoSlice<'_>; 1]> = targets.iter().map(|_| payload).collect();
    let mut headers = MultiHeaders::<SockaddrStorage>::preallocate(targets.len(), None);
    let sent = socket::sendmmsg(
        socket.as_raw_fd(),
        &mut headers,
        &slices,
        &addrs,
        [],
        MsgFlags::empty(),
    )
    .expect("sendmmsg");
    assert_eq!(sent.count(), targets.len(), "sendmmsg sent part of a batch");
}
