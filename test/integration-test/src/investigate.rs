//! Ground truth for the investigator features: process details, hostile names,
//! filters (proven by what is absent as well as what is present), and the sockets
//! that existed before portwatch started.
use std::{
    io::{BufRead, BufReader, Read},
    net::IpAddr,
    path::PathBuf,
    process::{Command, Stdio},
    sync::mpsc,
    thread,
    time::Duration,
};

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};

use crate::{
    expect::{find, port, Expected},
    scenarios::{check, exact, merge, unused_port, Helper},
    tracer::Tracer,
};

const LOOPBACK: &str = "127.0.0.1";

/// A server (listener + forked acceptor) with `clients` client processes that all
/// finish; returns the listener port and each client's (pid, local port).
fn traffic(addr: &str, clients: &[&str]) -> Result<(u16, Vec<(u32, u16)>)> {
    let mut server = Helper::spawn(&[
        "server",
        addr,
        "0",
        "pw-listener",
        "pw-acceptor",
        &clients.len().to_string(),
        "50",
    ])?;
    let [_, _, port] = server.expect("listening")?[..] else {
        bail!("bad listening line")
    };
    let mut result = Vec::new();
    for name in clients {
        let mut c = Helper::spawn(&["client", addr, &port.to_string(), name, "50"])?;
        let [pid, _, lport] = c.expect("connected")?[..] else {
            bail!("bad connected line")
        };
        c.finish()?;
        result.push((pid, lport as u16));
    }
    server.finish()?;
    Ok((port as u16, result))
}

/// `N events, L lost, R received from the kernel` from portwatch's last stderr line.
fn counts(stderr: &[String]) -> Result<(u64, u64)> {
    let line = stderr
        .iter()
        .find(|l| l.contains("detached;"))
        .context("no `detached` line on stderr")?;
    let number_before = |word: &str| -> Option<u64> {
        let words: Vec<&str> = line
            .split([' ', ',', ';'])
            .filter(|w| !w.is_empty())
            .collect();
        let i = words.iter().position(|w| *w == word)?;
        words.get(i.checked_sub(1)?)?.parse().ok()
    };
    match (number_before("events"), number_before("received")) {
        (Some(printed), Some(received)) => Ok((printed, received)),
        _ => bail!("cannot read the counts in `{line}`"),
    }
}

fn cgroup2_root() -> Option<PathBuf> {
    let mounts = std::fs::read_to_string("/proc/self/mounts").ok()?;
    mounts.lines().find_map(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        (f.get(2) == Some(&"cgroup2")).then(|| PathBuf::from(f[1]))
    })
}

/// A client in a cgroup named like a Docker container's, with a known command line.
pub fn process_details(tracer: &Tracer) -> Result<Vec<String>> {
    let me = std::process::id();
    let container = format!("{:064x}", 0xfeed_0000_0000u64 + me as u64);
    let relative = format!("/portwatch-test-{me}/docker-{container}.scope");
    let cgroup_dir = cgroup2_root().map(|root| root.join(relative.trim_start_matches('/')));
    let cgroup_dir = match cgroup_dir {
        Some(dir) => match std::fs::create_dir_all(&dir) {
            Ok(()) => Some(dir),
            Err(e) => {
                println!(
                    "# cgroup part not checked: cannot create {}: {e}",
                    dir.display()
                );
                None
            }
        },
        None => {
            println!("# cgroup part not checked: cgroup v2 is not mounted");
            None
        }
    };
    let mut server = Helper::spawn(&[
        "server",
        LOOPBACK,
        "0",
        "pw-listener",
        "pw-acceptor",
        "1",
        "50",
    ])?;
    let [_, _, port] = server.expect("listening")?[..] else {
        bail!("bad listening line")
    };
    let port_s = port.to_string();
    let args = ["client", LOOPBACK, &port_s, "pw-detailed", "300"];
    let env: Vec<(&str, &str)> = cgroup_dir
        .as_ref()
        .map(|d| vec![("PW_CGROUP", d.to_str().unwrap())])
        .unwrap_or_default();
    let mut client = Helper::spawn_with(&args, &env, Stdio::null())?;
    let [pid, uid, lport] = client.expect("connected")?[..] else {
        bail!("bad connected line")
    };
    client.finish()?;
    server.finish()?;
    let exe = std::env::current_exe()?.to_string_lossy().into_owned();
    let mut cmdline = vec![json!("/proc/self/exe"), json!("helper")];
    cmdline.extend(args.iter().map(|a| json!(a)));
    let user = nix::unistd::User::from_uid(uid.into())
        .ok()
        .flatten()
        .map(|u| u.name);
    let mut fields = merge(
        exact(pid, uid, "pw-detailed"),
        json!({"event": "connect", "exe": exe, "cmdline": cmdline, "user": user,
               "ppid": me, "process_missing": null}),
    );
    if cgroup_dir.is_some() {
        fields = merge(
            fields,
            json!({"cgroup": relative, "container_id": container}),
        );
    }
    let failures = check(
        tracer,
        &[(
            Expected {
                what: "connect by a client with known details".into(),
                fields,
            },
            "connect",
            lport as u16,
            port as u16,
        )],
    );
    if let Some(dir) = cgroup_dir {
        let _ = std::fs::remove_dir(&dir);
        let _ = std::fs::remove_dir(dir.parent().unwrap());
    }
    Ok(failures)
}

