//! A listener, a forked acceptor and separate client processes: every listen,
//! connect, accept and close reported exactly as the processes know them.
use std::net::{IpAddr, SocketAddr};

use anyhow::{bail, Result};

use super::HOLD_MS;
use crate::{
    expect::{self, port, Expected},
    harness::{
        helpers::{Client, End, Hold, Proc, Server, ServerSpec},
        tracer::Tracer,
    },
};

/// What the helpers reported.
pub struct Truth {
    pub listener: End,
    pub acceptor: Proc,
    /// Each client's end of its connection.
    pub clients: Vec<End>,
}

impl Truth {
    /// The server's end of `client`'s connection, as seen from the client's side
    /// (a dual-stack listener's connections have the client's address family).
    fn server_end(&self, client: &End) -> End {
        End {
            proc: self.acceptor.clone(),
            addr: client.addr,
            port: self.listener.port,
        }
    }
}

/// A listener on `listen_ip` (the first of `ports` that binds), its forked
/// acceptor, and `clients` client processes connecting to `connect_ip`.
pub fn listener_acceptor_clients(
    tracer: &Tracer,
    listen_ip: IpAddr,
    ports: &str,
    connect_ip: IpAddr,
    clients: usize,
) -> Result<Vec<String>> {
    let since = tracer.events().len();
    let truth = run_helpers(listen_ip, ports, connect_ip, clients)?;
    let mut failures = expect::check(tracer, &expected_events(&truth));
    let mut pids = vec![truth.listener.proc.pid, truth.acceptor.pid];
    let mut ports = vec![truth.listener.port];
    pids.extend(truth.clients.iter().map(|c| c.proc.pid));
    ports.extend(truth.clients.iter().map(|c| c.port));
    failures.extend(no_wrong_pids(tracer, since, &ports, &pids));
    if truth.acceptor.pid == truth.listener.proc.pid {
        failures.push("the acceptor is not a separate process".into());
    }
    Ok(failures)
}

/// Run the server and the clients to their end; what they reported.
pub fn run_helpers(
    listen_ip: IpAddr,
    ports: &str,
    connect_ip: IpAddr,
    clients: usize,
) -> Result<Truth> {
    let hold = Hold::Ms(HOLD_MS);
    let mut server = Server::spawn(&ServerSpec {
        ports,
        connections: clients,
        hold,
        ..ServerSpec::new(listen_ip)
    })?;
    let target = SocketAddr::new(connect_ip, server.listener.port);
    let mut helpers = (0..clients)
        .map(|i| Client::spawn(target, &format!("pw-client-{i}"), hold))
        .collect::<Result<Vec<_>>>()?;
    let client_ends = helpers
        .iter_mut()
        .map(Client::connected)
        .collect::<Result<Vec<_>>>()?;
    let accepted = (0..clients)
        .map(|_| server.accepted())
        .collect::<Result<Vec<_>>>()?;
    let listener = server.listener.clone();
    server.finish()?;
    for helper in helpers {
        helper.finish()?;
    }
    for client in &client_ends {
        if !accepted.iter().any(|(_, peer)| *peer == client.port) {
            bail!("the acceptor never saw client port {}", client.port);
        }
    }
    Ok(Truth {
        listener,
        acceptor: accepted[0].0.clone(),
        clients: client_ends,
    })
}

/// The listener's listen and close; per client, its connect and close and the
/// acceptor's accept and close, both closes after the time the helpers held the
/// connection.
pub fn expected_events(truth: &Truth) -> Vec<Expected> {
    let lifetime_ms = HOLD_MS as f64 * 0.8;
    let mut expected = vec![
        expect::listen(&truth.listener),
        expect::listener_close(&truth.listener),
    ];
    for client in &truth.clients {
        let server = truth.server_end(client);
        expected.extend([
            expect::connect(client, &server),
            expect::accept(&server, client),
            expect::client_close(client, &server).lasting_at_least(lifetime_ms),
            expect::server_close(&server, client).lasting_at_least(lifetime_ms),
        ]);
    }
    expected
}

/// No event on these ports may name a process other than the ones that own them,
/// or claim an exact pid it does not have.
/// Only events from `since` on (the number of events seen when the scenario began)
/// count: an earlier scenario's sockets may have had the same ports.
pub fn no_wrong_pids(tracer: &Tracer, since: usize, ports: &[u16], pids: &[u32]) -> Vec<String> {
    let events = tracer.events();
    events
        .get(since..)
        .unwrap_or_default()
        .iter()
        // Snapshot events describe sockets that existed before the test began.
        .filter(|e| e["event"] != "snapshot")
        .filter(|e| ports.contains(&port(e, "local")) || ports.contains(&port(e, "remote")))
        .filter(|e| {
            let pid_ok = e["pid"]
                .as_u64()
                .is_some_and(|p| pids.contains(&(p as u32)));
            !pid_ok || e["pid_exact"] != true
        })
        .map(|e| format!("event with a wrong or inexact pid (expected one of {pids:?}): {e}"))
        .collect()
}
