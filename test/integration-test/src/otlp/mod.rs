//! OTLP export against a real OTLP/HTTP receiver (`test/otlp-receiver`, decoding
//! with OpenTelemetry's own protobuf definitions): every event of a ground-truth
//! scenario arrives as a log record whose attributes, read back into portwatch's
//! JSON shape, match what the processes themselves know; and a receiver stopped
//! during a burst and started again gets what was spooled, with every record
//! either delivered once or counted dropped.
mod outage;
mod receiver;

use std::{collections::BTreeSet, net::SocketAddr};

use anyhow::{Context, Result};
use serde_json::{json, Value};

use receiver::{delivery_line, seq};
pub use receiver::{records, Receiver};

use crate::{
    checks::Checks,
    expect::{self, Expected},
    harness::{
        helpers::{failing_connect, LOOPBACK},
        launch::Launch,
        scratch::fresh_dir,
        tracer::Tracer,
    },
    scenarios::connections,
    sock,
};

pub fn record_all(checks: &mut Checks, portwatch: &str, mode: &str) {
    checks.run(
        &format!("[{mode}] otlp: a listener, its forked acceptor, 3 clients and a refused connect arrive at a real OTLP receiver, each event one log record with the right attributes, numbered 1..N; resource and headers from OTEL_*; bad settings refused"),
        || ground_truth(portwatch, mode),
    );
    checks.run(
        &format!("[{mode}] otlp: receiver stopped during a burst and restarted: what was spooled is delivered, every record delivered once or counted dropped, the gaps exactly the drops"),
        || outage::outage(portwatch, mode),
    );
}

/// The conventions' ends the local and remote ones are, by role: a listener
/// and a server are the server end, a client the client end; None for another
/// role.
fn ends(role: &Value) -> Option<(&'static str, Option<&'static str>)> {
    match role.as_str()? {
        "listener" => Some(("server", None)),
        "server" => Some(("server", Some("client"))),
        "client" => Some(("client", Some("server"))),
        _ => None,
    }
}

/// A record's attributes read back into the fields of portwatch's JSON event,
/// so that the suite's ground-truth expectations apply to it unchanged: the local
/// and remote ends from `server.*` and `client.*` by role.
fn as_event(record: &Value) -> Value {
    let a = &record["attributes"];
    let end = |prefix: &str, side: &str| {
        let mut e = json!({
            "addr": a[format!("{prefix}.address")], "port": a[format!("{prefix}.port")],
            "class": a[format!("portwatch.{side}.port_class")],
            "ephemeral": a[format!("portwatch.{side}.ephemeral")],
        });
        if let Some(service) = a.get(format!("portwatch.{side}.service")) {
            e["service"] = service.clone();
        }
        e
    };
    let mut e = json!({
        "event": a["portwatch.event"], "role": a["portwatch.role"],
        "proto": a["network.transport"], "family": a["network.type"],
        "pid": a["process.pid"], "tid": a["thread.id"], "uid": a["process.user.id"],
        "comm": a["thread.name"], "pid_exact": a["portwatch.pid_exact"],
        "state": a["portwatch.tcp.state"], "old_state": a["portwatch.tcp.old_state"],
        "sock_id": a["portwatch.sock_id"],
        "attach": record["resource"]["portwatch.attach_mode"],
        "ppid": a["process.parent_pid"], "exe": a["process.executable.path"],
        "cmdline": a["process.command_args"], "duration_ms": a["portwatch.duration_ms"],
    });
    let (local, remote) = ends(&a["portwatch.role"]).unwrap_or(("?", None));
    e["local"] = end(local, "local");
    e["remote"] = match remote {
        Some(r) => end(r, "remote"),
        None => json!({"port": 0}),
    };
    if let Some(reason) = a.get("error.type") {
        e["error"] = json!({"errno": a["portwatch.errno"], "reason": reason});
    }
    e
}

