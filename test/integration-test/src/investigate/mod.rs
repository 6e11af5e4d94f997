//! Ground truth for the investigator features: process details, hostile names
//! (`details`), filters proven by what is absent as well as what is present
//! (`filters`), and the sockets that existed before portwatch started
//! (`snapshot`).
mod details;
mod filters;
mod snapshot;

use std::net::{IpAddr, SocketAddr};

use anyhow::Result;

pub use details::{hostile_name, process_details};
pub use filters::{kernel_filters, userspace_filters};
pub use snapshot::snapshot;

use crate::harness::helpers::{Client, End, Hold, Server, ServerSpec};

/// A server (listener + forked acceptor) on `port` (0: any) and one client
/// process per name, one after the other, each holding its connection 50 ms; all
/// finished. The listener's end and each client's end.
fn traffic(addr: IpAddr, port: u16, clients: &[&str]) -> Result<(End, Vec<End>)> {
    let port = port.to_string();
    let server = Server::spawn(&ServerSpec {
        ports: &port,
        connections: clients.len(),
        ..ServerSpec::new(addr)
    })?;
    let listener = server.listener.clone();
    let mut ends = Vec::new();
    for name in clients {
        let mut client = Client::spawn(SocketAddr::new(addr, listener.port), name, Hold::Ms(50))?;
        ends.push(client.connected()?);
        client.finish()?;
    }
    server.finish()?;
    Ok((listener, ends))
}

/// One client named `name` of a server on `port`; the listener's end and the
/// client's.
fn one_client(addr: IpAddr, port: u16, name: &str) -> Result<(End, End)> {
    let (listener, mut clients) = traffic(addr, port, &[name])?;
    Ok((listener, clients.remove(0)))
}