/// A process named with an escape sequence: the table shows it escaped (no raw
/// control byte reaches the terminal), JSON carries it exactly and stays valid.
pub fn hostile_name(tracer: &Tracer, portwatch: &str, mode: &str) -> Result<Vec<String>> {
    let hostile = "pw\x1b[31mevil\x07";
    let server_port = unused_port(LOOPBACK.parse()?)?;
    let mut table = Command::new(portwatch)
        .args([
            "--attach",
            mode,
            "--format",
            "table",
            "--no-snapshot",
            "--color",
            "never",
        ])
        .args(["--port", &server_port.to_string()])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    let mut out = table.stdout.take().unwrap();
    let reader = thread::spawn(move || {
        let mut bytes = Vec::new();
        let _ = out.read_to_end(&mut bytes);
        bytes
    });
    let (tx, rx) = mpsc::channel();
    let err = table.stderr.take().unwrap();
    thread::spawn(move || {
        for line in BufReader::new(err).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    // Warnings may come first; wait for the `attached` line itself.
    let attached = loop {
        match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(line) if line.contains("attached") => break true,
            Ok(_) => continue,
            Err(_) => break false,
        }
    };
    if !attached {
        let _ = table.kill();
        bail!("the table-format portwatch did not attach");
    }
    let (pid, uid, lport) = traffic_on(LOOPBACK, server_port, hostile)?;
    // JSON: exact name, valid lines (the tracer rejects any invalid one).
    let mut failures = check(
        tracer,
        &[(
            Expected {
                what: "connect by a hostile name, JSON".into(),
                fields: exact(pid, uid, hostile),
            },
            "connect",
            lport,
            server_port,
        )],
    );
    thread::sleep(Duration::from_millis(300));
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(table.id() as i32),
        nix::sys::signal::Signal::SIGINT,
    )?;
    table.wait()?;
    let bytes = reader.join().unwrap();
    let text = String::from_utf8_lossy(&bytes);
    if bytes.iter().any(|b| *b == 0x1b || *b == 0x07) {
        failures.push("a raw control byte reached the table output".into());
    }
    if !text.contains(&format!("{pid}/pw\\x1b[31mevil\\x07")) {
        failures.push(format!("the escaped name is not in the table:\n{text}"));
    }
    Ok(failures)
}

