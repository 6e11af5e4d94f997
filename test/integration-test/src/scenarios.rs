//! The scenarios: each runs helper processes, takes their own account of what they
//! did as ground truth, and checks that portwatch reported exactly that.
use std::{
    io::{BufRead, BufReader},
    net::IpAddr,
    process::{Child, ChildStdout, Command, Stdio},
    time::Duration,
};

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};

use crate::{
    expect::{endpoint, find, mismatches, port, Expected},
    investigate, sock,
    tracer::Tracer,
};

const HOLD_MS: u64 = 300;
const EVENT_TIMEOUT: Duration = Duration::from_secs(10);

/// A helper process and its report lines.
pub struct Helper {
    child: Child,
    lines: std::io::Lines<BufReader<ChildStdout>>,
}

impl Helper {
    pub fn spawn(args: &[&str]) -> Result<Helper> {
        Self::spawn_with(args, &[], Stdio::null())
    }

    /// A helper that runs until its stdin is closed (or reads from it).
    pub fn spawn_with_stdin(args: &[&str]) -> Result<Helper> {
        Self::spawn_with(args, &[], Stdio::piped())
    }

    pub fn close_stdin(&mut self) {
        drop(self.child.stdin.take());
    }

    /// Send one line to the helper's stdin.
    pub fn send(&mut self, line: &str) -> Result<()> {
        use std::io::Write;
        let stdin = self.child.stdin.as_mut().context("helper has no stdin")?;
        writeln!(stdin, "{line}")?;
        Ok(())
    }

    pub fn spawn_with(args: &[&str], env: &[(&str, &str)], stdin: Stdio) -> Result<Helper> {
        use std::os::unix::process::CommandExt;
        let mut child = Command::new("/proc/self/exe")
            .arg("helper")
            .args(args)
            // Its own process group, so `kill` reaches what it forks too.
            .process_group(0)
            .envs(env.iter().copied())
            .stdin(stdin)
            .stdout(Stdio::piped())
            .spawn()
            .context("starting a helper")?;
        let lines = BufReader::new(child.stdout.take().unwrap()).lines();
        Ok(Helper { child, lines })
    }

    /// The next report line, which must start with `word`; its fields as numbers.
    pub fn expect(&mut self, word: &str) -> Result<Vec<u32>> {
        let line = self
            .lines
            .next()
            .with_context(|| format!("helper ended before saying `{word}`"))??;
        let mut parts = line.split_whitespace();
        if parts.next() != Some(word) {
            bail!("helper said `{line}`, expected `{word} ...`");
        }
        parts
            .map(|p| {
                p.parse()
                    .with_context(|| format!("in helper line `{line}`"))
            })
            .collect()
    }

    /// Kill the helper and every process it forked (its process group).
    pub fn kill(mut self) {
        let group = nix::unistd::Pid::from_raw(-(self.child.id() as i32));
        let _ = nix::sys::signal::kill(group, nix::sys::signal::Signal::SIGKILL);
        let _ = self.child.wait();
    }

    pub fn finish(mut self) -> Result<()> {
        let status = self.child.wait()?;
        if !status.success() {
            bail!("helper exited with {status}");
        }
        Ok(())
    }
}

pub fn exact(pid: u32, uid: u32, comm: &str) -> Value {
    json!({"pid": pid, "tid": pid, "uid": uid, "comm": comm, "pid_exact": true, "proto": "tcp"})
}

pub fn merge(mut a: Value, b: Value) -> Value {
    for (k, v) in b.as_object().unwrap() {
        a[k] = v.clone();
    }
    a
}

