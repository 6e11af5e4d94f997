//! `portwatch record` and `portwatch query` against ground truth: a recording while
//! helpers listen, accept in forked workers, connect and fail to connect; then
//! questions at chosen instants, each answered with exactly the sockets the
//! helpers held then, field by field. Also: a listener from before the recording,
//! a summary, retention; bad files, locks, a full disk and `kill -9` in the
//! middle of a storm are in [`failures`].
mod failures;
mod udp;

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    thread,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};

use crate::{
    checks::Checks,
    expect::{self, Expected},
    harness::{
        helpers::{failing_connect, Client, End, Hold, Server, ServerSpec, LOOPBACK},
        launch::{discard, Launch, Running},
    },
    sock,
};

/// Longer than the writer's batch (0.5 s): what happened is committed by then.
pub(crate) const COMMITTED: Duration = Duration::from_millis(1500);

pub fn record_all(checks: &mut Checks, portwatch: &str, loadgen: Option<&str>, mode: &str) {
    checks.run(
        &format!("[{mode}] history: sockets open before, during and after a run of helpers, a listener from before the recording, a failed connect, a summary"),
        || ground_truth(portwatch, mode),
    );
    checks.run(
        &format!("[{mode}] history: UDP rows (a bound server, its worker's flows, two clients) at an instant, by protocol, all closed after"),
        || udp::udp_rows(portwatch, mode),
    );
    checks.run(
        &format!("[{mode}] history: retention drops old closed sockets, never open ones"),
        || retention(portwatch, mode),
    );
    checks.run(
        "history: a file that is not a portwatch database, a directory that cannot be made, a missing file, record without privileges: one line, exit 1, no file touched or made; query without root",
        || failures::bad_files(portwatch, mode),
    );
    checks.run(
        &format!("[{mode}] history: a database locked by another writer, and one on a read-only file system: one line, exit 1, nothing stored lost"),
        || failures::locked_and_read_only(portwatch, mode),
    );
    if let Some(loadgen) = loadgen {
        checks.run(
            &format!("[{mode}] history: kill -9 during a storm leaves a database that opens, with every socket up to the last commit"),
            || failures::killed(portwatch, loadgen, mode),
        );
        checks.run(
            &format!("[{mode}] history: a full disk ends the recording with one line, exit 1, what was stored still readable"),
            || failures::disk_full(portwatch, loadgen, mode),
        );
    }
}

/// A fresh directory for one check's database.
pub(crate) fn fresh_db(name: &str) -> Result<PathBuf> {
    let dir = crate::harness::scratch::scratch_path(&format!("history-{name}"));
    let _ = std::fs::remove_dir_all(&dir);
    Ok(dir.join("history.db"))
}

pub(crate) fn record(
    portwatch: &str,
    mode: &str,
    db: &Path,
    extra: &[&str],
) -> Result<Running<()>> {
    Launch::trace(portwatch, mode)
        .arg("record")
        .arg("--db")
        .arg(db)
        .args(extra)
        .start(discard)
}

/// `portwatch query --format json ARGS`: its JSON lines.
pub(crate) fn query(portwatch: &str, db: &Path, args: &[&str]) -> Result<Vec<Value>> {
    let out = Launch::new(portwatch)
        .arg("query")
        .arg("--db")
        .arg(db)
        .args(["--format", "json"])
        .args(args)
        .run()?;
    if !out.status.success() {
        bail!(
            "portwatch query {args:?} exited {}: {}",
            out.status,
            out.stderr
        );
    }
    String::from_utf8(out.stdout)?
        .lines()
        .map(|l| serde_json::from_str(l).with_context(|| format!("query output {l:?}")))
        .collect()
}

/// The current time, RFC 3339 with nanoseconds.
pub(crate) fn now() -> String {
    let t = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    rfc3339(t)
}

fn rfc3339(t: Duration) -> String {
    // Civil date from days since the epoch (Howard Hinnant's algorithm).
    let secs = t.as_secs() as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:09}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        t.subsec_nanos()
    )
}

/// Stop a recording with SIGINT: exit 0 and a `recorded N sockets` line.
pub(crate) fn stop(recording: Running<()>) -> Result<Vec<String>> {
    let stopped = recording.stop()?;
    let mut failures = Vec::new();
    if !stopped.status.success() {
        failures.push(format!(
            "record exited {}: {}",
            stopped.status, stopped.stderr
        ));
    }
    if !stopped.stderr.mentions("recorded ") {
        failures.push(format!("no `recorded` line: {}", stopped.stderr));
    }
    Ok(failures)
}

