//! The capability list: enough with every one, and each one needed.
use super::*;

/// Whether `events` hold one event of each expected kind and ports yet.
pub(super) fn all_came(events: &[Value], expected: &[&Expected]) -> bool {
    expected
        .iter()
        .all(|x| !expect::find(events, x.event, x.local, x.remote).is_empty())
}

/// Why the `exe` of the event `x` names is not `want`, if it is not.
pub(super) fn exe_differs(events: &[Value], x: &Expected, want: &Path) -> Option<String> {
    let found = expect::find(events, x.event, x.local, x.remote);
    let exe = found
        .first()
        .map(|e| e["exe"].clone())
        .unwrap_or(Value::Null);
    (exe != json!(want.to_string_lossy()))
        .then(|| format!("{}: exe {exe}, expected {}", x.what, want.display()))
}

/// ExecStart's command line as uid `uid` holding `caps`: a listener of another
/// user than `uid` from before the start, then a client of it; what came of it.
pub(super) fn run_service(
    s: &Setup,
    unit: &Unit,
    uid: u32,
    caps: &[&str],
    name: &str,
) -> Result<Outcome> {
    let setpriv = setpriv()?;
    let state = s.state_dir(name, uid)?;
    let db = state.join("history.db");
    let metrics = SocketAddr::new(LOOPBACK, sock::unused_port(LOOPBACK)?);
    // Of another user than portwatch: root's for uid 65534, 65534's for root.
    let (who, listener_exe) = if uid == 0 {
        let who = As {
            exe: Some(s.helper.clone()),
            uid: Some(NOBODY),
        };
        (who, s.helper.clone())
    } else {
        (As::default(), s.me.clone())
    };
    let mut server = Server::spawn(&ServerSpec {
        who,
        listener: "pw-svc-listen",
        acceptor: "pw-svc-accept",
        connections: 1,
        hold: Hold::Ms(1000),
        ..ServerSpec::new(LOOPBACK)
    })?;
    let port = server.listener.port;
    let mut args = unit.args(&db, metrics)?;
    args.extend(["--print", "json", "--port", &port.to_string()].map(str::to_string));
    let before = programs::ids()?;
    let tracer = match Tracer::start(capped(s, &setpriv, uid, caps, &args)) {
        Ok(tracer) => tracer,
        Err(not_attached) => {
            server.kill();
            // Run again to completion for its exit code and stderr; should it
            // attach this time after all, SIGALRM ends it.
            let again = capped(s, &setpriv, uid, caps, &args);
            // SAFETY: alarm() is async-signal-safe; it survives both execs.
            let again = unsafe {
                again.before_exec(|| {
                    libc::alarm(30);
                    Ok(())
                })
            };
            let out = again.run()?;
            if out.status.success() {
                bail!("did not attach ({not_attached:#}), yet exited 0 when run again");
            }
            return Ok(Outcome::Refused {
                code: out.status.code(),
                stderr: out.stderr,
                leftover: programs::released(&before)?,
            });
        }
    };
    let mut lost = Vec::new();
    let mut client = Client::spawn(
        server.listener.socket_addr(),
        "pw-svc-client",
        Hold::Ms(1000),
    )?;
    let client_end = client.connected()?;
    let (acceptor, _) = server.accepted()?;
    let server_end = End {
        proc: acceptor,
        addr: LOOPBACK,
        port,
    };
    let attach = json!({ "attach": s.mode });
    let connect = expect::connect(&client_end, &server_end).with(attach.clone());
    let accept = expect::accept(&server_end, &client_end).with(attach);
    let events = tracer.wait_for(EVENTS, |e| all_came(e, &[&connect, &accept]));
    for failure in expect::compare(&events, &[connect.clone(), accept.clone()]) {
        lost.push((Fact::Events, failure));
    }
    let exes = [
        (&connect, s.me.as_path()),
        (&accept, listener_exe.as_path()),
    ];
    for (x, exe) in exes {
        if let Some(failure) = exe_differs(&events, x, exe) {
            lost.push((Fact::Exe, failure));
        }
    }
    // The listener from before, as the snapshot at the start lists it: the
    // process read from /proc (no thread, no exact flag).
    let mut snapshot = expect::listen(&server.listener)
        .with(json!({"event": "snapshot", "exe": listener_exe.to_string_lossy()}))
        .named("the listener from before the start");
    snapshot.event = "snapshot";
    if let Some(fields) = snapshot.fields.as_object_mut() {
        fields.remove("tid");
        fields.remove("pid_exact");
    }
    for failure in expect::compare(&events, &[snapshot]) {
        lost.push((Fact::SnapshotOwner, failure));
    }
    match scrape(metrics) {
        Ok(body) if body.contains("portwatch_") => {}
        Ok(_) => lost.push((
            Fact::Metrics,
            format!("{metrics}/metrics has no portwatch_ metric"),
        )),
        Err(e) => lost.push((Fact::Metrics, format!("{metrics}/metrics: {e:#}"))),
    }
    client.finish()?;
    server.finish()?;
    thread::sleep(COMMITTED);
    // systemd stops a service with SIGTERM.
    let stopped = tracer.stop_with(Signal::SIGTERM)?;
    let errors = stopped.stderr.errors()?;
    if !stopped.status.success() || !errors.is_empty() || stopped.stderr.panicked() {
        lost.push((
            Fact::CleanStop,
            format!(
                "exit {} on SIGTERM, stderr {}",
                stopped.status, stopped.stderr
            ),
        ));
    }
    lost.extend(
        history(s, &db, uid, &client_end)
            .err()
            .map(|e| (Fact::History, format!("{e:#}"))),
    );
    let _ = std::fs::remove_dir_all(&state);
    Ok(Outcome::Ran {
        lost,
        stderr: stopped.stderr,
    })
}

