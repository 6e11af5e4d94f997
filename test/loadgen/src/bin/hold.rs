//! Holds many loopback connections open, for the scale test: one process per side,
//! since a process here may hold at most 20,000 file descriptors.
//!
//! `hold server ADDR PORT COUNT`: listen on ADDR:PORT, accept COUNT connections
//! (all in the main thread) and hold them.
//! `hold client ADDR PORT COUNT`: make COUNT connections to ADDR:PORT and hold them.
//!
//! Prints `{"pid":..,"ready":COUNT}` once every connection is held, then waits for
//! a line on stdin; closes everything (clients first on their side, servers on
//! theirs, as the caller orders) and prints `{"closed":COUNT}` before it exits.
use std::{
    io::{BufRead, Write},
    net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream},
};

use anyhow::{bail, Context, Result};
use nix::sys::resource::{getrlimit, setrlimit, Resource};

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [role, addr, port, count] = args.as_slice() else {
        bail!("usage: hold server|client ADDR PORT COUNT");
    };
    let addr: Ipv4Addr = addr.parse().context("ADDR")?;
    let port: u16 = port.parse().context("PORT")?;
    let count: usize = count.parse().context("COUNT")?;
    // As many descriptors as this host lets a process have.
    let (_, hard) = getrlimit(Resource::RLIMIT_NOFILE)?;
    setrlimit(Resource::RLIMIT_NOFILE, hard, hard)?;
    let at = SocketAddr::from((addr, port));
    let held = match role.as_str() {
        "server" => accept_all(at, count)?,
        "client" => connect_all(at, count)?,
        other => bail!("unknown role {other}"),
    };
    report(&serde_json::json!({"pid": std::process::id(), "ready": held.len()}))?;
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line)?;
    let closed = held.len();
    drop(held);
    report(&serde_json::json!({"closed": closed}))?;
    Ok(())
}

fn report(value: &serde_json::Value) -> Result<()> {
    let mut out = std::io::stdout().lock();
    writeln!(out, "{value}")?;
    out.flush()?;
    Ok(())
}

fn accept_all(at: SocketAddr, count: usize) -> Result<Vec<TcpStream>> {
    let listener = TcpListener::bind(at).with_context(|| format!("listening on {at}"))?;
    // The listener is ready: the caller may start the clients.
    report(&serde_json::json!({"pid": std::process::id(), "listening": at.to_string()}))?;
    let mut held = Vec::with_capacity(count);
    while held.len() < count {
        let (stream, _) = listener.accept().context("accept")?;
        held.push(stream);
    }
    Ok(held)
}

fn connect_all(at: SocketAddr, count: usize) -> Result<Vec<TcpStream>> {
    let mut held = Vec::with_capacity(count);
    while held.len() < count {
        let stream = TcpStream::connect(at)
            .with_context(|| format!("connection {} to {at}", held.len() + 1))?;
        held.push(stream);
    }
    Ok(held)
}