/// Compare every expected event, once the tracer has shown them all (or timed out).
pub fn check(tracer: &Tracer, expected: &[(Expected, &str, u16, u16)]) -> Vec<String> {
    let expected: Vec<_> = expected
        .iter()
        .map(|(exp, kind, l, r)| {
            let fields = merge(exp.fields.clone(), json!({"attach": tracer.mode}));
            (
                Expected {
                    what: exp.what.clone(),
                    fields,
                },
                *kind,
                *l,
                *r,
            )
        })
        .collect();
    let events = tracer.wait_for(EVENT_TIMEOUT, |events| {
        expected
            .iter()
            .all(|(_, kind, l, r)| !find(events, kind, *l, *r).is_empty())
    });
    let mut failures = Vec::new();
    for (exp, kind, l, r) in &expected {
        let found = find(&events, kind, *l, *r);
        match found.as_slice() {
            [] => failures.push(format!("{}: no `{kind}` event {l} -> {r}", exp.what)),
            [event] => {
                let mut diffs = Vec::new();
                mismatches(event, &exp.fields, "", &mut diffs);
                if !diffs.is_empty() {
                    failures.push(format!(
                        "{}: {} (event: {event})",
                        exp.what,
                        diffs.join("; ")
                    ));
                }
            }
            many => failures.push(format!(
                "{}: {} `{kind}` events {l} -> {r}, expected one",
                exp.what,
                many.len()
            )),
        }
    }
    failures
}

