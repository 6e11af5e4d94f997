//! Baselines against ground truth: learnt from fixture services (two executables,
//! two users, loopback and any-address binds, a forked worker); then each kind of
//! departure must come out as exactly one drift with the right kind, pid, exe and
//! port, and what is expected as none. `baseline check` exit codes, and bad
//! baseline files refused with their line.
use std::{
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    thread,
    time::Duration,
};

use anyhow::{Context, Result};
use serde_json::Value;

use crate::{
    checks::Checks,
    harness::{
        helpers::{As, Client, Hold, Server, ServerSpec, LOOPBACK},
        launch::{discard, Launch},
        stderr::Line,
        tracer::Tracer,
    },
    sock,
};

const NOBODY: u32 = 65534;

pub fn record_all(checks: &mut Checks, portwatch: &str, loadgen: Option<&str>, mode: &str) {
    checks.run(
        &format!("[{mode}] baseline: learnt from fixture services; each departure one drift of the right kind, pid, exe and port; nothing for what is expected"),
        || drift(portwatch, loadgen, mode),
    );
    checks.run(
        "baseline: a UDP server learnt as a udp listener; a TCP listener on its port does not stand in for it; a new UDP server is unexpected",
        || crate::baseline_udp::udp_listeners(portwatch),
    );
    checks.run(
        "baseline: bad baseline files refused with their line (exit 2); check exit codes 0, 1, 2",
        || bad_files(portwatch),
    );
}

/// Two copies of this test's binary, as two programs a user may run.
struct Programs {
    dir: PathBuf,
    a: PathBuf,
    b: PathBuf,
}

impl Programs {
    fn new() -> Result<Programs> {
        let dir = crate::harness::scratch::fresh_dir("baseline")?;
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755))?;
        let me = std::env::current_exe()?;
        let copy = |name: &str| -> Result<PathBuf> {
            let path = dir.join(name);
            std::fs::copy(&me, &path)?;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))?;
            Ok(path)
        };
        Ok(Programs {
            a: copy("pw-svc-a")?,
            b: copy("pw-svc-b")?,
            dir,
        })
    }

    fn text(path: &Path) -> String {
        path.display().to_string()
    }
}

/// A service: `exe` run as `uid` listening on `addr:port` (0: any port), its forked
/// worker accepting and holding connections until killed.
fn service(exe: &Path, uid: u32, addr: std::net::IpAddr, port: u16, name: &str) -> Result<Server> {
    let ports = port.to_string();
    Server::spawn(&ServerSpec {
        who: As {
            exe: Some(exe.to_path_buf()),
            uid: Some(uid),
        },
        ports: &ports,
        listener: name,
        connections: 1_000_000,
        hold: Hold::UntilKilled,
        ..ServerSpec::new(addr)
    })
}

const ANY: std::net::IpAddr = std::net::IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED);

/// `portwatch ARGS`: exit code and stderr lines.
fn run(
    portwatch: &str,
    args: &[&str],
) -> Result<(Option<i32>, crate::harness::stderr::Stderr, Vec<u8>)> {
    let out = Launch::new(portwatch).args(args).run()?;
    Ok((out.status.code(), out.stderr, out.stdout))
}

/// The drift records among `events`.
fn drifts(events: &[Value]) -> Vec<&Value> {
    events.iter().filter(|e| e["event"] == "drift").collect()
}

