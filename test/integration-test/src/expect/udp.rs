//! Expected UDP events from the helpers' account: a bound server, its worker's
//! replies, clients' flows, closes. UDP keeps TCP's state numbers: `UNCONN` for an
//! unconnected socket, `ESTABLISHED` for a connected one.
use std::net::IpAddr;

use serde_json::{json, Value};

use super::{endpoint, family, merge, Expected};
use crate::harness::helpers::{End, Proc};

/// The process fields of a UDP event seen in the process's own context.
fn exact(proc: &Proc) -> Value {
    json!({"pid": proc.pid, "tid": proc.pid, "uid": proc.uid, "comm": proc.comm,
           "pid_exact": true, "proto": "udp"})
}

/// The wire family of a socket bound at `addr` that talks to `peer`.
fn wire(addr: IpAddr, peer: IpAddr) -> &'static str {
    if addr.is_unspecified() {
        family(peer)
    } else {
        family(addr)
    }
}

/// The server's bind to its port.
pub fn udp_listen(listener: &End) -> Expected {
    let fields = json!({"role": "listener", "family": family(listener.addr), "state": "UNCONN",
                        "local": endpoint(listener.addr, listener.port), "remote": {"port": 0}});
    Expected::new(
        format!("udp bind by {}", listener.proc.comm),
        "listen",
        listener.port,
        0,
        merge(exact(&listener.proc), fields),
    )
}

/// The client's first datagram to `server` (or its connect).
pub fn udp_connect(client: &End, server: &End, connected: bool) -> Expected {
    let state = if connected { "ESTABLISHED" } else { "UNCONN" };
    Expected::new(
        format!("udp flow of {} to {}", client.proc.comm, server.port),
        "connect",
        client.port,
        server.port,
        merge(
            exact(&client.proc),
            json!({"role": "client", "family": wire(client.addr, server.addr), "state": state,
                   "local": endpoint(client.addr, client.port),
                   "remote": endpoint(server.addr, server.port)}),
        ),
    )
}

/// The server's first reply to `client` at `client_addr`, from its worker.
pub fn udp_reply(server: &End, client: &End, client_addr: IpAddr) -> Expected {
    Expected::new(
        format!("udp reply of {} to {}", server.proc.comm, client.proc.comm),
        "accept",
        server.port,
        client.port,
        merge(
            exact(&server.proc),
            json!({"role": "server", "family": family(server.addr), "state": "UNCONN",
                   "local": endpoint(server.addr, server.port),
                   "remote": endpoint(client_addr, client.port)}),
        ),
    )
}

/// The close of a UDP socket (`role` as it began); `remote`: its peer's port
/// when it was connected, else 0.
pub fn udp_close(end: &End, role: &str, remote: u16) -> Expected {
    Expected::new(
        format!("close of {}'s udp socket", end.proc.comm),
        "close",
        end.port,
        remote,
        merge(
            exact(&end.proc),
            json!({"role": role, "state": "CLOSE",
                   "local": endpoint(end.addr, end.port)}),
        ),
    )
}
