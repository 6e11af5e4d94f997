//! `--metrics` against a real Prometheus server (`$PORTWATCH_TEST_PROMETHEUS`,
//! installed by xtask): portwatch traces only the test's two ports, Prometheus
//! scrapes it every second, and what Prometheus' query API answers must equal the
//! helpers' ground truth: events by kind, role and family, connect failures by
//! reason, the test's listeners (port, family, executable) while they listen and
//! none once closed, and the build info naming the version and attach mode. With
//! an OTLP receiver too: the exporter's series (delivered equal to what the
//! receiver holds, none dropped), and the kernel side's (ring buffer fill, lost
//! by CPU, skipped by program).
use std::{
    net::{IpAddr, SocketAddr},
    path::Path,
    thread,
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};

mod expected;
mod server;

use expected::{count_printed, differing, shown, Expected, Phase, Truth};
use server::Prometheus;

use crate::{
    checks::Checks,
    harness::{
        helpers::{failing_connect, Client, Hold, Server, ServerSpec, LOOPBACK, LOOPBACK6},
        launch::Launch,
        tracer::Tracer,
    },
    sock,
};

/// The Prometheus server to test with.
const PROMETHEUS_VAR: &str = "PORTWATCH_TEST_PROMETHEUS";
/// Client processes per family: different, so that a family mixed up shows.
const CLIENTS_V4: u64 = 5;
const CLIENTS_V6: u64 = 3;
/// How long the scraped values may take to reach the ground truth.
const SCRAPED_WITHIN: Duration = Duration::from_secs(20);
/// How long Prometheus may take to be ready.
const READY_WITHIN: Duration = Duration::from_secs(30);

pub fn record_all(checks: &mut Checks, portwatch: &str, mode: &str) {
    checks.run(
        &format!("[{mode}] Prometheus scraping --metrics: events by kind, role and family, connect failures by reason, the listeners (port, exe) and build info equal the ground truth; OTLP delivered equals what the receiver holds; ring buffer, lost and skipped series"),
        || scraped(portwatch, mode),
    );
}

fn family(addr: IpAddr) -> &'static str {
    if addr.is_ipv4() {
        "ipv4"
    } else {
        "ipv6"
    }
}

/// The whole check: ground truth made while portwatch traces and Prometheus
/// scrapes, compared while the listeners listen, and again once all is closed.
fn scraped(portwatch: &str, mode: &str) -> Result<Vec<String>> {
    let server_bin = std::env::var(PROMETHEUS_VAR).with_context(|| {
        format!("{PROMETHEUS_VAR} is not set: it names the Prometheus server to test with (cargo xtask test installs one and sets it)")
    })?;
    let version = portwatch_version(portwatch)?;
    // Four different port numbers: the test's (one per family; traced), then
    // portwatch's metrics and Prometheus' web port (not traced).
    let mut ports: Vec<u16> = Vec::new();
    for addr in [LOOPBACK, LOOPBACK6, LOOPBACK, LOOPBACK] {
        let port = loop {
            let port = sock::unused_port(addr)?;
            if !ports.contains(&port) {
                break port;
            }
        };
        ports.push(port);
    }
    let [p4, p6, metrics_port, web_port] = ports[..] else {
        unreachable!("four ports")
    };
    let metrics = SocketAddr::new(LOOPBACK, metrics_port);
    // An OTLP receiver too: the exporter's own series.
    let otlp_dir = crate::harness::scratch::fresh_dir("prometheus-otlp")?;
    let otlp_out = otlp_dir.join("records.jsonl");
    let receiver = crate::otlp::Receiver::start(&otlp_out, 0)?;
    let tracer = Tracer::start(Launch::trace(portwatch, mode).args([
        "--otlp-endpoint".to_string(),
        receiver.url(),
        "--no-snapshot".into(),
        "--port".into(),
        p4.to_string(),
        "--port".into(),
        p6.to_string(),
        "--metrics".into(),
        metrics.to_string(),
    ]))?;
    let prometheus = Prometheus::start(Path::new(&server_bin), metrics, web_port)?;
    let mut truth = Truth::default();
    let exe = std::env::current_exe()?.display().to_string();
    let mut servers = Servers(Vec::new());
    for (addr, port, clients) in [(LOOPBACK, p4, CLIENTS_V4), (LOOPBACK6, p6, CLIENTS_V6)] {
        // Refused: nothing listens on the port yet.
        let (_, errno) =
            failing_connect("refused", SocketAddr::new(addr, port), "pw-prom-refused")?;
        if errno != libc::ECONNREFUSED {
            bail!("the connect to {addr} port {port} failed with errno {errno}, not ECONNREFUSED: the scenario did not happen");
        }
        truth.add("connect-failed", "client", family(addr), 1);
        *truth.failures.entry("refused".into()).or_default() += 1;
        // A listener whose forked acceptor holds every connection until killed;
        // each client process connects and closes its end at once.
        let ports = port.to_string();
        servers.0.push(Server::spawn(&ServerSpec {
            ports: &ports,
            listener: "pw-prom-listen",
            acceptor: "pw-prom-accept",
            connections: clients as usize,
            hold: Hold::UntilKilled,
            ..ServerSpec::new(addr)
        })?);
        let server = servers.0.last_mut().expect("just pushed");
        if server.listener.port != port {
            bail!(
                "the server listens on {}, not on the test's port {port}",
                server.listener.port
            );
        }
        truth.add("listen", "listener", family(addr), 1);
        for _ in 0..clients {
            let mut client =
                Client::spawn(server.listener.socket_addr(), "pw-prom-client", Hold::Ms(0))?;
            client.connected()?;
            server.accepted()?;
            client.finish()?;
        }
        truth.add("connect", "client", family(addr), clients);
        truth.add("accept", "server", family(addr), clients);
    }
    let expected = Expected {
        ports: [(p4, "ipv4"), (p6, "ipv6")],
        exe: &exe,
        version: &version,
        mode,
    };
    // While listening: the closes may be on their way (the clients' ends), so
    // only the rest is compared.
    let mut failures: Vec<String> = prometheus
        .until_matched(|p| expected.compare(p, &truth, Phase::Listening))
        .into_iter()
        .map(|f| format!("while listening: {f}"))
        .collect();

    // All closed: the servers killed, their sockets closed by the kernel.
    drop(servers);
    let deadline = Instant::now() + Duration::from_secs(10);
    while sock::open_on(p4) + sock::open_on(p6) > 0 && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(50));
    }
    for (port, family, clients) in [(p4, "ipv4", CLIENTS_V4), (p6, "ipv6", CLIENTS_V6)] {
        if sock::open_on(port) > 0 {
            failures.push(format!(
                "sockets on port {port} still open 10 s after the server was killed"
            ));
        }
        truth.add("close", "client", family, clients);
        truth.add("close", "server", family, clients);
        truth.add("close", "listener", family, 1);
    }
    failures.extend(
        prometheus
            .until_matched(|p| expected.compare(p, &truth, Phase::Closed))
            .into_iter()
            .map(|f| format!("all closed: {f}")),
    );
    failures.extend(
        prometheus
            .until_matched(|p| exporter_and_kernel(p, &otlp_out))
            .into_iter()
            .map(|f| format!("exporter and kernel series: {f}")),
    );
    prometheus.stop();
    let (stopped, events) = tracer.stop_with_events()?;
    receiver.stop()?;
    let _ = std::fs::remove_dir_all(&otlp_dir);
    if !stopped.status.success() {
        failures.push(format!(
            "portwatch exited with {} after SIGINT: {}",
            stopped.status, stopped.stderr
        ));
    }
    // portwatch's own stream, the per-event account: it must show the same, or
    // the fault is not the exporter's.
    let printed = count_printed(&events);
    for ((e, r, f), want, have) in differing(&truth.events, &printed, false) {
        failures.push(format!(
            "portwatch printed {} {e} events of role {r}, family {f}: expected {}",
            shown(have),
            shown(want)
        ));
    }
    Ok(failures)
}