/// A listener's record has no client end, and no remote classification.
fn roles_consistent(record: &Value) -> Option<String> {
    let a = &record["attributes"];
    match ends(&a["portwatch.role"]) {
        None => Some(format!("role {}", a["portwatch.role"])),
        Some((_, None))
            if a.get("client.port").is_some() || a.get("portwatch.remote.port_class").is_some() =>
        {
            Some(format!(
                "a listener's record with a client or remote end: {a}"
            ))
        }
        _ => None,
    }
}

/// What every record of the run must carry: the resource, the scope, the headers.
fn envelope(record: &Value, instance: &Value, window: (u128, u128)) -> Vec<String> {
    let r = &record["resource"];
    let uts = nix::sys::utsname::uname().ok();
    let host = uts
        .as_ref()
        .map(|u| u.nodename().to_string_lossy().into_owned());
    let release = uts
        .as_ref()
        .map(|u| u.release().to_string_lossy().into_owned());
    let want = [
        ("service.name", json!("portwatch")),
        ("host.name", json!(host)),
        ("os.type", json!("linux")),
        ("os.version", json!(release)),
        ("deployment.environment.name", json!("ci")),
        ("service.instance.id", instance.clone()),
    ];
    let mut failures: Vec<String> = want
        .iter()
        .filter(|(k, v)| &r[*k] != v)
        .map(|(k, v)| format!("resource {k}: expected {v}, got {}", r[*k]))
        .collect();
    if record["scope"] != "portwatch" {
        failures.push(format!("scope {}", record["scope"]));
    }
    if record["headers"]["x-portwatch-test"] != "fleet one" {
        failures.push(format!("headers {}", record["headers"]));
    }
    let event = &record["attributes"]["portwatch.event"];
    if record["event_name"] != json!(format!("portwatch.{}", event.as_str().unwrap_or("?"))) {
        failures.push(format!(
            "event_name {} for event {event}",
            record["event_name"]
        ));
    }
    if record["severity_text"] != "INFO" || record["severity_number"] != 9 {
        failures.push(format!("severity {}", record["severity_text"]));
    }
    if !record["body"]
        .as_str()
        .is_some_and(|b| b.contains("local machine"))
    {
        failures.push(format!("body {}", record["body"]));
    }
    let t = record["time_unix_nano"].as_u64().unwrap_or(0) as u128;
    if t < window.0 || t > window.1 {
        failures.push(format!("time_unix_nano {t} outside the run {window:?}"));
    }
    failures
}

fn now_ns() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0)
}

/// portwatch in `mode`, seeing only port `port`, no snapshot.
fn on_port(portwatch: &str, mode: &str, port: u16) -> Launch {
    Launch::trace(portwatch, mode).args(["--no-snapshot", "--port", &port.to_string()])
}