/// `--port P1 --port P2 -6`: IPv6 traffic on P1 is shown; IPv4 traffic on P2 (wrong
/// family) and IPv6 traffic on P3 (wrong port) are not, and were never received.
/// `--pid X`: only client X's events.
pub fn kernel_filters(portwatch: &str, mode: &str) -> Result<Vec<String>> {
    let mut failures = Vec::new();
    let v6: IpAddr = "::1".parse()?;
    let (p1, p2) = (unused_port(v6)?, unused_port(LOOPBACK.parse()?)?);
    let args: Vec<String> = ["--attach", mode, "--no-snapshot", "-6", "--port"]
        .iter()
        .map(|s| s.to_string())
        .chain([p1.to_string(), "--port".into(), p2.to_string()])
        .collect();
    let tracer = Tracer::start(portwatch, &args, mode)?;
    let kept = traffic_on("::1", p1, "pw-kept")?;
    let dropped_family = traffic_on(LOOPBACK, p2, "pw-v4")?;
    let (p3, dropped_port) = traffic("::1", &["pw-other-port"])?;
    let want_kept = [
        ("listen", p1, 0),
        ("connect", kept.2, p1),
        ("accept", p1, kept.2),
    ];
    tracer.wait_for(Duration::from_secs(10), |ev| {
        want_kept
            .iter()
            .all(|(k, l, r)| !find(ev, k, *l, *r).is_empty())
            && find(ev, "close", p1, 0).len() == 1
    });
    thread::sleep(Duration::from_millis(300));
    let events = tracer.events();
    for (k, l, r) in want_kept {
        if find(&events, k, l, r).is_empty() {
            failures.push(format!("--port/-6: expected `{k}` {l} -> {r} is missing"));
        }
    }
    for e in &events {
        let ports = [port(e, "local"), port(e, "remote")];
        if ports.contains(&p2) || ports.contains(&dropped_family.2) {
            failures.push(format!("-6 let an IPv4 event through: {e}"));
        }
        if ports.contains(&p3) || ports.contains(&dropped_port[0].1) {
            failures.push(format!("--port let another port through: {e}"));
        }
        if e["family"] != "ipv6" {
            failures.push(format!("-6 let a non-IPv6 event through: {e}"));
        }
    }
    let shown = events.len() as u64;
    let (_, stderr) = tracer.stop()?;
    let (printed, received) = counts(&stderr)?;
    if printed != shown || received != printed {
        failures.push(format!(
            "kernel filters: {received} events received from the kernel, {printed} printed, {shown} seen: filtered events crossed the ring buffer"
        ));
    }

    // --pid: a client that waits for the tracer before connecting.
    let server_port = unused_port(LOOPBACK.parse()?)?;
    let mut server = Helper::spawn(&[
        "server",
        LOOPBACK,
        &server_port.to_string(),
        "pw-listener",
        "pw-acceptor",
        "2",
        "50",
    ])?;
    server.expect("listening")?;
    let port_s = server_port.to_string();
    let mut chosen = Helper::spawn_with(
        &["client", LOOPBACK, &port_s, "pw-chosen", "50"],
        &[("PW_WAIT", "1")],
        Stdio::piped(),
    )?;
    let [chosen_pid] = chosen.expect("ready")?[..] else {
        bail!("bad ready line")
    };
    let args = vec![
        "--attach".into(),
        mode.into(),
        "--no-snapshot".into(),
        "--pid".into(),
        chosen_pid.to_string(),
    ];
    let tracer = Tracer::start(portwatch, &args, mode)?;
    chosen.send("go")?;
    let [_, _, chosen_port] = chosen.expect("connected")?[..] else {
        bail!("bad connected line")
    };
    chosen.finish()?;
    let mut other = Helper::spawn(&["client", LOOPBACK, &port_s, "pw-unchosen", "50"])?;
    other.expect("connected")?;
    other.finish()?;
    server.finish()?;
    tracer.wait_for(Duration::from_secs(10), |ev| {
        !find(ev, "close", chosen_port as u16, server_port).is_empty()
    });
    thread::sleep(Duration::from_millis(300));
    let events = tracer.events();
    let shown = events.len() as u64;
    for (kind, l, r) in [
        ("connect", chosen_port as u16, server_port),
        ("close", chosen_port as u16, server_port),
    ] {
        if find(&events, kind, l, r).is_empty() {
            failures.push(format!("--pid: expected `{kind}` {l} -> {r} is missing"));
        }
    }
    for e in &events {
        if e["pid"] != chosen_pid {
            failures.push(format!(
                "--pid {chosen_pid} let another process through: {e}"
            ));
        }
    }
    let (_, stderr) = tracer.stop()?;
    let (printed, received) = counts(&stderr)?;
    if printed != shown || received != printed {
        failures.push(format!(
            "--pid: {received} events received from the kernel, {printed} printed, {shown} seen"
        ));
    }
    Ok(failures)
}

/// A server on `port` and one client named `name`; the client's (pid, uid, local
/// port).
fn traffic_on(addr: &str, port: u16, name: &str) -> Result<(u32, u32, u16)> {
    let mut server = Helper::spawn(&[
        "server",
        addr,
        &port.to_string(),
        "pw-listener",
        "pw-acceptor",
        "1",
        "50",
    ])?;
    server.expect("listening")?;
    let mut c = Helper::spawn(&["client", addr, &port.to_string(), name, "50"])?;
    let [pid, uid, lport] = c.expect("connected")?[..] else {
        bail!("bad connected line")
    };
    c.finish()?;
    server.finish()?;
    Ok((pid, uid, lport as u16))
}