/// The database exists, is owned by `uid`, and holds the client's connection.
pub(super) fn history(s: &Setup, db: &Path, uid: u32, client: &End) -> Result<()> {
    let meta = std::fs::metadata(db).with_context(|| format!("{}", db.display()))?;
    if meta.uid() != uid {
        bail!(
            "{} is owned by uid {}, expected {uid}",
            db.display(),
            meta.uid()
        );
    }
    let rows = crate::history::query(
        &s.portwatch.to_string_lossy(),
        db,
        &["--port", &client.port.to_string()],
    )?;
    if !rows
        .iter()
        .any(|r| r["event"] == "connect" && r["pid"] == client.proc.pid)
    {
        bail!(
            "no connect by pid {} on port {} in {}: {rows:?}",
            client.proc.pid,
            client.port,
            db.display()
        );
    }
    Ok(())
}

/// With every capability of the unit: everything delivered.
pub(super) fn enough(s: &Setup, unit: &Unit, uid: u32) -> Result<Vec<String>> {
    let caps: Vec<&str> = unit.caps.iter().map(String::as_str).collect();
    Ok(match run_service(s, unit, uid, &caps, "all")? {
        Outcome::Refused { code, stderr, .. } => {
            vec![format!("did not attach: exit {code:?}, stderr {stderr}")]
        }
        Outcome::Ran { lost, .. } => lost
            .into_iter()
            .map(|(fact, why)| format!("{}: {why}", fact.what()))
            .collect(),
    })
}