fn ground_truth(portwatch: &str, mode: &str) -> Result<Vec<String>> {
    let dir = fresh_dir("otlp-truth")?;
    let out = dir.join("records.jsonl");
    let receiver = Receiver::start(&out, 0)?;
    let port = sock::unused_port(LOOPBACK)?;
    let start = now_ns();
    let tracer = Tracer::start(
        on_port(portwatch, mode, port)
            .args(["--otlp-endpoint", &receiver.url()])
            .env("OTEL_EXPORTER_OTLP_HEADERS", "x-portwatch-test=fleet%20one")
            .env("OTEL_RESOURCE_ATTRIBUTES", "deployment.environment.name=ci"),
    )?;
    let mut failures = Vec::new();
    let truth = connections::run_helpers(LOOPBACK, &port.to_string(), LOOPBACK, 3)?;
    let target = SocketAddr::new(LOOPBACK, port);
    let (refused, errno) = failing_connect("refused", target, "pw-refused")?;
    let mut expected = connections::expected_events(&truth);
    expected.push(expect::connect_failed(&refused, target, errno, "refused"));
    let expected: Vec<Expected> = expected
        .into_iter()
        .map(|x| x.with(json!({"attach": tracer.mode()})))
        .collect();
    failures.extend(
        expect::check(&tracer, &expected)
            .into_iter()
            .map(|f| format!("JSON output: {f}")),
    );
    let (stopped, json_events) = tracer.stop_with_events()?;
    let end = now_ns();
    if !stopped.status.success() {
        failures.push(format!("portwatch exited {} after SIGINT", stopped.status));
    }
    receiver.stop()?;
    let records = records(&out)?;
    let events: Vec<Value> = records.iter().map(as_event).collect();
    failures.extend(
        expect::compare(&events, &expected)
            .into_iter()
            .map(|f| format!("OTLP: {f}")),
    );
    // The same events as the JSON output, one record each, numbered 1..N.
    if records.len() != json_events.len() {
        failures.push(format!(
            "{} records for {} events printed",
            records.len(),
            json_events.len()
        ));
    }
    for j in &json_events {
        let same = events
            .iter()
            .filter(|e| e["sock_id"] == j["sock_id"] && e["event"] == j["event"])
            .count();
        if same != 1 {
            failures.push(format!("{same} records for the printed event {j}"));
        }
    }
    let seqs: Vec<u64> = records.iter().map(seq).collect();
    if seqs.iter().copied().collect::<BTreeSet<_>>() != (1..=records.len() as u64).collect() {
        failures.push(format!("sequence numbers are not 1..N: {seqs:?}"));
    }
    let instance =
        &records.first().context("no records at all")?["resource"]["service.instance.id"];
    if instance.as_str().is_none_or(|s| s.len() < 16) {
        failures.push(format!("service.instance.id {instance}"));
    }
    for r in &records {
        failures.extend(envelope(r, instance, (start, end)));
        failures.extend(roles_consistent(r));
    }
    // The clients are this binary re-executed: their executable and arguments.
    let me = std::env::current_exe()?.to_string_lossy().into_owned();
    for c in &truth.clients {
        let connect = events
            .iter()
            .find(|e| e["event"] == "connect" && expect::port(e, "local") == c.port);
        let args_ok = connect.is_some_and(|e| {
            e["exe"] == json!(me)
                && e["cmdline"]
                    .as_array()
                    .is_some_and(|a| a.contains(&json!(c.proc.comm)))
        });
        if !args_ok {
            failures.push(format!(
                "connect of {}: process.executable.path should be {me}, process.command_args hold its name: {connect:?}",
                c.proc.comm
            ));
        }
    }
    match delivery_line(&stopped.stderr)?.as_slice() {
        [delivered, 0, 0, 0, 0] if *delivered == records.len() as u64 => {}
        other => failures.push(format!(
            "delivery line counts {other:?}, {} received",
            records.len()
        )),
    }
    failures.extend(bad_settings(portwatch, mode)?);
    let _ = std::fs::remove_dir_all(&dir);
    Ok(failures)
}

/// An endpoint that is no URL and a protocol portwatch does not speak: exit 2,
/// one error line, no panic.
fn bad_settings(portwatch: &str, mode: &str) -> Result<Vec<String>> {
    let mut failures = Vec::new();
    for (what, launch) in [
        (
            "an endpoint that is no URL",
            Launch::trace(portwatch, mode).args(["--otlp-endpoint", "http://[::1"]),
        ),
        (
            "OTEL_EXPORTER_OTLP_PROTOCOL=grpc",
            Launch::trace(portwatch, mode)
                .args(["--otlp-endpoint", "http://127.0.0.1:4318"])
                .env("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
        ),
    ] {
        let out = launch.args(["--format", "json"]).run()?;
        let errors = out.stderr.errors()?;
        if out.status.code() != Some(2) || errors.len() != 1 || out.stderr.panicked() {
            failures.push(format!(
                "{what}: exit {:?} and {} error lines, expected exit 2 and one: {}",
                out.status.code(),
                errors.len(),
                out.stderr
            ));
        }
    }
    Ok(failures)
}
