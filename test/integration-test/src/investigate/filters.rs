//! Filters, proven by what is absent as well as what is present, and by
//! portwatch's own count of what the kernel delivered: kernel filters (`--port`,
//! `-6`, `--pid`) stop events before the ring buffer, userspace filters (`--comm`,
//! `--role`) after it.
use std::{net::SocketAddr, thread, time::Duration};

use anyhow::Result;
use serde_json::Value;

use super::{one_client, traffic};
use crate::{
    expect::{find, port},
    harness::{
        helpers::{Client, Hold, Server, ServerSpec, LOOPBACK, LOOPBACK6},
        launch::Launch,
        stderr::Closing,
        tracer::Tracer,
    },
    sock,
};

/// How long the tracer may take to show what the filters let through.
const TIMEOUT: Duration = Duration::from_secs(10);
/// After the last expected event: time for any unexpected one to show up.
const SETTLE: Duration = Duration::from_millis(300);

/// The expected `(event, local port, remote port)` that are missing.
fn missing(events: &[Value], wanted: &[(&str, u16, u16)], filter: &str) -> Vec<String> {
    wanted
        .iter()
        .filter(|(kind, l, r)| find(events, kind, *l, *r).is_empty())
        .map(|(kind, l, r)| format!("{filter}: expected `{kind}` {l} -> {r} is missing"))
        .collect()
}

/// Stop the tracer; with a kernel filter, everything the kernel delivered was
/// printed, everything printed was seen (`seen` before the stop; the closes
/// inferred at the exit come after), and an inferred close is of a socket whose
/// close the kernel did not report.
fn all_received_printed(tracer: Tracer, seen: usize, filter: &str) -> Result<Vec<String>> {
    let (stopped, events) = tracer.stop_with_events()?;
    let Closing {
        events: printed,
        received,
        inferred,
        ..
    } = stopped.stderr.closing()?;
    let shown: Vec<&Value> = events.iter().filter(|e| e["inferred"] == true).collect();
    // `lost` records (the kernel skipped a program run: an emulated guest does)
    // are reports, not events.
    let reports = events.iter().filter(|e| e["event"] == "lost").count() as u64;
    let late = (events.len() - seen) as u64;
    if printed + reports != events.len() as u64
        || received + inferred != printed
        || late > inferred + reports
    {
        return Ok(vec![format!(
            "{filter}: {received} events received from the kernel, {inferred} closes inferred, {printed} printed, {seen} seen before the exit, {} in all: filtered events crossed the ring buffer",
            events.len()
        )]);
    }
    let twice: Vec<String> = shown
        .iter()
        .filter(|i| {
            let ends = |e: &Value| (port(e, "local"), port(e, "remote"), e["role"].clone());
            events
                .iter()
                .filter(|e| e["event"] == "close" && ends(e) == ends(i))
                .count()
                > 1
        })
        .map(|e| e.to_string())
        .collect();
    if !twice.is_empty() {
        return Ok(vec![format!(
            "{filter}: closes inferred for sockets whose close the kernel reported: {twice:?}"
        )]);
    }
    Ok(vec![])
}

/// `--port P1 --port P2 -6` and `--pid X`.
pub fn kernel_filters(portwatch: &str, mode: &str) -> Result<Vec<String>> {
    let mut failures = port_and_family_filters(portwatch, mode)?;
    failures.extend(pid_filter(portwatch, mode)?);
    Ok(failures)
}

