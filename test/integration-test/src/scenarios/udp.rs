//! UDP with ground truth: a server bound to a known port in one process,
//! answering from a forked worker; clients in separate processes sending through
//! connect()+send(), sendto() and sendmsg(); one socket spraying datagrams at many
//! peers (each reported once); DNS-like traffic to port 53. Every event field by
//! field, and each socket's close (the kernel's in modes fentry and kprobe,
//! inferred from the kernel's socket list in mode tracepoint).
use std::{
    net::{IpAddr, Ipv4Addr, SocketAddr},
    time::Duration,
};

use anyhow::{bail, Result};
use serde_json::Value;

use super::HOLD_MS;
use crate::{
    expect::{self, Expected},
    harness::{
        helpers::{End, Hold},
        launch::Launch,
        tracer::Tracer,
        udp_helpers::{udp_client, udp_spray, UdpServer, Way},
    },
};

/// How long closes may take: in mode tracepoint portwatch infers them at its
/// second look at the kernel's sockets that misses them (looks are 5 s apart).
const CLOSES_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(20);

/// Ports the UDP servers try, outside the ephemeral range, one list per scenario
/// (a scenario's ports must not be an earlier one's).
pub const SERVER_PORTS_V4: &str = "24810,24811,24812,24813,0";
pub const SERVER_PORTS_V6: &str = "24820,24821,24822,24823,0";

/// A server on `addr` and a client per way of sending, each its own process.
pub fn server_and_clients(tracer: &Tracer, addr: IpAddr, ports: &str) -> Result<Vec<String>> {
    let since = tracer.events().len();
    let ways = [Way::Connected, Way::SendTo, Way::SendMsg];
    let mut server = UdpServer::spawn(
        addr,
        ports,
        "pw-udp-server",
        "pw-udp-worker",
        ways.len(),
        Hold::Ms(HOLD_MS),
    )?;
    let target = SocketAddr::new(addr, server.listener.port);
    let mut clients = Vec::new();
    for (i, how) in ways.iter().enumerate() {
        clients.push((
            udp_client(target, &format!("pw-udp-cl-{i}"), *how, Hold::Ms(HOLD_MS))?,
            *how,
        ));
    }
    let mut answered = Vec::new();
    for _ in &ways {
        answered.push(server.answered()?);
    }
    let listener = server.listener.clone();
    server.finish()?;
    let worker = answered[0].0.clone();
    if worker.pid == listener.proc.pid {
        bail!("the worker is not a separate process");
    }
    let mut expected = vec![
        expect::udp_listen(&listener),
        expect::udp_close(&listener, "listener", 0),
    ];
    for (client, how) in &clients {
        if !answered.iter().any(|(_, port)| *port == client.port) {
            bail!("the worker never answered client port {}", client.port);
        }
        let connected = *how == Way::Connected;
        let server_end = End {
            proc: worker.clone(),
            ..listener.clone()
        };
        expected.extend([
            expect::udp_connect(client, &listener, connected),
            expect::udp_reply(
                &server_end,
                client,
                if connected { client.addr } else { addr },
            ),
            expect::udp_close(client, "client", if connected { listener.port } else { 0 }),
        ]);
    }
    let mut failures = expect::check_within(tracer, &expected, CLOSES_TIMEOUT);
    let mut pids = vec![listener.proc.pid, worker.pid];
    pids.extend(clients.iter().map(|(c, _)| c.proc.pid));
    let events = tracer.events();
    failures.extend(only_these_pids(
        events.get(since..).unwrap_or_default(),
        listener.port,
        &pids,
    ));
    Ok(failures)
}

/// Every UDP event on `port` names one of `pids`.
fn only_these_pids(events: &[Value], port: u16, pids: &[u32]) -> Vec<String> {
    events
        .iter()
        .filter(|e| e["proto"] == "udp")
        .filter(|e| expect::port(e, "local") == port || expect::port(e, "remote") == port)
        .filter(|e| {
            !e["pid"]
                .as_u64()
                .is_some_and(|p| pids.contains(&(p as u32)))
        })
        .map(|e| format!("a UDP event on port {port} names a process of neither side: {e}"))
        .collect()
}

/// One socket sends 3 rounds to 20 peers (sendto, then sendmmsg): exactly 20 flow
/// events, one per peer, all its own; then its close.
pub fn spray(tracer: &Tracer) -> Result<Vec<String>> {
    const PEERS: u16 = 20;
    const BASE: u16 = 24900;
    let sprayer = udp_spray(Ipv4Addr::LOCALHOST.into(), "pw-udp-spray", BASE, PEERS, 3)?;
    let mut expected = Vec::new();
    for i in 0..PEERS {
        let peer = End {
            proc: sprayer.proc.clone(),
            addr: Ipv4Addr::LOCALHOST.into(),
            port: BASE + i,
        };
        expected.push(expect::udp_connect(&sprayer, &peer, false));
    }
    expected.push(expect::udp_close(&sprayer, "client", 0));
    let mut failures = expect::check_within(tracer, &expected, CLOSES_TIMEOUT);
    let flows: Vec<Value> = tracer
        .events()
        .into_iter()
        .filter(|e| e["proto"] == "udp" && e["event"] == "connect")
        .filter(|e| expect::port(e, "local") == sprayer.port)
        .filter(|e| e["pid"] == sprayer.proc.pid)
        .collect();
    if flows.len() != PEERS as usize {
        failures.push(format!(
            "{} flow events from the spraying socket, expected {PEERS} (one per peer)",
            flows.len()
        ));
    }
    Ok(failures)
}

