//! Loopback TCP load for the storm and soak tests and `cargo xtask bench`: one
//! server thread (accept, close) and one client thread (connect, wait for the
//! server's close, close), pinned to different CPUs, for a fixed number of
//! connections. The server closes first, so TIME_WAIT stays on the server side and
//! the client's ephemeral ports are free for reuse.
//!
//! `loadgen --connections N [--port P] [--server-cpu C] [--client-cpu C]` prints
//! one JSON object: connections, seconds, rate, pid, server_tid, client_tid, port.
//! `loadgen --syscalls N` makes N getppid() calls instead and prints syscalls,
//! seconds, rate.
//!
//! UDP (see `udp`): `loadgen --udp-flows F [--datagrams N | --seconds S]
//! [--senders T] [--batch B] [--payload BYTES] [--sendto] [--sink loopback|bridge]
//! [--drain]` sends many datagrams over F flows (one socket and one peer each)
//! with sendmmsg(); `loadgen --udp-sockets N [--sink ...]` makes N short-lived
//! sockets, one datagram each; `loadgen --udp-empty-sends N` makes N sendmmsg()
//! calls of no message (what the send hooks cost per call); `loadgen --tcp-sends
//! N` makes N send() calls on one TCP connection (what they cost TCP).
use std::{
    io::Read,
    net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream},
    sync::mpsc,
    thread,
    time::Instant,
};

use anyhow::{bail, Context, Result};
use nix::{
    sched::{sched_setaffinity, CpuSet},
    unistd::{gettid, Pid},
};

mod sink;
mod tcp_sends;
mod timer;
mod udp;

struct Options {
    /// `--syscalls N`: instead of connections, N cheap system calls (getppid), for
    /// the cost every syscall pays while a syscall tracepoint is enabled.
    syscalls: Option<u64>,
    connections: u64,
    port: u16,
    server_cpu: Option<usize>,
    client_cpu: Option<usize>,
    /// `--udp-flows F` and the options that go with it.
    udp_flows: bool,
    udp: udp::Flows,
    /// `--udp-sockets N`: N short-lived UDP sockets.
    udp_sockets: Option<u64>,
    /// `--udp-empty-sends N`: N sendmmsg() calls of no message.
    udp_empty_sends: Option<u64>,
    /// `--tcp-sends N`: N send() calls of 16 bytes on one TCP connection.
    tcp_sends: Option<u64>,
}

fn parse() -> Result<Options> {
    let mut o = Options {
        syscalls: None,
        connections: 10_000,
        port: 0,
        server_cpu: Some(0),
        client_cpu: Some(1),
        udp_flows: false,
        udp: udp::Flows::default(),
        udp_sockets: None,
        udp_empty_sends: None,
        tcp_sends: None,
    };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut value = || args.next().with_context(|| format!("{a} needs a value"));
        match a.as_str() {
            "--connections" => o.connections = value()?.parse()?,
            "--syscalls" => o.syscalls = Some(value()?.parse()?),
            "--port" => o.port = value()?.parse()?,
            "--server-cpu" => o.server_cpu = Some(value()?.parse()?),
            "--client-cpu" => o.client_cpu = Some(value()?.parse()?),
            "--no-pin" => {
                (o.server_cpu, o.client_cpu) = (None, None);
                o.udp.pin = false;
            }
            "--udp-flows" => {
                o.udp_flows = true;
                o.udp.flows = value()?.parse()?;
            }
            "--datagrams" => o.udp.datagrams = Some(value()?.parse()?),
            "--seconds" => o.udp.seconds = Some(value()?.parse()?),
            "--senders" => o.udp.senders = value()?.parse()?,
            "--batch" => o.udp.batch = value()?.parse()?,
            "--payload" => o.udp.payload = value()?.parse()?,
            "--sendto" => o.udp.sendto = true,
            "--drain" => o.udp.drain = true,
            "--sink" => o.udp.sink = value()?.parse()?,
            "--udp-sockets" => o.udp_sockets = Some(value()?.parse()?),
            "--udp-empty-sends" => o.udp_empty_sends = Some(value()?.parse()?),
            "--tcp-sends" => o.tcp_sends = Some(value()?.parse()?),
            other => bail!("unknown argument {other}"),
        }
    }
    Ok(o)
}

/// Pin the calling thread to `cpu` when the machine has it.
fn pin(cpu: Option<usize>) {
    let Some(cpu) = cpu else { return };
    let available = thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    if cpu < available {
        let mut set = CpuSet::new();
        if set.set(cpu).is_ok() {
            let _ = sched_setaffinity(Pid::from_raw(0), &set);
        }
    }
}

/// N getppid() calls as fast as one thread makes them.
fn syscalls(n: u64) {
    let start = Instant::now();
    for _ in 0..n {
        std::hint::black_box(nix::unistd::getppid());
    }
    let seconds = start.elapsed().as_secs_f64();
    println!(
        "{}",
        serde_json::json!({"syscalls": n, "seconds": seconds, "rate": n as f64 / seconds})
    );
}

fn main() -> Result<()> {
    let o = parse()?;
    if let Some(n) = o.syscalls {
        syscalls(n);
        return Ok(());
    }
    if o.udp_flows {
        return udp::flows(&o.udp);
    }
    if let Some(n) = o.udp_sockets {
        return udp::short_lived(n, o.udp.sink, o.client_cpu);
    }
    if let Some(n) = o.udp_empty_sends {
        return udp::empty_sends(n, o.udp.sink, o.client_cpu);
    }
    if let Some(n) = o.tcp_sends {
        return tcp_sends::tcp_sends(n, o.client_cpu);
    }
    let listener = TcpListener::bind(SocketAddr::from((Ipv4Addr::LOCALHOST, o.port)))?;
    let port = listener.local_addr()?.port();
    let n = o.connections;
    let (tid_tx, tid_rx) = mpsc::channel();
    let server_cpu = o.server_cpu;
    let server = thread::spawn(move || -> Result<()> {
        pin(server_cpu);
        tid_tx.send(gettid().as_raw())?;
        for _ in 0..n {
            let (conn, _) = listener.accept()?;
            drop(conn);
        }
        Ok(())
    });
    let server_tid = tid_rx.recv()?;
    pin(o.client_cpu);
    let client_tid = gettid().as_raw();
    let start = Instant::now();
    let mut byte = [0u8; 1];
    for _ in 0..n {
        let mut s = TcpStream::connect((Ipv4Addr::LOCALHOST, port))?;
        // Wait for the server's close (EOF), then close.
        let _ = s.read(&mut byte);
    }
    server.join().expect("server thread")?;
    let seconds = start.elapsed().as_secs_f64();
    println!(
        "{}",
        serde_json::json!({
            "connections": n,
            "seconds": seconds,
            "rate": n as f64 / seconds,
            "pid": std::process::id(),
            "server_tid": server_tid,
            "client_tid": client_tid,
            "port": port,
        })
    );
    Ok(())
}