/// Exactly one drift of `kind` on `port`, from `pid` running `exe`.
fn one_drift(
    events: &[Value],
    kind: &str,
    port: u16,
    pid: Option<u32>,
    exe: Option<&str>,
) -> Vec<String> {
    let found: Vec<&Value> = drifts(events)
        .into_iter()
        .filter(|d| d["drift"]["kind"] == kind && d["drift"]["port"] == port)
        .collect();
    let [d] = found.as_slice() else {
        return vec![format!(
            "{} `{kind}` drifts on port {port}, expected 1 (all drift: {:?})",
            found.len(),
            drifts(events)
        )];
    };
    let mut failures = Vec::new();
    if let Some(pid) = pid {
        if d["trigger"]["pid"] != pid {
            failures.push(format!(
                "{kind} on {port}: trigger pid {}, expected {pid}",
                d["trigger"]["pid"]
            ));
        }
    }
    if let Some(exe) = exe {
        if d["trigger"]["exe"] != exe {
            failures.push(format!(
                "{kind} on {port}: trigger exe {}, expected {exe}",
                d["trigger"]["exe"]
            ));
        }
    }
    if d["drift"]["reason"].as_str().is_none_or(str::is_empty) {
        failures.push(format!("{kind} on {port}: no reason"));
    }
    failures
}

/// With the load generator (this machine): its listener and its connections to it
/// are learnt too, and 1,000 more of them later must make no drift.
fn drift(portwatch: &str, loadgen: Option<&str>, mode: &str) -> Result<Vec<String>> {
    let p = Programs::new()?;
    let (a, b) = (Programs::text(&p.a), Programs::text(&p.b));
    // The fixture: A (root, loopback) with its worker, B (nobody, any address),
    // C (program B as root, loopback), which will stop.
    let mut svc_a = service(&p.a, 0, LOOPBACK, 0, "pw-svc-a")?;
    let svc_b = service(&p.b, NOBODY, ANY, 0, "pw-svc-b")?;
    let svc_c = service(&p.b, 0, LOOPBACK, 0, "pw-svc-c")?;
    let (pa, pb, pc) = (
        svc_a.listener.port,
        svc_b.listener.port,
        svc_c.listener.port,
    );
    let spare = sock::unused_port(LOOPBACK)?;
    let load_port = sock::unused_port(LOOPBACK)?;
    let ports: Vec<String> = [pa, pb, pc, spare, load_port]
        .iter()
        .map(u16::to_string)
        .collect();
    let mut filter: Vec<&str> = Vec::new();
    for port in &ports {
        filter.extend(["--port", port.as_str()]);
    }
    let file = p.dir.join("baseline.toml");
    let file_text = file.display().to_string();
    // Learnt from the snapshot, with --outbound from a few seconds of live events
    // in which a client of A connects.
    let mut learning = Launch::trace(portwatch, mode)
        .args([
            "baseline",
            "learn",
            "--out",
            &file_text,
            "--duration",
            "5s",
            "--outbound",
        ])
        .args(&filter)
        .start(discard)?;
    let mut client = Client::spawn(svc_a.listener.socket_addr(), "pw-learnt", Hold::Ms(500))?;
    client.connected()?;
    svc_a.accepted()?;
    client.finish()?;
    if let Some(loadgen) = loadgen {
        crate::heavy::load(loadgen, 50, load_port)?;
    }
    let status = learning
        .wait_exit(Duration::from_secs(60), || {})?
        .context("baseline learn did not end after its duration")?;
    let learnt = learning.finished(status)?;
    let (code, stderr) = (learnt.status.code(), learnt.stderr);
    let mut failures = Vec::new();
    if code != Some(0) {
        failures.push(format!("baseline learn exited {code:?}: {stderr}"));
    }
    let text = std::fs::read_to_string(&file).context("the learnt baseline")?;
    for (exe, user, bind, port) in [
        (&a, "root", "loopback", pa),
        (&b, "nobody", "any", pb),
        (&b, "root", "loopback", pc),
    ] {
        let entry = format!("exe = \"{exe}\"\nuser = \"{user}\"\nprotocol = \"tcp\"\nfamily = \"ipv4\"\nbind = \"{bind}\"\nport = {port}\n");
        if !text.contains(&entry) {
            failures.push(format!("the learnt baseline lacks {entry:?}:\n{text}"));
        }
    }
    let me = std::env::current_exe()?.display().to_string();
    if !text.contains(&format!(
        "[[outbound]]\nexe = \"{me}\"\nuser = \"root\"\nprotocol = \"tcp\"\nport = {pa}\n"
    )) {
        failures.push(format!(
            "the learnt baseline lacks the outbound connection to {pa}:\n{text}"
        ));
    }
    let mut check = vec!["baseline", "check", &file_text];
    check.extend(&filter);
    let (code, stderr, stdout) = run(portwatch, &check)?;
    if code != Some(0) {
        failures.push(format!(
            "baseline check right after learning: exit {code:?}, {stderr}, {}",
            String::from_utf8_lossy(&stdout)
        ));
    }
    let live = Live {
        file: &file_text,
        filter: &filter,
        spare,
        load: loadgen.map(|l| (l, load_port)),
    };
    failures.extend(departures(
        portwatch,
        mode,
        &p,
        &live,
        (svc_a, svc_b, svc_c),
    )?);
    let _ = std::fs::remove_dir_all(&p.dir);
    Ok(failures)
}