/// What losing a capability is known to cost.
#[derive(Debug, Clone, Copy)]
pub(super) enum Loss {
    /// Exit 1 and one error line containing this text.
    Refused(&'static str),
    /// It runs and delivers everything but these.
    Degraded(&'static [Fact]),
}

impl Loss {
    pub(super) fn what(self) -> &'static str {
        match self {
            Loss::Refused(t) if t.contains("CAP_BPF") => {
                "refused: one error line naming CAP_BPF and CAP_PERFMON, exit 1, nothing left loaded"
            }
            Loss::Refused(_) => {
                "refused: one error line about tracefs (root's, 0700), exit 1, nothing left loaded"
            }
            Loss::Degraded([Fact::SnapshotOwner]) => {
                "runs, but other users' sockets from before the start have no owner"
            }
            Loss::Degraded(_) => {
                "runs, but no executable is known and sockets from before the start have no owner"
            }
        }
    }
}

/// Known costs: CAP_BPF and CAP_PERFMON load and attach; tracefs (for
/// tracepoint ids and layouts) is root's, 0700, so uid 65534 needs
/// CAP_DAC_READ_SEARCH to read it, and uid 0 needs it to list /proc/PID/fd
/// (0500) of other users' processes; CAP_SYS_PTRACE lets /proc/PID/exe and
/// /proc/PID/fd/* be read of processes of other users or with capabilities
/// beyond portwatch's (root's, for one).
pub(super) fn known_loss(cap: &str, uid: u32) -> Option<Loss> {
    match (cap, uid) {
        ("CAP_BPF" | "CAP_PERFMON", _) => Some(Loss::Refused("CAP_BPF and CAP_PERFMON")),
        ("CAP_DAC_READ_SEARCH", 0) => Some(Loss::Degraded(&[Fact::SnapshotOwner])),
        ("CAP_DAC_READ_SEARCH", _) => Some(Loss::Refused("tracefs")),
        ("CAP_SYS_PTRACE", _) => Some(Loss::Degraded(&[Fact::Exe, Fact::SnapshotOwner])),
        _ => None,
    }
}

/// Without `cap`, portwatch must not fully work, and must fail as it is known
/// to (or, for a capability not known here, at least clearly).
pub(super) fn needed(s: &Setup, unit: &Unit, uid: u32, cap: &str) -> Result<Vec<String>> {
    let caps: Vec<&str> = unit
        .caps
        .iter()
        .map(String::as_str)
        .filter(|c| *c != cap)
        .collect();
    let name = format!("without-{}", cap.to_lowercase());
    let known = known_loss(cap, uid);
    let mut failures = Vec::new();
    match run_service(s, unit, uid, &caps, &name)? {
        Outcome::Ran { lost, .. } if lost.is_empty() => failures.push(format!(
            "{cap} is not needed: as uid {uid} without it portwatch still does everything"
        )),
        Outcome::Ran { lost, stderr } => {
            let facts: BTreeSet<Fact> = lost.iter().map(|(f, _)| *f).collect();
            println!(
                "# as uid {uid} without {cap}: runs, without {}",
                facts
                    .iter()
                    .map(|f| f.what())
                    .collect::<Vec<_>>()
                    .join(", ")
            );
            if stderr.panicked() {
                failures.push(format!("panicked: {stderr}"));
            }
            // What is lost must be said, naming the capability.
            let warned = stderr
                .parsed()
                .unwrap_or_default()
                .iter()
                .any(|l| matches!(l, Line::Warning(w) if w.contains(cap)));
            if !warned {
                failures.push(format!("no warning names {cap}: {stderr}"));
            }
            let unexpected = match known {
                Some(Loss::Degraded(expected)) if facts != expected.iter().copied().collect() => {
                    Some(format!("expected to lose only {expected:?}, lost:"))
                }
                Some(Loss::Refused(_)) => {
                    Some("expected a refusal, but it attached and lost:".to_string())
                }
                _ => None,
            };
            if let Some(unexpected) = unexpected {
                failures.push(unexpected);
                failures.extend(lost.iter().map(|(f, why)| format!("  {f:?}: {why}")));
            }
        }
        Outcome::Refused {
            code,
            stderr,
            leftover,
        } => {
            println!("# as uid {uid} without {cap}: refused, exit {code:?}: {stderr}");
            failures.extend(leftover);
            if stderr.panicked() {
                failures.push(format!("panicked: {stderr}"));
            }
            let line = match stderr.single_line() {
                Some(Line::Error(m)) => Some(m),
                _ => None,
            };
            if code != Some(1) || line.is_none() {
                failures.push(format!(
                    "expected exit 1 and one error line, got exit {code:?}, stderr {stderr}"
                ));
            }
            match known {
                Some(Loss::Refused(text)) if !line.is_some_and(|m| m.contains(text)) => {
                    failures.push(format!("the error line does not mention {text}: {stderr}"))
                }
                Some(Loss::Degraded(expected)) => failures.push(format!(
                    "expected it to run without {expected:?}, but it was refused"
                )),
                _ => {}
            }
        }
    }
    Ok(failures)
}