/// `--comm pw-keep --role client`: only the client pw-keep's events, though the
/// kernel delivered the others (these filters run in userspace).
pub fn userspace_filters(portwatch: &str, mode: &str) -> Result<Vec<String>> {
    let args = vec![
        "--attach".into(),
        mode.into(),
        "--no-snapshot".into(),
        "--comm".into(),
        "pw-keep".into(),
        "--role".into(),
        "client".into(),
    ];
    let tracer = Tracer::start(portwatch, &args, mode)?;
    let (port, clients) = traffic(LOOPBACK, &["pw-keep", "pw-drop"])?;
    let (keep_pid, keep_port) = clients[0];
    tracer.wait_for(Duration::from_secs(10), |ev| {
        !find(ev, "close", keep_port, port).is_empty()
    });
    thread::sleep(Duration::from_millis(300));
    let events = tracer.events();
    let mut failures = Vec::new();
    for kind in ["connect", "close"] {
        if find(&events, kind, keep_port, port).is_empty() {
            failures.push(format!("expected `{kind}` of pw-keep is missing"));
        }
    }
    for e in &events {
        if e["comm"] != "pw-keep" || e["role"] != "client" || e["pid"] != keep_pid {
            failures.push(format!("--comm/--role let this through: {e}"));
        }
    }
    let (_, stderr) = tracer.stop()?;
    let (printed, received) = counts(&stderr)?;
    if received <= printed {
        failures.push(format!(
            "userspace filters: {received} received, {printed} printed; the dropped events should have been received"
        ));
    }
    Ok(failures)
}

/// A listener and a connection that exist before portwatch starts: `portwatch
/// snapshot` lists them with their processes, and live mode prints them first.
pub fn snapshot(portwatch: &str, mode: &str) -> Result<Vec<String>> {
    let mut server = Helper::spawn(&[
        "server",
        LOOPBACK,
        "0",
        "pw-early-srv",
        "pw-early-acc",
        "1",
        // Both hold their sockets until they are killed at the end.
        "pause",
    ])?;
    let [lpid, luid, port] = server.expect("listening")?[..] else {
        bail!("bad listening line")
    };
    let port = port as u16;
    let mut client = Helper::spawn(&[
        "client",
        LOOPBACK,
        &port.to_string(),
        "pw-early-cli",
        "pause",
    ])?;
    let [cpid, cuid, lport] = client.expect("connected")?[..] else {
        bail!("bad connected line")
    };
    let [apid, auid, _] = server.expect("accepted")?[..] else {
        bail!("bad accepted line")
    };
    let lport = lport as u16;

    let out = Command::new(portwatch)
        .args(["snapshot", "--format", "json", "--port", &port.to_string()])
        .output()?;
    let mut failures = Vec::new();
    if !out.status.success() {
        failures.push(format!(
            "portwatch snapshot failed: {}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    let events: Vec<Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(serde_json::from_str)
        .collect::<Result<_, _>>()
        .context("snapshot JSON")?;
    let snap = |kind: &str, l: u16, r: u16, fields: Value| -> Vec<String> {
        let found = find(&events, kind, l, r);
        match found.as_slice() {
            [e] => {
                let mut diffs = Vec::new();
                crate::expect::mismatches(e, &fields, "", &mut diffs);
                diffs
                    .into_iter()
                    .map(|d| format!("snapshot {l} -> {r}: {d}"))
                    .collect()
            }
            other => vec![format!(
                "snapshot {l} -> {r}: {} events, expected one",
                other.len()
            )],
        }
    };
    // The listening socket is shared by the listener and its forked acceptor: the
    // lowest pid is named, marked inexact.
    failures.extend(snap(
        "snapshot",
        port,
        0,
        json!({"role": "listener", "state": "LISTEN",
        "pid": lpid, "uid": luid, "comm": "pw-early-srv", "pid_exact": false, "attach": null,
        "local": {"addr": LOOPBACK, "port": port}}),
    ));
    failures.extend(snap(
        "snapshot",
        port,
        lport,
        json!({"role": "server", "state": "ESTABLISHED",
        "pid": apid, "uid": auid, "comm": "pw-early-acc", "pid_exact": true}),
    ));
    failures.extend(snap(
        "snapshot",
        lport,
        port,
        json!({"role": "client", "state": "ESTABLISHED",
        "pid": cpid, "uid": cuid, "comm": "pw-early-cli", "pid_exact": true,
        "exe": std::env::current_exe()?.to_string_lossy()}),
    ));
    if events.len() != 3 {
        failures.push(format!(
            "--port {port}: {} snapshot events, expected 3",
            events.len()
        ));
    }

    // Live mode prints them first, marked snapshot, with the attach mode.
    let tracer = Tracer::start(
        portwatch,
        &[
            "--attach".into(),
            mode.into(),
            "--port".into(),
            port.to_string(),
        ],
        mode,
    )?;
    let live = tracer.wait_for(Duration::from_secs(20), |ev| ev.len() >= 3);
    let first_three: Vec<&Value> = live.iter().take(3).collect();
    let (_, stderr) = tracer.stop()?;
    if first_three.len() != 3
        || first_three
            .iter()
            .any(|e| e["event"] != "snapshot" || e["attach"] != mode)
    {
        failures.push(format!(
            "live mode did not start with the 3 snapshot events: {live:?}; portwatch said: {stderr:?}"
        ));
    }
    client.kill();
    server.kill();
    Ok(failures)
}
