//! The helper processes, each a re-execution of this binary with its own task
//! name. Each prints one line per fact the test needs (its pid, its ports), the
//! ground truth the traced events are compared with.
use std::{
    ffi::CString,
    io::{Read, Write},
    net::{IpAddr, SocketAddr, TcpListener, TcpStream},
    process::ExitCode,
    thread::sleep,
    time::Duration,
};

use nix::{
    sys::{socket, wait::waitpid},
    unistd::{fork, getpid, getuid, ForkResult},
};

use crate::sock;

pub fn set_comm(name: &str) {
    let name = CString::new(name).expect("no NUL in helper names");
    nix::sys::prctl::set_name(&name).expect("prctl(PR_SET_NAME)");
}

pub fn say(line: String) {
    let mut out = std::io::stdout().lock();
    writeln!(out, "{line}").unwrap();
    out.flush().unwrap();
}

/// Hold for HOLD: a number of milliseconds, or `pause` for until killed.
pub fn hold(spec: &str) {
    if spec == "pause" {
        loop {
            nix::unistd::pause();
        }
    }
    sleep(Duration::from_millis(spec.parse().expect("milliseconds")));
}

/// `server ADDR PORTS LISTENER-NAME ACCEPTOR-NAME COUNT HOLD`: listen on the first
/// of PORTS (comma-separated, 0 = any) that binds, fork, and let the child (renamed)
/// accept COUNT connections, holding them (see `hold`) before closing them.
fn server(args: &[String]) {
    let addr: IpAddr = args[0].parse().unwrap();
    set_comm(&args[2]);
    let listener = args[1]
        .split(',')
        .find_map(|p| TcpListener::bind(SocketAddr::new(addr, p.parse().unwrap())).ok())
        .expect("bind");
    let port = listener.local_addr().unwrap().port();
    say(format!("listening {} {} {}", getpid(), getuid(), port));
    let count: usize = args[4].parse().unwrap();
    // SAFETY: this helper is single-threaded.
    match unsafe { fork() }.expect("fork") {
        ForkResult::Child => {
            set_comm(&args[3]);
            let mut conns = Vec::new();
            for _ in 0..count {
                let (conn, peer) = listener.accept().expect("accept");
                say(format!(
                    "accepted {} {} {}",
                    getpid(),
                    getuid(),
                    peer.port()
                ));
                conns.push(conn);
            }
            hold(&args[5]);
            drop(conns);
            std::process::exit(0);
        }
        ForkResult::Parent { child } => {
            waitpid(child, None).expect("waitpid");
            drop(listener);
            say(format!("closed {}", getpid()));
        }
    }
}

/// `client ADDR PORT NAME HOLD`: connect, report the local port, hold, close.
///
/// With `PW_CGROUP=DIR` it first moves itself into that cgroup; with `PW_WAIT=1` it
/// says `ready PID` and waits for a line on stdin before connecting.
fn client(args: &[String]) {
    set_comm(&args[2]);
    if let Some(dir) = std::env::var_os("PW_CGROUP") {
        let procs = std::path::Path::new(&dir).join("cgroup.procs");
        std::fs::write(&procs, getpid().to_string()).expect("joining the test cgroup");
    }
    if std::env::var_os("PW_WAIT").is_some() {
        say(format!("ready {}", getpid()));
        let mut line = String::new();
        std::io::stdin().read_line(&mut line).expect("stdin");
    }
    let addr: IpAddr = args[0].parse().unwrap();
    let stream =
        TcpStream::connect(SocketAddr::new(addr, args[1].parse().unwrap())).expect("connect");
    let local = stream.local_addr().unwrap().port();
    say(format!("connected {} {} {}", getpid(), getuid(), local));
    hold(&args[3]);
    drop(stream);
}

/// `refused ADDR PORT NAME`: from a known local port, connect to a port nobody
/// listens on; report the errno.
fn refused(args: &[String]) {
    set_comm(&args[2]);
    let addr: IpAddr = args[0].parse().unwrap();
    let (fd, local_port) = sock::bound(addr).expect("bind");
    let errno = sock::connect_errno(&fd, addr, args[1].parse().unwrap());
    say(format!(
        "refused {} {} {} {}",
        getpid(),
        getuid(),
        local_port,
        errno
    ));
}

/// `blackhole ADDR NAME`: listen with a backlog of 0 and fill it with one
/// connection of its own, so the kernel drops every further SYN; report the port
/// and the filler's port, then stay until stdin closes (the filler's server side is
/// never accepted).
fn blackhole(args: &[String]) {
    set_comm(&args[1]);
    let addr: IpAddr = args[0].parse().unwrap();
    let (fd, port) = sock::bound(addr).expect("bind");
    socket::listen(&fd, socket::Backlog::new(0).unwrap()).expect("listen");
    let filler = TcpStream::connect(SocketAddr::new(addr, port)).expect("connect");
    let filler_port = filler.local_addr().unwrap().port();
    say(format!(
        "listening {} {} {} {}",
        getpid(),
        getuid(),
        port,
        filler_port
    ));
    let _ = std::io::stdin().read_to_end(&mut Vec::new());
}

/// `timeout ADDR PORT NAME`: from a known local port, connect with one SYN
/// retransmission (the kernel gives up after about 3 s); report the errno.
fn timeout(args: &[String]) {
    set_comm(&args[2]);
    let addr: IpAddr = args[0].parse().unwrap();
    let (fd, local_port) = sock::bound(addr).expect("bind");
    sock::set_syn_count(&fd, 1).expect("TCP_SYNCNT");
    let errno = sock::connect_errno(&fd, addr, args[1].parse().unwrap());
    say(format!(
        "timedout {} {} {} {}",
        getpid(),
        getuid(),
        local_port,
        errno
    ));
}

/// `netns-listener PORT HOLD`: in a network namespace of its own, listen on
/// 0.0.0.0:PORT and hold (see `hold`); says its namespace's inode.
fn netns_listener(args: &[String]) {
    use std::os::unix::fs::MetadataExt;
    nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET).expect("unshare(CLONE_NEWNET)");
    let port: u16 = args[0].parse().unwrap();
    let listener = TcpListener::bind(("0.0.0.0", port)).expect("bind");
    let netns = std::fs::metadata("/proc/self/ns/net").unwrap().ino();
    say(format!("listening {} {netns}", getpid()));
    hold(&args[1]);
    drop(listener);
}

pub fn main(args: &[String]) -> ExitCode {
    match args.first().map(String::as_str) {
        Some("server") => server(&args[1..]),
        Some("client") => client(&args[1..]),
        Some("refused") => refused(&args[1..]),
        Some("blackhole") => blackhole(&args[1..]),
        Some("timeout") => timeout(&args[1..]),
        Some("netns-listener") => netns_listener(&args[1..]),
        Some("udp-server") => crate::helper_udp::udp_server(&args[1..]),
        Some("udp-client") => crate::helper_udp::udp_client(&args[1..]),
        Some("udp-spray") => crate::helper_udp::udp_spray(&args[1..]),
        other => {
            eprintln!("unknown helper {other:?}");
            return ExitCode::from(2);
        }
    }
    ExitCode::SUCCESS
}