/// `--port P1 --port P2 -6`: IPv6 traffic on P1 is shown; IPv4 traffic on P2
/// (wrong family) and IPv6 traffic on P3 (wrong port) are not, and were never
/// received.
fn port_and_family_filters(portwatch: &str, mode: &str) -> Result<Vec<String>> {
    let (p1, p2) = (sock::unused_port(LOOPBACK6)?, sock::unused_port(LOOPBACK)?);
    let launch = Launch::trace(portwatch, mode)
        .args(["--no-snapshot", "-6"])
        .args(["--port", &p1.to_string(), "--port", &p2.to_string()]);
    let tracer = Tracer::start(launch)?;
    let (_, kept) = one_client(LOOPBACK6, p1, "pw-kept")?;
    let (_, wrong_family) = one_client(LOOPBACK, p2, "pw-v4")?;
    let (wrong_port, wrong_port_clients) = traffic(LOOPBACK6, 0, &["pw-other-port"])?;
    let wanted = [
        ("listen", p1, 0),
        ("connect", kept.port, p1),
        ("accept", p1, kept.port),
    ];
    tracer.wait_for(TIMEOUT, |ev| {
        missing(ev, &wanted, "").is_empty() && find(ev, "close", p1, 0).len() == 1
    });
    thread::sleep(SETTLE);
    let events = tracer.events();
    let mut failures = missing(&events, &wanted, "--port/-6");
    for e in &events {
        let ports = [port(e, "local"), port(e, "remote")];
        if ports.contains(&p2) || ports.contains(&wrong_family.port) {
            failures.push(format!("-6 let an IPv4 event through: {e}"));
        }
        if ports.contains(&wrong_port.port) || ports.contains(&wrong_port_clients[0].port) {
            failures.push(format!("--port let another port through: {e}"));
        }
        if e["family"] != "ipv6" {
            failures.push(format!("-6 let a non-IPv6 event through: {e}"));
        }
    }
    failures.extend(all_received_printed(
        tracer,
        events.len(),
        "kernel filters",
    )?);
    Ok(failures)
}

/// `--pid X`: only the events of client X, a client that waits for the tracer
/// before connecting; another client of the same server is not shown.
fn pid_filter(portwatch: &str, mode: &str) -> Result<Vec<String>> {
    let server_port = sock::unused_port(LOOPBACK)?;
    let port_arg = server_port.to_string();
    let server = Server::spawn(&ServerSpec {
        ports: &port_arg,
        connections: 2,
        ..ServerSpec::new(LOOPBACK)
    })?;
    let target = SocketAddr::new(LOOPBACK, server_port);
    let (mut chosen, chosen_pid) = Client::spawn_waiting(target, "pw-chosen", Hold::Ms(50))?;
    let launch =
        Launch::trace(portwatch, mode).args(["--no-snapshot", "--pid", &chosen_pid.to_string()]);
    let tracer = Tracer::start(launch)?;
    chosen.go()?;
    let chosen_port = chosen.connected()?.port;
    chosen.finish()?;
    let mut other = Client::spawn(target, "pw-unchosen", Hold::Ms(50))?;
    other.connected()?;
    other.finish()?;
    server.finish()?;
    tracer.wait_for(TIMEOUT, |ev| {
        !find(ev, "close", chosen_port, server_port).is_empty()
    });
    thread::sleep(SETTLE);
    let events = tracer.events();
    let wanted = [
        ("connect", chosen_port, server_port),
        ("close", chosen_port, server_port),
    ];
    let mut failures = missing(&events, &wanted, "--pid");
    for e in events.iter().filter(|e| e["pid"] != chosen_pid) {
        failures.push(format!(
            "--pid {chosen_pid} let another process through: {e}"
        ));
    }
    failures.extend(all_received_printed(tracer, events.len(), "--pid")?);
    Ok(failures)
}

/// `--comm pw-keep --role client`: only the client pw-keep's events, though the
/// kernel delivered the others (these filters run in userspace).
pub fn userspace_filters(portwatch: &str, mode: &str) -> Result<Vec<String>> {
    let launch = Launch::trace(portwatch, mode).args([
        "--no-snapshot",
        "--comm",
        "pw-keep",
        "--role",
        "client",
    ]);
    let tracer = Tracer::start(launch)?;
    let (listener, clients) = traffic(LOOPBACK, 0, &["pw-keep", "pw-drop"])?;
    let (port, keep) = (listener.port, &clients[0]);
    tracer.wait_for(TIMEOUT, |ev| !find(ev, "close", keep.port, port).is_empty());
    thread::sleep(SETTLE);
    let events = tracer.events();
    let wanted = [("connect", keep.port, port), ("close", keep.port, port)];
    let mut failures = missing(&events, &wanted, "pw-keep");
    for e in &events {
        if e["comm"] != "pw-keep" || e["role"] != "client" || e["pid"] != keep.proc.pid {
            failures.push(format!("--comm/--role let this through: {e}"));
        }
    }
    let closing = tracer.stop()?.stderr.closing()?;
    if closing.received <= closing.events {
        failures.push(format!(
            "userspace filters: {} received, {} printed; the dropped events should have been received",
            closing.received, closing.events
        ));
    }
    Ok(failures)
}