/// Every event must carry its lifetime: `opened` (unless it existed before the
/// recording) and, when `closed` is expected, `closed`.
fn lifetimes(events: &[Value], closed: bool) -> Vec<String> {
    events
        .iter()
        .filter(|e| {
            let opened_ok = e["opened"].is_string() || e["event"] == "snapshot";
            !opened_ok || e["closed"].is_string() != closed
        })
        .map(|e| format!("lifetime missing or wrong (closed expected: {closed}): {e}"))
        .collect()
}

/// What the helpers of [`ground_truth`] did.
struct Truth {
    listener: End,
    acceptor: crate::harness::helpers::Proc,
    clients: Vec<End>,
    /// Instants: before the listener, while every connection was held, after all
    /// had closed.
    before: String,
    during: String,
    after: String,
}

/// The helpers: a listener whose forked worker accepts two clients; each holds
/// its connection for a second and a half.
fn run_helpers() -> Result<Truth> {
    let before = now();
    thread::sleep(Duration::from_millis(50));
    let hold = Hold::Ms(1500);
    let mut server = Server::spawn(&ServerSpec {
        connections: 2,
        hold,
        ..ServerSpec::new(LOOPBACK)
    })?;
    let listener = server.listener.clone();
    let mut clients = (0..2)
        .map(|i| Client::spawn(listener.socket_addr(), &format!("pw-hclient-{i}"), hold))
        .collect::<Result<Vec<_>>>()?;
    let ends = clients
        .iter_mut()
        .map(Client::connected)
        .collect::<Result<Vec<_>>>()?;
    let (acceptor, _) = server.accepted()?;
    server.accepted()?;
    thread::sleep(Duration::from_millis(300));
    let during = now();
    server.finish()?;
    for c in clients {
        c.finish()?;
    }
    // The helpers have closed their sockets; the kernel closes them once the
    // last FIN and ACK are through, which an emulated guest can take longer
    // than a moment to do: `after` is once none is left.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while crate::sock::open_on(listener.port) > 0 && std::time::Instant::now() < deadline {
        thread::sleep(Duration::from_millis(20));
    }
    thread::sleep(Duration::from_millis(50));
    Ok(Truth {
        listener,
        acceptor,
        clients: ends,
        before,
        during,
        after: now(),
    })
}

/// The sockets on the listener's port at `truth.during`: the listener, each
/// server side in the forked worker, each client side.
fn expected_during(truth: &Truth) -> Vec<Expected> {
    let mut expected = vec![expect::listen(&truth.listener)];
    for client in &truth.clients {
        let server_end = End {
            proc: truth.acceptor.clone(),
            addr: client.addr,
            port: truth.listener.port,
        };
        expected.push(expect::connect(client, &server_end));
        expected.push(expect::accept(&server_end, client));
    }
    expected
}

fn ground_truth(portwatch: &str, mode: &str) -> Result<Vec<String>> {
    let db = fresh_db("truth")?;
    // A listener from before the recording, held until killed.
    let early = Server::spawn(&ServerSpec {
        listener: "pw-early",
        hold: Hold::UntilKilled,
        ..ServerSpec::new(LOOPBACK)
    })?;
    let early_listener = early.listener.clone();
    let recording = record(portwatch, mode, &db, &[])?;
    thread::sleep(Duration::from_millis(300));
    let truth = run_helpers()?;
    let refused_port = sock::unused_port(LOOPBACK)?;
    let target = SocketAddr::new(LOOPBACK, refused_port);
    let (refused_client, errno) = failing_connect("refused", target, "pw-hrefused")?;
    let still_there = now();
    thread::sleep(COMMITTED);
    let mut failures = stop(recording)?;
    early.kill();
    let port = truth.listener.port.to_string();

    let before = query(portwatch, &db, &["--at", &truth.before, "--port", &port])?;
    if !before.is_empty() {
        failures.push(format!("at {} (before listen): {before:?}", truth.before));
    }
    let during = query(portwatch, &db, &["--at", &truth.during, "--port", &port])?;
    failures.extend(expect::compare(&during, &expected_during(&truth)));
    if during.len() != 5 {
        failures.push(format!(
            "at {}: {} sockets, expected 5",
            truth.during,
            during.len()
        ));
    }
    failures.extend(lifetimes(&during, true));
    let after = query(portwatch, &db, &["--at", &truth.after, "--port", &port])?;
    if !after.is_empty() {
        failures.push(format!("at {} (after close): {after:?}", truth.after));
    }
    let early_port = early_listener.port.to_string();
    let existing = query(
        portwatch,
        &db,
        &["--at", &still_there, "--port", &early_port],
    )?;
    let mut early_expected = expect::listen(&early_listener)
        .with(json!({"event": "snapshot", "opened": null, "closed": null}))
        .named("the listener from before the recording");
    early_expected.event = "snapshot";
    if let Some(fields) = early_expected.fields.as_object_mut() {
        // The snapshot reads the process from /proc: no thread, no exact flag.
        fields.remove("tid");
        fields.remove("pid_exact");
    }
    failures.extend(expect::compare(&existing, &[early_expected]));

    let failed = query(
        portwatch,
        &db,
        &[
            "--event",
            "connect-failed",
            "--port",
            &refused_port.to_string(),
        ],
    )?;
    let failed_expected = expect::connect_failed(&refused_client, target, errno, "refused");
    failures.extend(expect::compare(&failed, &[failed_expected]));
    failures.extend(summary(portwatch, &db, &truth)?);
    Ok(failures)
}

