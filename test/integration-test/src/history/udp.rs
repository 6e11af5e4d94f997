//! UDP in the history: a recording while a bound server's forked worker answers
//! a sendto client and a connected one; then who had the port at an instant in
//! the middle (`--proto udp`), field by field, that TCP has nothing there, and
//! that nothing is open after every socket closed (in mode tracepoint, closes
//! portwatch inferred).
use std::{
    net::{IpAddr, Ipv4Addr, SocketAddr},
    path::Path,
    thread,
    time::Duration,
};

use anyhow::Result;
use serde_json::Value;

use super::{fresh_db, now, query, record, stop, COMMITTED};
use crate::{
    expect,
    harness::{
        helpers::{End, Hold},
        udp_helpers::{udp_client, UdpServer, Way},
    },
};

/// Long enough for closes inferred at the second look (5 s apart) to be written.
const INFERRED: Duration = Duration::from_secs(12);

pub fn udp_rows(portwatch: &str, mode: &str) -> Result<Vec<String>> {
    let db = fresh_db("udp")?;
    let addr: IpAddr = Ipv4Addr::LOCALHOST.into();
    let recording = record(portwatch, mode, &db, &[])?;
    thread::sleep(Duration::from_millis(300));
    let mut server = UdpServer::spawn(
        addr,
        "24850,24851,24852,24853,0",
        "pw-hudp",
        "pw-hudp-w",
        2,
        // Well past the clients' own holds: `during` falls in its life.
        Hold::Ms(4000),
    )?;
    let listener = server.listener.clone();
    let target = SocketAddr::new(addr, listener.port);
    let hold = Hold::Ms(300);
    let one = udp_client(target, "pw-hudp-1", Way::SendTo, hold)?;
    let two = udp_client(target, "pw-hudp-2", Way::Connected, hold)?;
    let (worker, _) = server.answered()?;
    server.answered()?;
    // The clients have closed theirs; the server holds its socket a while more.
    let during = now();
    server.finish()?;
    thread::sleep(if mode == "tracepoint" {
        INFERRED
    } else {
        COMMITTED
    });
    let after = now();
    let mut failures = stop(recording)?;
    let port = listener.port.to_string();
    let server_end = End {
        proc: worker,
        ..listener.clone()
    };
    // Rows keep what opened them; the history does not keep whether a client
    // socket was connected, so no state is compared.
    let without_state = |mut x: expect::Expected| {
        if let Some(f) = x.fields.as_object_mut() {
            f.remove("state");
            f.remove("tid");
        }
        x
    };
    let at = query(
        portwatch,
        &db,
        &["--at", &during, "--local-port", &port, "--proto", "udp"],
    )?;
    let expected: Vec<expect::Expected> = [
        expect::udp_listen(&listener),
        expect::udp_reply(&server_end, &one, addr),
        expect::udp_reply(&server_end, &two, two.addr),
    ]
    .into_iter()
    .map(without_state)
    .collect();
    failures.extend(expect::compare(&at, &expected));
    if at.len() != expected.len() {
        failures.push(format!(
            "at {during}: {} UDP rows of local port {port}, expected {} (the listener and its two flows): {at:?}",
            at.len(),
            expected.len()
        ));
    }
    failures.extend(clients(portwatch, &db, &one, &two, &listener)?);
    let tcp = query(
        portwatch,
        &db,
        &["--at", &during, "--port", &port, "--proto", "tcp"],
    )?;
    if !tcp.is_empty() {
        failures.push(format!("--proto tcp on port {port}: {tcp:?}"));
    }
    let open_after = query(portwatch, &db, &["--at", &after, "--port", &port])?;
    if !open_after.is_empty() {
        failures.push(format!(
            "at {after}, after every socket closed, still open: {open_after:?}"
        ));
    }
    Ok(failures)
}

/// Each client's flow row, by its own port: its process, the server's port.
fn clients(
    portwatch: &str,
    db: &Path,
    one: &End,
    two: &End,
    listener: &End,
) -> Result<Vec<String>> {
    let mut failures = Vec::new();
    for (client, connected) in [(one, false), (two, true)] {
        let rows: Vec<Value> = query(
            portwatch,
            db,
            &["--proto", "udp", "--port", &client.port.to_string()],
        )?;
        let mut x = expect::udp_connect(client, listener, connected);
        if let Some(f) = x.fields.as_object_mut() {
            f.remove("state");
            f.remove("tid");
        }
        failures.extend(expect::compare(&rows, &[x]));
        if rows.iter().any(|r| r["closed"].is_null()) {
            failures.push(format!(
                "{}'s flow has no close in the history: {rows:?}",
                client.proc.comm
            ));
        }
    }
    Ok(failures)
}