/// No event on these ports may name a process other than the ones that own them,
/// or claim an exact pid it does not have.
fn no_wrong_pids(tracer: &Tracer, ports: &[u16], pids: &[u32]) -> Vec<String> {
    tracer
        .events()
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

fn durations_at_least(
    tracer: &Tracer,
    expected: &[(Expected, &str, u16, u16)],
    min_ms: f64,
) -> Vec<String> {
    let events = tracer.events();
    expected
        .iter()
        .filter(|(_, kind, _, r)| *kind == "close" && *r != 0)
        .filter_map(|(exp, kind, l, r)| {
            let found = find(&events, kind, *l, *r);
            let d = found.first()?["duration_ms"].as_f64();
            match d {
                Some(ms) if ms >= min_ms && ms < 60_000.0 => None,
                other => Some(format!(
                    "{}: duration_ms {other:?}, expected at least {min_ms}",
                    exp.what
                )),
            }
        })
        .collect()
}

/// A listener, a forked acceptor and `clients` separate client processes.
fn listener_acceptor_clients(
    tracer: &Tracer,
    listen_addr: &str,
    ports: &str,
    connect_addr: &str,
    clients: usize,
) -> Result<Vec<String>> {
    let listen_ip: IpAddr = listen_addr.parse()?;
    let connect_ip: IpAddr = connect_addr.parse()?;
    // What the connection's addresses look like from either end (the same here:
    // loopback), and the family on the wire.
    let family = if connect_ip.is_ipv4() { "ipv4" } else { "ipv6" };
    let listen_family = if listen_ip.is_ipv4() { "ipv4" } else { "ipv6" };
    let hold = HOLD_MS.to_string();
    let count = clients.to_string();
    let mut server = Helper::spawn(&[
        "server",
        listen_addr,
        ports,
        "pw-listener",
        "pw-acceptor",
        &count,
        &hold,
    ])?;
    let [lpid, luid, port] = server.expect("listening")?[..] else {
        bail!("bad listening line")
    };
    let port = port as u16;
    let mut client_helpers = Vec::new();
    for i in 0..clients {
        let name = format!("pw-client-{i}");
        let h = Helper::spawn(&["client", connect_addr, &port.to_string(), &name, &hold])?;
        client_helpers.push((name, h));
    }
    let mut truth_clients = Vec::new();
    for (name, h) in &mut client_helpers {
        let [cpid, cuid, lport] = h.expect("connected")?[..] else {
            bail!("bad connected line")
        };
        truth_clients.push((name.clone(), cpid, cuid, lport as u16));
    }
    let mut accepted = Vec::new();
    for _ in 0..clients {
        let [apid, auid, peer] = server.expect("accepted")?[..] else {
            bail!("bad accepted line")
        };
        accepted.push((apid, auid, peer as u16));
    }
    server.expect("closed")?;
    for (_, h) in client_helpers {
        h.finish()?;
    }
    server.finish()?;
    let apid = accepted[0].0;
    let auid = accepted[0].1;

    let mut expected = vec![
        (
            Expected {
                what: "listen by the listener".into(),
                fields: merge(
                    exact(lpid, luid, "pw-listener"),
                    json!({"event": "listen", "role": "listener", "family": listen_family, "state": "LISTEN",
                           "local": endpoint(listen_ip, port), "remote": {"port": 0}}),
                ),
            },
            "listen",
            port,
            0,
        ),
        (
            Expected {
                what: "close of the listener".into(),
                fields: merge(
                    exact(lpid, luid, "pw-listener"),
                    json!({"event": "close", "role": "listener", "family": listen_family, "state": "CLOSE",
                           "old_state": "LISTEN", "local": endpoint(listen_ip, port)}),
                ),
            },
            "close",
            port,
            0,
        ),
    ];
    let mut pids = vec![lpid, apid];
    let mut ports_seen = vec![port];
    for (name, cpid, cuid, lport) in &truth_clients {
        pids.push(*cpid);
        ports_seen.push(*lport);
        if !accepted.iter().any(|(_, _, peer)| peer == lport) {
            bail!("the acceptor never saw client port {lport}");
        }
        let client = exact(*cpid, *cuid, name);
        let acceptor = exact(apid, auid, "pw-acceptor");
        let c_local = endpoint(connect_ip, *lport);
        let c_remote = endpoint(connect_ip, port);
        expected.push((
            Expected {
                what: format!("connect by {name}"),
                fields: merge(client.clone(), json!({"event": "connect", "role": "client", "family": family,
                    "state": "ESTABLISHED", "old_state": "SYN_SENT", "local": c_local, "remote": c_remote})),
            },
            "connect",
            *lport,
            port,
        ));
        expected.push((
            Expected {
                what: format!("accept of {name} by the forked acceptor"),
                fields: merge(
                    acceptor.clone(),
                    json!({"event": "accept", "role": "server", "family": family,
                    "local": c_remote, "remote": c_local}),
                ),
            },
            "accept",
            port,
            *lport,
        ));
        expected.push((
            Expected {
                what: format!("close of {name}'s connection, client side"),
                fields: merge(
                    client,
                    json!({"event": "close", "role": "client", "family": family,
                    "state": "CLOSE", "local": c_local, "remote": c_remote}),
                ),
            },
            "close",
            *lport,
            port,
        ));
        expected.push((
            Expected {
                what: format!("close of {name}'s connection, server side"),
                fields: merge(
                    acceptor,
                    json!({"event": "close", "role": "server", "family": family,
                    "state": "CLOSE", "local": c_remote, "remote": c_local}),
                ),
            },
            "close",
            port,
            *lport,
        ));
    }
    let mut failures = check(tracer, &expected);
    failures.extend(durations_at_least(tracer, &expected, HOLD_MS as f64 * 0.8));
    failures.extend(no_wrong_pids(tracer, &ports_seen, &pids));
    if apid == lpid {
        failures.push("the acceptor is not a separate process".into());
    }
    Ok(failures)
}

/// `--inexact-accept`: in tracepoint mode, no accept syscall is hooked (the attach
/// line names none) and a forked acceptor's connection is attributed to the
/// listener's owner, inexactly; in the other modes nothing changes.
fn inexact_accept(portwatch: &str, mode: &str) -> Result<Vec<String>> {
    let args: Vec<String> = ["--attach", mode, "--no-snapshot", "--inexact-accept"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let tracer = Tracer::start(portwatch, &args, mode)?;
    let hold = HOLD_MS.to_string();
    let mut server = Helper::spawn(&[
        "server",
        "127.0.0.1",
        "0",
        "pw-listener",
        "pw-acceptor",
        "1",
        &hold,
    ])?;
    let [lpid, luid, port] = server.expect("listening")?[..] else {
        bail!("bad listening line")
    };
    let port = port as u16;
    let client = Helper::spawn(&["client", "127.0.0.1", &port.to_string(), "pw-client", &hold])?;
    let [apid, auid, peer] = server.expect("accepted")?[..] else {
        bail!("bad accepted line")
    };
    server.expect("closed")?;
    client.finish()?;
    server.finish()?;
    let owner = if mode == "tracepoint" {
        json!({"pid": lpid, "uid": luid, "comm": "pw-listener", "pid_exact": false})
    } else {
        exact(apid, auid, "pw-acceptor")
    };
    let expected = [(
        Expected {
            what: "accept under --inexact-accept".into(),
            fields: merge(owner, json!({"event": "accept", "role": "server"})),
        },
        "accept",
        port,
        peer as u16,
    )];
    let mut failures = check(&tracer, &expected);
    let attached = tracer
        .stderr()
        .into_iter()
        .find(|l| l.contains("attached"))
        .unwrap_or_default();
    if mode == "tracepoint" && attached.contains("syscalls:") {
        failures.push(format!(
            "--inexact-accept still hooks a syscall: {attached}"
        ));
    }
    let (status, _) = tracer.stop()?;
    if !status.success() {
        failures.push(format!("portwatch --inexact-accept exited {status}"));
    }
    Ok(failures)
}

/// A port nothing listens on: bound (never listened on, so portwatch sees nothing),
/// its number read, and released.
pub fn unused_port(ip: IpAddr) -> Result<u16> {
    Ok(sock::bound(ip)?.1)
}

/// A connect to a port nobody listens on.
fn refused(tracer: &Tracer, addr: &str) -> Result<Vec<String>> {
    let ip: IpAddr = addr.parse()?;
    let closed_port = unused_port(ip)?;
    let mut h = Helper::spawn(&["refused", addr, &closed_port.to_string(), "pw-refused"])?;
    let [pid, uid, lport, errno] = h.expect("refused")?[..] else {
        bail!("bad refused line")
    };
    h.finish()?;
    let client = Client {
        pid,
        uid,
        port: lport as u16,
        comm: "pw-refused",
    };
    failed_connect(
        tracer,
        ip,
        closed_port,
        &client,
        errno,
        libc::ECONNREFUSED,
        "refused",
    )
}

/// A connect whose SYNs the kernel drops (a listener with a full backlog): it
/// times out.
fn timed_out(tracer: &Tracer, addr: &str) -> Result<Vec<String>> {
    let ip: IpAddr = addr.parse()?;
    let mut hole = Helper::spawn_with_stdin(&["blackhole", addr, "pw-blackhole"])?;
    let [hole_pid, hole_uid, port, filler_port] = hole.expect("listening")?[..] else {
        bail!("bad listening line")
    };
    let mut h = Helper::spawn(&["timeout", addr, &port.to_string(), "pw-timeout"])?;
    let [pid, uid, lport, errno] = h.expect("timedout")?[..] else {
        bail!("bad timedout line")
    };
    h.finish()?;
    hole.close_stdin();
    hole.finish()?;
    let client = Client {
        pid,
        uid,
        port: lport as u16,
        comm: "pw-timeout",
    };
    // The filler connection was never accepted: its server side closes with the
    // listener's owner, marked as inferred.
    let unaccepted = [(
        Expected {
            what: "close of a never-accepted connection (owner inferred)".into(),
            fields: json!({"event": "close", "role": "server", "pid": hole_pid, "uid": hole_uid,
                           "comm": "pw-blackhole", "pid_exact": false,
                           "local": {"port": port}, "remote": {"port": filler_port}}),
        },
        "close",
        port as u16,
        filler_port as u16,
    )];
    let mut failures = check(tracer, &unaccepted);
    failures.extend(failed_connect(
        tracer,
        ip,
        port as u16,
        &client,
        errno,
        libc::ETIMEDOUT,
        "timed out",
    )?);
    Ok(failures)
}

/// A client process as it reported itself.
struct Client<'a> {
    pid: u32,
    uid: u32,
    port: u16,
    comm: &'a str,
}

/// Check the connect-failed event of a client whose connect() returned `errno`.
fn failed_connect(
    tracer: &Tracer,
    ip: IpAddr,
    closed_port: u16,
    client: &Client,
    errno: u32,
    want_errno: i32,
    reason: &str,
) -> Result<Vec<String>> {
    if errno != want_errno as u32 {
        bail!(
            "the connect failed with errno {errno}, not {want_errno}: the scenario did not happen"
        );
    }
    let Client {
        pid,
        uid,
        port: lport,
        comm,
    } = *client;
    let expected = [(
        Expected {
            what: format!("connect that failed: {reason}"),
            fields: merge(
                exact(pid, uid, comm),
                json!({"event": "connect-failed", "role": "client",
                       "family": if ip.is_ipv4() { "ipv4" } else { "ipv6" },
                       "state": "CLOSE", "old_state": "SYN_SENT",
                       "local": endpoint(ip, lport), "remote": endpoint(ip, closed_port),
                       "error": {"errno": want_errno, "reason": reason}}),
            ),
        },
        "connect-failed",
        lport,
        closed_port,
    )];
    let mut failures = check(tracer, &expected);
    failures.extend(no_wrong_pids(tracer, &[lport], &[pid]));
    Ok(failures)
}

type Scenario<'a> = (&'a str, Box<dyn Fn(&Tracer) -> Result<Vec<String>> + 'a>);

/// Passed and failed checks.
#[derive(Default, Clone, Copy)]
pub struct Tally {
    pub passed: u32,
    pub failed: u32,
}

impl Tally {
    pub fn record(&mut self, name: &str, failures: Result<Vec<String>>) {
        match failures {
            Ok(f) if f.is_empty() => {
                self.passed += 1;
                println!("ok - {name}");
            }
            Ok(f) => {
                self.failed += 1;
                println!("FAILED - {name}");
                for line in f {
                    println!("    {line}");
                }
            }
            Err(e) => {
                self.failed += 1;
                println!("FAILED - {name}: {e:#}");
            }
        }
    }

    pub fn add(&mut self, other: Tally) {
        self.passed += other.passed;
        self.failed += other.failed;
    }
}

/// The whole ground-truth suite with portwatch attached in `mode`.
pub fn run_mode(portwatch: &str, mode: &str) -> Tally {
    let mut tally = Tally::default();
    let tracer = match Tracer::start(portwatch, &["--attach".into(), mode.into()], mode) {
        Ok(t) => t,
        Err(e) => {
            tally.record(&format!("[{mode}] portwatch starts"), Err(e));
            return tally;
        }
    };
    let scenarios: Vec<Scenario> = vec![
        (
            "ipv4: listener, forked acceptor, 3 client processes",
            Box::new(|t| listener_acceptor_clients(t, "127.0.0.1", "21,0", "127.0.0.1", 3)),
        ),
        (
            "ipv6: listener, forked acceptor, 2 client processes",
            Box::new(|t| listener_acceptor_clients(t, "::1", "0", "::1", 2)),
        ),
        (
            "dual-stack listener, ipv4 client: v4-mapped addresses shown as ipv4",
            Box::new(|t| listener_acceptor_clients(t, "::", "0", "127.0.0.1", 1)),
        ),
        (
            "ipv4: refused connect",
            Box::new(|t| refused(t, "127.0.0.1")),
        ),
        ("ipv6: refused connect", Box::new(|t| refused(t, "::1"))),
        (
            "ipv4: timed-out connect (SYNs dropped)",
            Box::new(|t| timed_out(t, "127.0.0.1")),
        ),
        (
            "process details: exe, cmdline, user, parent, cgroup, container",
            Box::new(investigate::process_details),
        ),
        (
            "a hostile process name is escaped in the table and exact in JSON",
            Box::new(|t| investigate::hostile_name(t, portwatch, mode)),
        ),
        (
            "kernel filters (--port, -6, --pid): only matching events cross the ring buffer",
            Box::new(|_| investigate::kernel_filters(portwatch, mode)),
        ),
        (
            "userspace filters (--comm, --role)",
            Box::new(|_| investigate::userspace_filters(portwatch, mode)),
        ),
        (
            "--inexact-accept: no accept syscall hooked, accept attributed to the listener",
            Box::new(|_| inexact_accept(portwatch, mode)),
        ),
        (
            "existing sockets: portwatch snapshot, and first in live mode",
            Box::new(|_| investigate::snapshot(portwatch, mode)),
        ),
    ];
    // PW_ONLY=WORDS runs only the scenarios whose names contain WORDS (debugging).
    let only = std::env::var("PW_ONLY").unwrap_or_default();
    for (name, scenario) in scenarios.iter().filter(|(n, _)| n.contains(only.as_str())) {
        tally.record(&format!("[{mode}] {name}"), scenario(&tracer));
    }
    let stopped = tracer.stop().map(|(status, stderr)| {
        if status.success() && stderr.iter().any(|l| l.contains("detached")) {
            vec![]
        } else {
            vec![format!("exit {status}, stderr:\n{}", stderr.join("\n"))]
        }
    });
    tally.record(&format!("[{mode}] SIGINT detaches and exits 0"), stopped);
    tally
}
