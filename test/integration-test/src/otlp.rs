//! OTLP export against a real OTLP/HTTP receiver (`test/otlp-receiver`, decoding
//! with OpenTelemetry's own protobuf definitions): every event of a ground-truth
//! scenario arrives as a log record whose attributes, read back into portwatch's
//! JSON shape, match what the processes themselves know; and a receiver stopped
//! during a burst and started again gets what was spooled, with every record
//! either delivered once or counted dropped.
use std::{
    collections::{BTreeSet, HashMap},
    io::{BufRead, BufReader},
    net::{SocketAddr, TcpListener, TcpStream},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};

use crate::{
    checks::Checks,
    expect::{self, Expected},
    harness::{
        helpers::{failing_connect, LOOPBACK},
        launch::Launch,
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
        || outage(portwatch, mode),
    );
}

/// The receiver, a Python process writing one JSON line per record to `out`.
struct Receiver {
    child: Child,
    port: u16,
}

fn var(name: &str) -> Result<String> {
    std::env::var(name).with_context(|| {
        format!("{name} is not set: `cargo xtask test` installs the OTLP receiver and sets it")
    })
}

impl Receiver {
    fn start(out: &Path, port: u16) -> Result<Receiver> {
        let mut child = Command::new(var("PORTWATCH_TEST_PYTHON")?)
            .arg(var("PORTWATCH_TEST_OTLP_RECEIVER")?)
            .arg("--out")
            .arg(out)
            .args(["--port", &port.to_string()])
            .stdout(Stdio::piped())
            .spawn()
            .context("starting the OTLP receiver")?;
        let mut line = String::new();
        BufReader::new(child.stdout.take().context("receiver stdout")?).read_line(&mut line)?;
        let port = line
            .strip_prefix("listening ")
            .and_then(|p| p.trim().parse().ok())
            .with_context(|| format!("the receiver said {line:?}, not `listening PORT`"))?;
        Ok(Receiver { child, port })
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// SIGTERM and wait: requests being handled are answered first.
    fn stop(mut self) -> Result<()> {
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        )?;
        let status = self.child.wait()?;
        if !status.success() {
            bail!("the receiver exited with {status}");
        }
        Ok(())
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Every record the receiver wrote.
fn records(out: &Path) -> Result<Vec<Value>> {
    let text = std::fs::read_to_string(out).unwrap_or_default();
    text.lines()
        .map(|l| serde_json::from_str(l).with_context(|| format!("receiver line {l}")))
        .collect()
}

fn seq(record: &Value) -> u64 {
    record["attributes"]["portwatch.sequence"]
        .as_u64()
        .unwrap_or(0)
}

/// A record's attributes read back into the fields of portwatch's JSON event,
/// so that the suite's ground-truth expectations apply to it unchanged.
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
        "sock_id": a["portwatch.sock_id"], "attach": a["portwatch.attach_mode"],
        "ppid": a["process.parent_pid"], "exe": a["process.executable.path"],
        "cmdline": a["process.command_args"], "duration_ms": a["portwatch.duration_ms"],
        "local": end("network.local", "local"),
    });
    e["remote"] = if a["portwatch.role"] == "listener" {
        json!({"port": 0})
    } else {
        end("network.peer", "remote")
    };
    if let Some(reason) = a.get("error.type") {
        e["error"] = json!({"errno": a["portwatch.errno"], "reason": reason});
    }
    e
}