/// A DNS-like exchange on 127.0.0.2:53: the port is `domain`, well-known.
pub fn dns(tracer: &Tracer) -> Result<Vec<String>> {
    let addr: IpAddr = Ipv4Addr::new(127, 0, 0, 2).into();
    let mut server = UdpServer::spawn(addr, "53", "pw-dns", "pw-dns-worker", 1, Hold::Ms(0))?;
    if server.listener.port != 53 {
        bail!("127.0.0.2:53 is taken");
    }
    let target = SocketAddr::new(addr, server.listener.port);
    // Connected, as the C library's resolver does.
    let client = udp_client(target, "pw-dig", Way::Connected, Hold::Ms(0))?;
    let (worker, _) = server.answered()?;
    let listener = server.listener.clone();
    server.finish()?;
    let server_end = End {
        proc: worker,
        ..listener.clone()
    };
    // Port 53 over UDP is IANA's `domain`.
    let domain = |mut x: Expected, side: &str| {
        x.fields[side]["service"] = "domain".into();
        x
    };
    let expected: Vec<Expected> = vec![
        domain(expect::udp_listen(&listener), "local"),
        domain(expect::udp_connect(&client, &listener, true), "remote"),
        domain(
            expect::udp_reply(&server_end, &client, client.addr),
            "local",
        ),
    ];
    Ok(expect::check_within(tracer, &expected, CLOSES_TIMEOUT))
}

/// A UDP server bound before portwatch started: the start-up snapshot lists it
/// (a listener, with its owner), and its worker's answers are server replies,
/// though the kernel side never saw the socket bound.
pub fn bound_before_tracing(portwatch: &str, mode: &str) -> Result<Vec<String>> {
    let addr: IpAddr = Ipv4Addr::LOCALHOST.into();
    let mut server = UdpServer::spawn(
        addr,
        "24830,24831,24832,24833,0",
        "pw-udp-early",
        "pw-udp-early-w",
        1,
        Hold::Ms(HOLD_MS),
    )?;
    let listener = server.listener.clone();
    let port = listener.port.to_string();
    let tracer = Tracer::start(Launch::trace(portwatch, mode).args(["--port", &port]))?;
    let client = udp_client(
        SocketAddr::new(addr, listener.port),
        "pw-udp-late",
        Way::SendTo,
        Hold::Ms(0),
    )?;
    let (worker, _) = server.answered()?;
    server.finish()?;
    let server_end = End {
        proc: worker,
        ..listener.clone()
    };
    // Bound before tracing: listed, owner read from /proc (the process's own
    // thread id is its pid), exact as the only holder until the worker forked:
    // both hold it now, so the lowest pid is named, inexactly.
    let mut snapshot = expect::udp_listen(&listener)
        .named("the early server, from the snapshot")
        .with(serde_json::json!({"event": "snapshot", "pid_exact": false}));
    snapshot.event = "snapshot";
    let expected = vec![
        snapshot,
        expect::udp_connect(&client, &listener, false),
        expect::udp_reply(&server_end, &client, addr),
    ];
    let mut failures = expect::check(&tracer, &expected);
    failures.extend(super::stop(tracer)?);
    Ok(failures)
}

/// `--proto` filters in the kernel: with `--proto tcp` no UDP program is
/// attached and no UDP event comes, with `--proto udp` only UDP's programs and
/// events. Each run sees a UDP exchange and a TCP connection.
pub fn proto_filter(portwatch: &str, mode: &str) -> Result<Vec<String>> {
    let mut failures = Vec::new();
    for (proto, other) in [("tcp", "udp"), ("udp", "tcp")] {
        let tracer = Tracer::start(Launch::trace(portwatch, mode).args(["--proto", proto]))?;
        let hooks = tracer.attached().hooks.clone();
        let udp_hook = |h: &String| super::accept_hook::udp_hooks(mode).contains(&h.as_str());
        let wrong: Vec<&String> = hooks
            .iter()
            .filter(|h| udp_hook(h) != (proto == "udp"))
            .collect();
        if !wrong.is_empty() || hooks.is_empty() {
            failures.push(format!(
                "--proto {proto}: hooks of the other protocol attached: {wrong:?} (all: {hooks:?})"
            ));
        }
        let mut server = UdpServer::spawn(
            Ipv4Addr::LOCALHOST.into(),
            "24880,24881,24882,24883,0",
            "pw-proto-srv",
            "pw-proto-w",
            1,
            Hold::Ms(0),
        )?;
        let target = SocketAddr::new(Ipv4Addr::LOCALHOST.into(), server.listener.port);
        let udp_client_end = udp_client(target, "pw-proto-cl", Way::SendTo, Hold::Ms(0))?;
        server.answered()?;
        server.finish()?;
        let tcp = crate::scenarios::connections::run_helpers(
            Ipv4Addr::LOCALHOST.into(),
            "0",
            Ipv4Addr::LOCALHOST.into(),
            1,
        )?;
        let mine = |e: &Value| {
            let pid = e["pid"].as_u64().unwrap_or(0) as u32;
            pid == udp_client_end.proc.pid || pid == tcp.clients[0].proc.pid
        };
        let events = tracer.wait_for(Duration::from_secs(3), |_| false);
        let seen = |p: &str| events.iter().filter(|e| mine(e) && e["proto"] == p).count();
        if seen(proto) == 0 {
            failures.push(format!(
                "--proto {proto}: none of the test's {proto} events"
            ));
        }
        if seen(other) != 0 {
            failures.push(format!(
                "--proto {proto}: {} {other} events of the test's processes",
                seen(other)
            ));
        }
        failures.extend(super::stop(tracer)?);
    }
    Ok(failures)
}