/// Live with the baseline: what is expected makes no drift, each departure one.
/// What the live part of the check works with.
struct Live<'a> {
    /// The learnt baseline.
    file: &'a str,
    /// `--port` for each port of the check.
    filter: &'a [&'a str],
    /// A port nothing is expected on.
    spare: u16,
    /// The load generator and the port it learnt on, where there is one.
    load: Option<(&'a str, u16)>,
}

fn departures(
    portwatch: &str,
    mode: &str,
    p: &Programs,
    live: &Live<'_>,
    (svc_a, svc_b, svc_c): (Server, Server, Server),
) -> Result<Vec<String>> {
    let Live {
        file,
        filter,
        spare,
        load,
    } = *live;
    let a = Programs::text(&p.a);
    let (pa, pb, pc) = (
        svc_a.listener.port,
        svc_b.listener.port,
        svc_c.listener.port,
    );
    let launch = Launch::trace(portwatch, mode)
        .args(["--baseline", file, "--baseline-interval", "1"])
        .args(filter);
    let tracer = Tracer::start(launch)?;
    let mut failures = Vec::new();
    // Expected: A restarted on its port, and connections from its expected client.
    svc_a.kill();
    let mut svc_a = service(&p.a, 0, LOOPBACK, pa, "pw-svc-a")?;
    // Each held long enough for portwatch to read its executable (a helper's name
    // is not its executable's, so by name alone it would be a stranger).
    for i in 0..20 {
        let mut c = Client::spawn(
            svc_a.listener.socket_addr(),
            &format!("pw-ok-{i}"),
            Hold::Ms(300),
        )?;
        c.connected()?;
        svc_a.accepted()?;
        c.finish()?;
    }
    // An expected program's 1,000 connections to its own expected listener.
    if let Some((loadgen, port)) = load {
        crate::heavy::load(loadgen, 1_000, port)?;
    }
    thread::sleep(Duration::from_millis(500));
    let quiet = tracer.events();
    if !drifts(&quiet).is_empty() {
        failures.push(format!(
            "drift for what the baseline expects: {:?}",
            drifts(&quiet)
        ));
    }
    // Departures, one of each kind.
    let extra = service(&p.a, 0, LOOPBACK, spare, "pw-extra")?;
    svc_b.kill();
    let other = service(&p.a, NOBODY, ANY, pb, "pw-other")?;
    svc_a.kill();
    let wider = service(&p.a, 0, ANY, pa, "pw-wider")?;
    svc_c.kill();
    let mut stray = Client::spawn(other.listener.socket_addr(), "pw-stray", Hold::Ms(500))?;
    let stray_pid = stray.connected()?.proc.pid;
    stray.finish()?;
    let me = std::env::current_exe()?.display().to_string();
    // C stopped; B stopped too, its port taken by program A: both are missing.
    let events = tracer.wait_for(Duration::from_secs(10), |e| drifts(e).len() >= 6);
    failures.extend(one_drift(
        &events,
        "unexpected-listener",
        spare,
        Some(extra.listener.proc.pid),
        Some(&a),
    ));
    failures.extend(one_drift(
        &events,
        "unexpected-owner",
        pb,
        Some(other.listener.proc.pid),
        Some(&a),
    ));
    failures.extend(one_drift(
        &events,
        "wider-bind",
        pa,
        Some(wider.listener.proc.pid),
        Some(&a),
    ));
    failures.extend(one_drift(&events, "missing-listener", pc, None, None));
    failures.extend(one_drift(&events, "missing-listener", pb, None, None));
    failures.extend(one_drift(
        &events,
        "unexpected-outbound",
        pb,
        Some(stray_pid),
        Some(&me),
    ));
    let all = drifts(&events).len();
    if all != 6 {
        failures.push(format!(
            "{all} drift records, expected 6: {:?}",
            drifts(&events)
        ));
    }
    for s in [extra, other, wider] {
        s.kill();
    }
    let stopped = tracer.stop()?;
    if !stopped.status.success() {
        failures.push(format!("portwatch --baseline exited {}", stopped.status));
    }
    Ok(failures)
}