/// `--summary` over the listener's port: one process (every helper is this
/// test's binary, as root) that listened on it, made two connections and served
/// two.
fn summary(portwatch: &str, db: &Path, truth: &Truth) -> Result<Vec<String>> {
    let port = truth.listener.port.to_string();
    let rows = query(portwatch, db, &["--summary", "--port", &port])?;
    let want = json!({"listen_ports": [truth.listener.port], "connections_out": 2,
                      "connections_in": 2, "connect_failures": 0, "remote_peers": 1,
                      "remote_ports": 1, "user": "root"});
    let mut failures = Vec::new();
    match rows.as_slice() {
        [row] => {
            for (k, v) in want.as_object().into_iter().flatten() {
                if &row[k] != v {
                    failures.push(format!("summary {k}: {} expected {v}", row[k]));
                }
            }
            let exe = std::env::current_exe()?;
            if row["exe"] != json!(exe.to_string_lossy()) {
                failures.push(format!(
                    "summary exe {} expected {}",
                    row["exe"],
                    exe.display()
                ));
            }
        }
        other => failures.push(format!(
            "summary: {} rows, expected 1: {other:?}",
            other.len()
        )),
    }
    Ok(failures)
}

/// Two recordings: in the first a listener opens and stays open across its end,
/// while another listener serves a short connection and closes; the second, with
/// `--retain 1s`, must drop everything closed at its start and keep the open
/// listener (no close, so never old).
fn retention(portwatch: &str, mode: &str) -> Result<Vec<String>> {
    let db = fresh_db("retention")?;
    let first = record(portwatch, mode, &db, &[])?;
    thread::sleep(Duration::from_millis(300));
    let keeper = Server::spawn(&ServerSpec {
        listener: "pw-keeper",
        hold: Hold::UntilKilled,
        ..ServerSpec::new(LOOPBACK)
    })?;
    let short = Server::spawn(&ServerSpec {
        hold: Hold::Ms(100),
        ..ServerSpec::new(LOOPBACK)
    })?;
    let short_port = short.listener.port.to_string();
    let mut client = Client::spawn(short.listener.socket_addr(), "pw-short", Hold::Ms(100))?;
    client.connected()?;
    short.finish()?;
    client.finish()?;
    thread::sleep(COMMITTED);
    let mut failures = stop(first)?;
    let before = query(portwatch, &db, &["--port", &short_port])?;
    if before.len() != 3 {
        failures.push(format!(
            "first run: {} sockets on the short-lived port, expected 3 (listener, both sides)",
            before.len()
        ));
    }
    thread::sleep(Duration::from_millis(1200));
    let second = record(portwatch, mode, &db, &["--retain", "1s"])?;
    thread::sleep(COMMITTED);
    failures.extend(stop(second)?);
    let keeper_port = keeper.listener.port.to_string();
    let kept = query(portwatch, &db, &["--port", &keeper_port])?;
    let gone = query(portwatch, &db, &["--port", &short_port])?;
    keeper.kill();
    if !gone.is_empty() {
        failures.push(format!("closed sockets older than --retain kept: {gone:?}"));
    }
    // The first run's row and the second run's snapshot row, both open.
    let open_listeners = kept
        .iter()
        .filter(|e| e["role"] == "listener" && e["closed"].is_null())
        .count();
    if kept.is_empty() || open_listeners != kept.len() {
        failures.push(format!(
            "the open listener was not kept as it was: {kept:?}"
        ));
    }
    Ok(failures)
}