/// The series of the exporter and of the kernel side: the OTLP records
/// delivered equal those the receiver holds, none dropped or waiting; the ring
/// buffer's fill level a share; a lost count for every CPU and a skipped count
/// for every program, all zero in so light a run.
fn exporter_and_kernel(p: &Prometheus, otlp_out: &Path) -> Result<Vec<String>> {
    let mut failures = Vec::new();
    let received = crate::otlp::records(otlp_out)?.len() as f64;
    let one = |query: &str| -> Result<Option<f64>> {
        Ok(match p.query(query)?.as_slice() {
            [(_, v)] => Some(*v),
            _ => None,
        })
    };
    let delivered = one("portwatch_export_records_delivered_total{exporter=\"otlp\"}")?;
    if delivered != Some(received) || received == 0.0 {
        failures.push(format!(
            "OTLP records delivered {delivered:?}, the receiver holds {received}"
        ));
    }
    for dropped in ["spool_full", "rejected", "at_exit"] {
        let q = format!("portwatch_export_records_dropped_{dropped}_total{{exporter=\"otlp\"}}");
        if one(&q)? != Some(0.0) {
            failures.push(format!("{q}: {:?}, expected 0", one(&q)?));
        }
    }
    let spooled = one("portwatch_export_spool_records{exporter=\"otlp\"}")?;
    if spooled != Some(0.0) {
        failures.push(format!("records spooled {spooled:?}, expected 0"));
    }
    match one("portwatch_ringbuf_used_ratio")? {
        Some(r) if (0.0..=1.0).contains(&r) => {}
        other => failures.push(format!("portwatch_ringbuf_used_ratio {other:?}")),
    }
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let lost = p.query("portwatch_events_lost_total")?;
    if lost.len() != cpus || lost.iter().any(|(_, v)| *v != 0.0) {
        failures.push(format!(
            "events lost by CPU: {lost:?}, expected {cpus} series of 0"
        ));
    }
    let skipped = p.query("portwatch_program_runs_skipped_total")?;
    if skipped.is_empty()
        || skipped
            .iter()
            .any(|(l, _)| l.get("program").is_none_or(String::is_empty))
    {
        failures.push(format!("program runs skipped by program: {skipped:?}"));
    }
    Ok(failures)
}

/// `portwatch --version`: its version.
fn portwatch_version(portwatch: &str) -> Result<String> {
    let out = Launch::new(portwatch).arg("--version").run()?;
    let text = String::from_utf8_lossy(&out.stdout).trim().to_string();
    match text.strip_prefix("portwatch ") {
        Some(v) if out.status.success() => Ok(v.to_string()),
        _ => bail!("portwatch --version said {text:?} ({})", out.status),
    }
}

/// Helper servers, killed (with what they forked) when dropped.
struct Servers(Vec<Server>);

impl Drop for Servers {
    fn drop(&mut self) {
        for server in self.0.drain(..) {
            server.kill();
        }
    }
}