/// Bad files: each refused by `baseline check` and by `--baseline` with exit 2
/// and one line naming the file and line; a missing file too.
fn bad_files(portwatch: &str) -> Result<Vec<String>> {
    let dir = crate::harness::scratch::fresh_dir("baseline-bad")?;
    let good = "version = 1\n\n[[listener]]\nexe = \"/usr/sbin/sshd\"\nfamily = \"ipv4\"\nbind = \"any\"\nport = 22\n";
    let cases = [
        ("unknown key", good.replace("port = 22", "port = 22\nprot = 1"), 8),
        ("wrong type", good.replace("port = 22", "port = [22]"), 7),
        ("port out of range", good.replace("port = 22", "port = 65536"), 3),
        ("invalid address", good.replace("bind = \"any\"", "bind = \"10.0.0.300\""), 3),
        ("duplicate entry", format!("{good}\n[[listener]]\nexe = \"/usr/sbin/sshd\"\nfamily = \"ipv4\"\nbind = \"any\"\nport = 22\n"), 9),
    ];
    let mut failures = Vec::new();
    for (what, text, line) in &cases {
        let path = dir.join(format!("{}.toml", what.replace(' ', "-")));
        std::fs::write(&path, text)?;
        let path_text = path.display().to_string();
        let at = format!("{path_text}:{line}:");
        for args in [
            vec!["baseline", "check", &path_text],
            vec!["--baseline", &path_text],
        ] {
            let (code, stderr, _) = run(portwatch, &args)?;
            match (code, stderr.single_line()) {
                (Some(2), Some(Line::Error(m))) if m.starts_with(&at) => {}
                _ => failures.push(format!("{what} ({args:?}): exit {code:?}, expected 2 and a line starting {at:?}: {stderr}")),
            }
        }
    }
    let missing = dir.join("missing.toml").display().to_string();
    let (code, _, _) = run(portwatch, &["baseline", "check", &missing])?;
    if code != Some(2) {
        failures.push(format!(
            "check of a missing file: exit {code:?}, expected 2"
        ));
    }
    // Exit 1 on drift: a baseline expecting a listener nobody runs.
    let port = sock::unused_port(LOOPBACK)?;
    let expects = dir.join("expects.toml");
    std::fs::write(
        &expects,
        good.replace("port = 22", &format!("port = {port}")),
    )?;
    let expects_text = expects.display().to_string();
    let port_text = port.to_string();
    let (code, stderr, stdout) = run(
        portwatch,
        &["baseline", "check", &expects_text, "--port", &port_text],
    )?;
    let out = String::from_utf8_lossy(&stdout);
    if code != Some(1) || !out.contains("missing-listener") {
        failures.push(format!("check with a listener missing: exit {code:?}, expected 1 and a missing-listener line: {out} {stderr}"));
    }
    let _ = std::fs::remove_dir_all(&dir);
    Ok(failures)
}
