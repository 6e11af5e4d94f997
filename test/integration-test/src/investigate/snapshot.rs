//! A listener and a connection that exist before portwatch starts: `portwatch
//! snapshot` lists them with their processes, and live mode prints them first.
use std::{net::SocketAddr, time::Duration};

use anyhow::{Context, Result};
use serde_json::{json, Value};

use crate::{
    expect::{self, Expected},
    harness::{
        helpers::{Client, End, Hold, Server, ServerSpec, LOOPBACK},
        launch::Launch,
        tracer::Tracer,
    },
};

/// The sockets made before portwatch looks, held until the helpers are killed.
struct Early {
    server: Server,
    client: Client,
    listener: End,
    /// Both ends of the connection.
    server_end: End,
    client_end: End,
}

impl Early {
    fn start() -> Result<Early> {
        let mut server = Server::spawn(&ServerSpec {
            listener: "pw-early-srv",
            acceptor: "pw-early-acc",
            hold: Hold::UntilKilled,
            ..ServerSpec::new(LOOPBACK)
        })?;
        let listener = server.listener.clone();
        let mut client = Client::spawn(listener.socket_addr(), "pw-early-cli", Hold::UntilKilled)?;
        let client_end = client.connected()?;
        let (acceptor, _) = server.accepted()?;
        Ok(Early {
            server,
            client,
            server_end: listener.held_by(&acceptor),
            listener,
            client_end,
        })
    }

    fn kill(self) {
        self.client.kill();
        self.server.kill();
    }

    /// What `portwatch snapshot` must list: the listening socket (shared by the
    /// listener and its forked acceptor: the lowest pid is named, marked inexact)
    /// and both ends of the connection.
    fn expected(&self) -> Result<Vec<Expected>> {
        let exe = std::env::current_exe()?;
        Ok(vec![
            snapshot_of("the listener", &self.listener, 0, "listener", "LISTEN").inferred(),
            snapshot_of(
                "the server side",
                &self.server_end,
                self.client_end.port,
                "server",
                "ESTABLISHED",
            ),
            snapshot_of(
                "the client side",
                &self.client_end,
                self.server_end.port,
                "client",
                "ESTABLISHED",
            )
            .with(json!({"exe": exe.to_string_lossy()})),
        ])
    }
}

/// A socket `local` (to `remote_port`) in the snapshot, with its owner.
fn snapshot_of(what: &str, local: &End, remote_port: u16, role: &str, state: &str) -> Expected {
    let owner = &local.proc;
    Expected::new(
        format!("snapshot of {what}"),
        "snapshot",
        local.port,
        remote_port,
        json!({"role": role, "state": state, "attach": null,
               "pid": owner.pid, "uid": owner.uid, "comm": owner.comm, "pid_exact": true,
               "local": {"addr": local.addr.to_string(), "port": local.port}}),
    )
}

pub fn snapshot(portwatch: &str, mode: &str) -> Result<Vec<String>> {
    let early = Early::start()?;
    let result = snapshot_lists(portwatch, &early).and_then(|mut failures| {
        failures.extend(live_mode_starts_with(
            portwatch,
            mode,
            early.listener.socket_addr(),
        )?);
        Ok(failures)
    });
    early.kill();
    result
}

/// `portwatch snapshot --port P` lists exactly the three sockets.
fn snapshot_lists(portwatch: &str, early: &Early) -> Result<Vec<String>> {
    let port = early.listener.port.to_string();
    let out = Launch::new(portwatch)
        .args(["snapshot", "--format", "json", "--port", &port])
        .run()?;
    let mut failures = Vec::new();
    if !out.status.success() {
        failures.push(format!("portwatch snapshot failed: {}", out.stderr));
    }
    let events: Vec<Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(serde_json::from_str)
        .collect::<Result<_, _>>()
        .context("snapshot JSON")?;
    failures.extend(expect::compare(&events, &early.expected()?));
    if events.len() != 3 {
        failures.push(format!(
            "--port {port}: {} snapshot events, expected 3",
            events.len()
        ));
    }
    Ok(failures)
}

/// Live mode prints them first, marked snapshot, with the attach mode.
fn live_mode_starts_with(portwatch: &str, mode: &str, listener: SocketAddr) -> Result<Vec<String>> {
    let launch = Launch::trace(portwatch, mode).args(["--port", &listener.port().to_string()]);
    let tracer = Tracer::start(launch)?;
    let live = tracer.wait_for(Duration::from_secs(20), |ev| ev.len() >= 3);
    let stderr = tracer.stop()?.stderr;
    let first_three = &live[..live.len().min(3)];
    if first_three.len() != 3
        || first_three
            .iter()
            .any(|e| e["event"] != "snapshot" || e["attach"] != mode)
    {
        return Ok(vec![format!(
            "live mode did not start with the 3 snapshot events: {live:?}; portwatch said: {stderr}"
        )]);
    }
    Ok(vec![])
}