/// The conventions' `client.*`/`server.*` must name the same ends as the local
/// and peer ones, by role.
fn roles_consistent(record: &Value) -> Option<String> {
    let a = &record["attributes"];
    let (server, client) = match a["portwatch.role"].as_str() {
        Some("listener") => ("network.local", None),
        Some("server") => ("network.local", Some("network.peer")),
        Some("client") => ("network.peer", Some("network.local")),
        other => return Some(format!("role {other:?}")),
    };
    let same = |x: &str, y: &str| {
        a[format!("{x}.port")] == a[format!("{y}.port")]
            && a[format!("{x}.address")] == a[format!("{y}.address")]
    };
    let ok = same("server", server)
        && match client {
            Some(c) => same("client", c),
            None => a.get("client.port").is_none(),
        };
    (!ok).then(|| format!("client.*/server.* do not follow the role: {a}"))
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

fn temp_dir(name: &str) -> Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!("pw-otlp-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

/// The closing stderr line's counts: delivered, then each dropped count.
fn delivery_line(stderr: &crate::harness::stderr::Stderr) -> Result<Vec<u64>> {
    let line = stderr
        .lines()
        .iter()
        .find(|l| l.starts_with("portwatch: otlp: ") && l.contains("records delivered"))
        .with_context(|| format!("no otlp delivery line on stderr: {stderr}"))?;
    Ok(line
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|n| n.parse().ok())
        .collect())
}

/// portwatch in `mode`, seeing only port `port`, no snapshot.
fn on_port(portwatch: &str, mode: &str, port: u16) -> Launch {
    Launch::trace(portwatch, mode).args(["--no-snapshot", "--port", &port.to_string()])
}

fn ground_truth(portwatch: &str, mode: &str) -> Result<Vec<String>> {
    let dir = temp_dir("truth")?;
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
    if !instance.as_str().is_some_and(|s| s.len() >= 16) {
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

/// `n` connections to `listener` from this process, each accepted and closed.
fn burst(listener: &TcpListener, n: usize) -> Result<()> {
    let addr = listener.local_addr()?;
    for _ in 0..n {
        let c = TcpStream::connect(addr)?;
        let (a, _) = listener.accept()?;
        drop(c);
        drop(a);
    }
    Ok(())
}

/// Poll the receiver's file until `done` holds or `timeout` passes.
fn wait_records(out: &Path, timeout: Duration, done: impl Fn(&[Value]) -> bool) -> Vec<Value> {
    let start = Instant::now();
    loop {
        let r = records(out).unwrap_or_default();
        if done(&r) || start.elapsed() > timeout {
            return r;
        }
        thread::sleep(Duration::from_millis(100));
    }
}

/// The spool's size in the outage run: the burst overflows it.
const SPOOL: usize = 3000;

fn outage(portwatch: &str, mode: &str) -> Result<Vec<String>> {
    let dir = temp_dir("outage")?;
    let out = dir.join("records.jsonl");
    let receiver = Receiver::start(&out, 0)?;
    let receiver_port = receiver.port;
    let listener = TcpListener::bind((LOOPBACK, 0))?;
    let port = listener.local_addr()?.port();
    let tracer = Tracer::start(
        on_port(portwatch, mode, port)
            .args(["--otlp-endpoint", &receiver.url()])
            .args(["--otlp-buffer", &SPOOL.to_string()])
            .args(["--ringbuf-size", "16777216"]),
    )?;
    let mut failures = Vec::new();
    // Before: delivered as it comes.
    burst(&listener, 100)?;
    let before = wait_records(&out, Duration::from_secs(10), |r| r.len() >= 400);
    let delivered_before = before.iter().map(seq).max().unwrap_or(0);
    receiver.stop()?;
    // During: more than the spool holds.
    burst(&listener, 2 * SPOOL)?;
    let start = Instant::now();
    while !tracer.stderr().mentions("spool full") && start.elapsed() < Duration::from_secs(20) {
        thread::sleep(Duration::from_millis(100));
    }
    thread::sleep(Duration::from_millis(500));
    // After: the same port again; what was spooled arrives.
    let receiver = Receiver::start(&out, receiver_port)?;
    let after = wait_records(&out, Duration::from_secs(30), |r| {
        r.iter().filter(|x| seq(x) > delivered_before).count() >= SPOOL
    });
    let (stopped, json_events) = tracer.stop_with_events()?;
    receiver.stop()?;
    if !stopped.status.success() {
        failures.push(format!("portwatch exited {} after SIGINT", stopped.status));
    }
    let all = records(&out)?;
    let spooled = after.iter().filter(|x| seq(x) > delivered_before).count();
    if spooled < SPOOL {
        failures.push(format!(
            "{spooled} records numbered after the outage began arrived once the receiver was back, expected at least the spool's {SPOOL}"
        ));
    }
    let mut seen: HashMap<u64, usize> = HashMap::new();
    for r in &all {
        *seen.entry(seq(r)).or_default() += 1;
    }
    let duplicates: Vec<u64> = seen
        .iter()
        .filter(|(_, n)| **n > 1)
        .map(|(s, _)| *s)
        .collect();
    if !duplicates.is_empty() {
        failures.push(format!(
            "{} sequence numbers delivered more than once",
            duplicates.len()
        ));
    }
    let produced = json_events.len() as u64;
    let counts = delivery_line(&stopped.stderr)?;
    let [delivered, dropped, full, rejected, at_exit] = counts.as_slice() else {
        bail!("delivery line counts {counts:?}");
    };
    let missing = (1..=produced).filter(|s| !seen.contains_key(s)).count() as u64;
    if *delivered != seen.len() as u64 || delivered + dropped != produced || missing != *dropped {
        failures.push(format!(
            "{produced} records produced (events printed), {} received, {missing} numbers missing; portwatch says {delivered} delivered and {dropped} dropped",
            seen.len()
        ));
    }
    if *full == 0 || *rejected != 0 || *at_exit != 0 {
        failures.push(format!(
            "dropped: {full} spool full (expected some), {rejected} refused and {at_exit} at exit (expected none)"
        ));
    }
    for said in ["cannot deliver", "spool full", "takes records again"] {
        if !stopped.stderr.mentions(said) {
            failures.push(format!("stderr never said `{said}`: {}", stopped.stderr));
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
    Ok(failures)
}
