//! SIGHUP, as a service manager sends it (`systemctl reload`): the baseline file
//! is read again and checked at once against the listeners that exist; a file
//! that cannot be read is said and the one in use kept; tracing goes on. The
//! drift also reaches the OTLP receiver as a WARN log record.
use std::{thread, time::Duration};

use anyhow::Result;
use nix::{sys::signal::Signal, unistd::Pid};
use serde_json::Value;

use crate::{
    checks::Checks,
    harness::{
        helpers::{Client, Hold, Server, ServerSpec, LOOPBACK},
        launch::Launch,
        scratch::fresh_dir,
        tracer::Tracer,
    },
    otlp::{records, Receiver},
    sock,
};

pub fn record_all(checks: &mut Checks, portwatch: &str, mode: &str) {
    checks.run(
        &format!("[{mode}] service: SIGHUP reloads the baseline: a listener it no longer expects is one drift at once (also an OTLP WARN record); an unreadable file is said and the old one kept; tracing goes on"),
        || reload(portwatch, mode),
    );
}

fn baseline(exe: &str, port: u16) -> String {
    format!(
        "version = 1\n\n[[listener]]\nexe = {exe:?}\nfamily = \"ipv4\"\nbind = \"loopback\"\nport = {port}\n"
    )
}

fn drifts(events: &[Value]) -> Vec<&Value> {
    events.iter().filter(|e| e["event"] == "drift").collect()
}

fn hup(tracer: &Tracer) -> Result<()> {
    nix::sys::signal::kill(Pid::from_raw(tracer.pid() as i32), Signal::SIGHUP)?;
    Ok(())
}

fn reload(portwatch: &str, mode: &str) -> Result<Vec<String>> {
    let dir = fresh_dir("reload")?;
    let out = dir.join("records.jsonl");
    let receiver = Receiver::start(&out, 0)?;
    let me = std::env::current_exe()?.to_string_lossy().into_owned();
    let mut server = Server::spawn(&ServerSpec {
        hold: Hold::Ms(50),
        ..ServerSpec::new(LOOPBACK)
    })?;
    let port = server.listener.port;
    let file = dir.join("baseline.toml");
    std::fs::write(&file, baseline(&me, port))?;
    let tracer = Tracer::start(
        Launch::trace(portwatch, mode)
            .arg("--baseline")
            .arg(&file)
            .args(["--port", &port.to_string()])
            .args(["--otlp-endpoint", &receiver.url()]),
    )?;
    let mut failures = Vec::new();
    thread::sleep(Duration::from_millis(500));
    if !drifts(&tracer.events()).is_empty() {
        failures.push(format!(
            "drift before the reload, the listener was expected: {:?}",
            drifts(&tracer.events())
        ));
    }
    // The listener's port is no longer expected: another one is.
    let other = sock::unused_port(LOOPBACK)?;
    std::fs::write(&file, baseline(&me, other))?;
    hup(&tracer)?;
    let events = tracer.wait_for(Duration::from_secs(10), |e| !drifts(e).is_empty());
    match drifts(&events).as_slice() {
        [d] if d["drift"]["kind"] == "unexpected-listener"
            && d["drift"]["port"] == port
            && d["trigger"]["pid"] == server.listener.proc.pid => {}
        other => failures.push(format!(
            "after SIGHUP, expected one unexpected-listener drift for port {port} (pid {}), got {other:?}",
            server.listener.proc.pid
        )),
    }
    // An unreadable file: said, the one in use kept, tracing goes on.
    std::fs::write(&file, "version = 1\n[[listener]]\nport = \"many\"\n")?;
    hup(&tracer)?;
    thread::sleep(Duration::from_millis(500));
    let mut client = Client::spawn(server.listener.socket_addr(), "pw-after-hup", Hold::Ms(50))?;
    let end = client.connected()?;
    server.accepted()?;
    let events = tracer.wait_for(Duration::from_secs(10), |e| {
        e.iter()
            .any(|x| x["event"] == "connect" && x["local"]["port"] == end.port)
    });
    if !events
        .iter()
        .any(|x| x["event"] == "connect" && x["local"]["port"] == end.port)
    {
        failures.push("no connect traced after the second SIGHUP".into());
    }
    client.finish()?;
    server.finish()?;
    let stopped = tracer.stop()?;
    if !stopped.status.success() {
        failures.push(format!("exit {} after SIGINT", stopped.status));
    }
    if !stopped.stderr.mentions("baseline") || !stopped.stderr.mentions("reloaded") {
        failures.push(format!(
            "stderr never said the baseline was reloaded: {}",
            stopped.stderr
        ));
    }
    let warned = stopped.stderr.lines().iter().any(|l| {
        l.starts_with("portwatch: warning: SIGHUP: baseline not reloaded") && l.contains("line")
    });
    if !warned || stopped.stderr.panicked() {
        failures.push(format!(
            "stderr did not say the unreadable baseline was not reloaded (with its line): {}",
            stopped.stderr
        ));
    }
    receiver.stop()?;
    let exported: Vec<Value> = records(&out)?
        .into_iter()
        .filter(|r| r["event_name"] == "portwatch.drift")
        .collect();
    match exported.as_slice() {
        [r] if r["severity_text"] == "WARN"
            && r["attributes"]["portwatch.drift.kind"] == "unexpected-listener"
            && r["attributes"]["portwatch.drift.port"] == port
            && r["attributes"]["process.pid"] == server_pid_json(&events, port) => {}
        other => failures.push(format!(
            "OTLP drift records: expected one for port {port}, got {other:?}"
        )),
    }
    let _ = std::fs::remove_dir_all(&dir);
    Ok(failures)
}

/// The pid the JSON drift named, for comparing the exported one.
fn server_pid_json(events: &[Value], port: u16) -> Value {
    drifts(events)
        .iter()
        .find(|d| d["drift"]["port"] == port)
        .map(|d| d["trigger"]["pid"].clone())
        .unwrap_or(Value::Null)
}
