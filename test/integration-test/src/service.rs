//! portwatch as a service, as deploy/ installs it. The systemd unit
//! (deploy/systemd/portwatch.service) is checked by systemd's own parser
//! (`systemd-analyze verify`), and its capability list is proven enough and
//! minimal with its own ExecStart command line: run through util-linux
//! `setpriv` as uid 65534 and as uid 0 (as the unit runs), holding exactly the
//! unit's capabilities (ambient, inheritable and bounding set, no new
//! privileges), portwatch attaches, traces a helper's connection (pid, comm,
//! ports, executable), names the owner of a listener that was there before it,
//! records into a directory that uid owns, serves metrics and stops cleanly on
//! SIGTERM; without any one of them it does not, and what each one's loss costs
//! is checked against what it is known to cost. Also: every system call
//! portwatch makes (strace) is allowed by the unit's SystemCallFilter, and the
//! unit's reload signal leaves it running. Not checked (no systemd as pid 1
//! here): systemd applying the unit's sandbox.
use std::{
    cell::OnceCell,
    collections::BTreeSet,
    io::{BufRead, BufReader, Read, Write},
    net::{SocketAddr, TcpStream},
    os::unix::fs::{MetadataExt, PermissionsExt},
    path::{Path, PathBuf},
    process::Command,
    sync::{
        atomic::{AtomicBool, AtomicUsize, Ordering},
        Arc, Mutex,
    },
    thread,
    time::Duration,
};

use anyhow::{anyhow, bail, Context, Result};
use nix::sys::signal::Signal;
use serde_json::{json, Value};

use crate::{
    checks::Checks,
    expect::{self, Expected},
    harness::{
        helpers::{failing_connect, As, Client, End, Hold, Server, ServerSpec, LOOPBACK},
        launch::{self, Launch},
        programs,
        stderr::{Line, Stderr},
        tracer::Tracer,
    },
    sock,
};

/// The unit under test, found from this crate's directory.
const UNIT: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../deploy/systemd/portwatch.service"
);
const NOBODY: u32 = 65534;
/// Longer than the history writer's batch (0.5 s).
const COMMITTED: Duration = Duration::from_millis(1500);
/// How long the traced events may take to come.
const EVENTS: Duration = Duration::from_secs(10);

pub fn record_all(checks: &mut Checks, portwatch: &str, mode: &str) {
    checks.run(
        "service: systemd-analyze verify accepts deploy/systemd/portwatch.service without a word",
        || verify(portwatch),
    );
    let unit = match Unit::read() {
        Ok(unit) => unit,
        Err(e) => {
            checks.run(
                "service: the unit's ExecStart, capabilities and system call filter are readable",
                || Err(e),
            );
            return;
        }
    };
    // Copies of the binaries, made once, only when a check below runs.
    let setup: OnceCell<Result<Setup>> = OnceCell::new();
    let get = || -> Result<&Setup> {
        setup
            .get_or_init(|| Setup::new(portwatch, mode))
            .as_ref()
            .map_err(|e| anyhow!("{e:#}"))
    };
    let list = unit.caps.join(" ");
    for uid in [NOBODY, 0] {
        checks.run(
            &format!("[{mode}] service: as uid {uid} with only the unit's capabilities ({list}), its ExecStart attaches, traces a helper's connection (pid, comm, ports, exe), names the owner of a listener from before, records into a directory uid {uid} owns, serves metrics, stops cleanly on SIGTERM"),
            || enough(get()?, &unit, uid),
        );
        for cap in &unit.caps {
            checks.run(
                &format!(
                    "[{mode}] service: as uid {uid} without {cap}: {}",
                    known_loss(cap, uid).map_or("portwatch does not fully work", Loss::what)
                ),
                || needed(get()?, &unit, uid, cap),
            );
        }
    }
    checks.run(
        &format!("[{mode}] service: every system call ExecStart's portwatch makes (strace) is allowed by the unit's SystemCallFilter"),
        || syscalls(get()?, &unit),
    );
    checks.run(
        &format!("[{mode}] service: ExecReload's signal leaves portwatch running and tracing"),
        || reload(get()?, &unit),
    );
    if let Some(Ok(s)) = setup.get() {
        let _ = std::fs::remove_dir_all(&s.dir);
    }
}

/// `name` on PATH.
fn which(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|p| {
            p.metadata()
                .is_ok_and(|m| m.is_file() && m.mode() & 0o111 != 0)
        })
}

/// What the tests take from the unit file.
struct Unit {
    /// ExecStart's words: `$VARIABLE` words (unset here) and the program's
    /// prefix characters left out.
    exec_start: Vec<String>,
    /// CapabilityBoundingSet, which must be AmbientCapabilities too.
    caps: Vec<String>,
    syscall_filter: Vec<String>,
    /// ExecReload's words.
    exec_reload: Vec<String>,
}

/// Every `KEY=VALUE` of the [Service] section, in order, continuation lines
/// joined.
fn service_assignments(text: &str) -> Result<Vec<(String, String)>> {
    let mut out = Vec::new();
    let mut section = String::new();
    let mut pending = String::new();
    for (n, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if pending.is_empty() && (line.is_empty() || line.starts_with(['#', ';'])) {
            continue;
        }
        if let Some(start) = line.strip_suffix('\\') {
            pending.push_str(start);
            pending.push(' ');
            continue;
        }
        let line = std::mem::take(&mut pending) + line;
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            section = name.to_string();
            continue;
        }
        let (key, value) = line
            .split_once('=')
            .with_context(|| format!("{UNIT}:{}: not KEY=VALUE: {raw}", n + 1))?;
        if section == "Service" {
            out.push((key.trim().to_string(), value.trim().to_string()));
        }
    }
    Ok(out)
}

/// A list setting: every assignment adds its words, an empty one resets it.
fn list_setting(assignments: &[(String, String)], key: &str) -> Vec<String> {
    let mut list = Vec::new();
    for (_, v) in assignments.iter().filter(|(k, _)| k == key) {
        if v.is_empty() {
            list.clear();
        } else {
            list.extend(v.split_whitespace().map(str::to_string));
        }
    }
    list
}

/// The one assignment of `key`, split into words.
fn command_setting(assignments: &[(String, String)], key: &str) -> Result<Vec<String>> {
    let values: Vec<&String> = assignments
        .iter()
        .filter(|(k, _)| k == key)
        .map(|(_, v)| v)
        .collect();
    let [value] = values.as_slice() else {
        bail!("the unit has {} {key}= lines, expected one", values.len());
    };
    Ok(value.split_whitespace().map(str::to_string).collect())
}

impl Unit {
    fn read() -> Result<Unit> {
        let text = std::fs::read_to_string(UNIT).with_context(|| format!("reading {UNIT}"))?;
        let assignments = service_assignments(&text)?;
        let caps = list_setting(&assignments, "CapabilityBoundingSet");
        let ambient = list_setting(&assignments, "AmbientCapabilities");
        let as_set = |l: &[String]| l.iter().cloned().collect::<BTreeSet<String>>();
        if as_set(&caps) != as_set(&ambient) {
            bail!("CapabilityBoundingSet {caps:?} and AmbientCapabilities {ambient:?} differ");
        }
        if caps.is_empty() {
            bail!("the unit has no CapabilityBoundingSet");
        }
        if let Some(bad) = caps.iter().find(|c| {
            !c.starts_with("CAP_")
                || !c[4..]
                    .chars()
                    .all(|ch| ch.is_ascii_uppercase() || ch == '_')
        }) {
            bail!("`{bad}` in CapabilityBoundingSet is not a capability name (an inverted `~` list is not supported here)");
        }
        let mut exec_start = command_setting(&assignments, "ExecStart")?;
        exec_start.retain(|w| !w.starts_with('$'));
        let program = exec_start.first().context("ExecStart is empty")?;
        if program.starts_with(['+', '!']) {
            bail!("ExecStart `{program}` runs with full privileges: the capability list would not apply to it");
        }
        exec_start[0] = program.trim_start_matches(['-', '@', ':']).to_string();
        Ok(Unit {
            caps,
            syscall_filter: list_setting(&assignments, "SystemCallFilter"),
            exec_reload: command_setting(&assignments, "ExecReload")?,
            exec_start,
        })
    }

    /// ExecStart's arguments with the test's database and metrics address.
    fn args(&self, db: &Path, metrics: SocketAddr) -> Result<Vec<String>> {
        let mut args = self.exec_start[1..].to_vec();
        for (flag, value) in [
            ("--db", db.display().to_string()),
            ("--metrics", metrics.to_string()),
        ] {
            let i = args
                .iter()
                .position(|a| a == flag)
                .with_context(|| format!("ExecStart has no `{flag} VALUE`"))?;
            *args
                .get_mut(i + 1)
                .with_context(|| format!("ExecStart's {flag} has no value"))? = value;
        }
        Ok(args)
    }
}

/// `systemd-analyze verify` on a copy of the unit whose ExecStart runs the
/// portwatch under test (verify insists that the program exists): exit 0 and
/// nothing said (it only warns, exit 0, about unknown keys and bad values).
fn verify(portwatch: &str) -> Result<Vec<String>> {
    let analyze = which("systemd-analyze").context(
        "systemd-analyze is not installed (apt-get install systemd: the package does not make systemd pid 1; systemd-sysv would)",
    )?;
    let text = std::fs::read_to_string(UNIT).with_context(|| format!("reading {UNIT}"))?;
    let program = std::fs::canonicalize(portwatch)?;
    let mut replaced = 0;
    let copy: String = text
        .lines()
        .map(|line| match line.strip_prefix("ExecStart=") {
            Some(command) => {
                replaced += 1;
                let rest = command.split_once(' ').map_or("", |(_, rest)| rest);
                format!("ExecStart={} {rest}\n", program.display())
            }
            None => format!("{line}\n"),
        })
        .collect();
    if replaced != 1 {
        bail!("{replaced} ExecStart= lines in the unit, expected one");
    }
    let dir = std::env::temp_dir().join(format!("pw-service-verify-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let path = dir.join("portwatch.service");
    std::fs::write(&path, copy)?;
    let out = Command::new(&analyze).arg("verify").arg(&path).output();
    let _ = std::fs::remove_dir_all(&dir);
    let out = out.context("running systemd-analyze verify")?;
    let said: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .chain(String::from_utf8_lossy(&out.stderr).lines())
        .filter(|l| !l.trim().is_empty())
        .map(str::to_string)
        .collect();
    let mut failures = Vec::new();
    if !out.status.success() {
        failures.push(format!("systemd-analyze verify exited {}", out.status));
    }
    failures.extend(
        said.into_iter()
            .map(|l| format!("systemd-analyze verify: {l}")),
    );
    Ok(failures)
}

/// The programs the runs use, in a directory every user may enter.
struct Setup {
    dir: PathBuf,
    /// A copy of portwatch any uid may run.
    portwatch: PathBuf,
    /// A copy of this binary, for helpers run as uid 65534.
    helper: PathBuf,
    /// This binary: what helpers run as root execute.
    me: PathBuf,
    mode: String,
}

impl Setup {
    fn new(portwatch: &str, mode: &str) -> Result<Setup> {
        let (dir, copy) = crate::failures::reachable_copy(portwatch, "service")?;
        let me = std::env::current_exe()?;
        let helper = dir.join("pw-svc-helper");
        std::fs::copy(&me, &helper)?;
        std::fs::set_permissions(&helper, std::fs::Permissions::from_mode(0o755))?;
        Ok(Setup {
            dir,
            portwatch: copy,
            helper,
            me,
            mode: mode.to_string(),
        })
    }

    /// `--attach MODE`, and the suite's socket store when it is the fallback's.
    fn attach_args(&self) -> Vec<String> {
        let mut args = vec!["--attach".to_string(), self.mode.clone()];
        if launch::on_lru_fallback() {
            args.extend(["--socket-store".to_string(), "lru".to_string()]);
        }
        args
    }

    /// A fresh 0700 directory owned by `uid`, as systemd's StateDirectory=.
    fn state_dir(&self, name: &str, uid: u32) -> Result<PathBuf> {
        let dir = self.dir.join(name);
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir(&dir)?;
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700))?;
        std::os::unix::fs::chown(&dir, Some(uid), Some(uid))?;
        Ok(dir)
    }
}

/// What a service run must deliver; each capability's loss costs some of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Fact {
    /// The connect and accept events, exact (pid, tid, comm, uid, ports, role).
    Events,
    /// The executable (`exe`) of the processes of those events.
    Exe,
    /// The process holding a listener that existed before the start.
    SnapshotOwner,
    /// The database, in the directory the uid owns, holding the connection.
    History,
    /// The metrics endpoint answering.
    Metrics,
    /// Exit 0 on SIGTERM, no error line, no panic.
    CleanStop,
}

impl Fact {
    fn what(self) -> &'static str {
        match self {
            Fact::Events => "exact connect and accept events",
            Fact::Exe => "the executables of the processes",
            Fact::SnapshotOwner => "the owner of a listener from before the start",
            Fact::History => "the history database",
            Fact::Metrics => "the metrics endpoint",
            Fact::CleanStop => "a clean stop",
        }
    }
}

/// How a service run went.
enum Outcome {
    /// It ended before attaching (or, run again to completion, this is how).
    Refused {
        code: Option<i32>,
        stderr: Stderr,
        /// Programs it left loaded (none expected).
        leftover: Vec<String>,
    },
    /// It attached; the facts it did not deliver, each with why.
    Ran {
        lost: Vec<(Fact, String)>,
        stderr: Stderr,
    },
}

/// `--reuid/--regid/--clear-groups`, the capability sets, no new privileges:
/// the unit's ExecStart environment as far as capabilities go.
fn capped(s: &Setup, setpriv: &Path, uid: u32, caps: &[&str], args: &[String]) -> Launch {
    let set: String = std::iter::once("-all".to_string())
        .chain(
            caps.iter()
                .map(|c| format!("+{}", c.trim_start_matches("CAP_").to_lowercase())),
        )
        .collect::<Vec<_>>()
        .join(",");
    Launch::new(&setpriv.to_string_lossy())
        .arg(format!("--reuid={uid}"))
        .arg(format!("--regid={uid}"))
        .arg("--clear-groups")
        .arg(format!("--inh-caps={set}"))
        .arg(format!("--ambient-caps={set}"))
        .arg(format!("--bounding-set={set}"))
        .arg("--no-new-privs")
        .arg("--")
        .arg(&s.portwatch)
        .args(args)
        .args(s.attach_args())
        .expect_mode(&s.mode)
}

fn setpriv() -> Result<PathBuf> {
    which("setpriv").context(
        "setpriv (util-linux) is not installed: it runs portwatch with the unit's capabilities",
    )
}

/// An HTTP GET of `/metrics`: the body, once the status is 200. Tried for up
/// to 5 s: the endpoint comes up just after the attached line.
fn scrape(addr: SocketAddr) -> Result<String> {
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        match scrape_once(addr) {
            Err(_) if std::time::Instant::now() < deadline => {
                thread::sleep(Duration::from_millis(100));
            }
            done => return done,
        }
    }
}

fn scrape_once(addr: SocketAddr) -> Result<String> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(
        stream,
        "GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    let status = response.lines().next().unwrap_or("");
    if !status.contains(" 200 ") {
        bail!("`{status}`");
    }
    Ok(response)
}

/// Whether `events` hold one event of each expected kind and ports yet.
fn all_came(events: &[Value], expected: &[&Expected]) -> bool {
    expected
        .iter()
        .all(|x| !expect::find(events, x.event, x.local, x.remote).is_empty())
}

/// The `exe` of the one event `x` names, if it is `want`.
fn exe_differs(events: &[Value], x: &Expected, want: &Path) -> Option<String> {
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
fn run_service(s: &Setup, unit: &Unit, uid: u32, caps: &[&str], name: &str) -> Result<Outcome> {
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
fn history(s: &Setup, db: &Path, uid: u32, client: &End) -> Result<()> {
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
fn enough(s: &Setup, unit: &Unit, uid: u32) -> Result<Vec<String>> {
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
enum Loss {
    /// Exit 1 and one error line containing this text.
    Refused(&'static str),
    /// It runs and delivers everything but these.
    Degraded(&'static [Fact]),
}

impl Loss {
    fn what(self) -> &'static str {
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
fn known_loss(cap: &str, uid: u32) -> Option<Loss> {
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
fn needed(s: &Setup, unit: &Unit, uid: u32, cap: &str) -> Result<Vec<String>> {
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
            match known {
                Some(Loss::Degraded(expected)) => {
                    if facts != expected.iter().copied().collect() {
                        failures.push(format!("expected to lose only {expected:?}, lost:"));
                        failures.extend(lost.iter().map(|(f, why)| format!("  {f:?}: {why}")));
                    }
                }
                Some(Loss::Refused(_)) => {
                    failures.push("expected a refusal, but it attached and lost:".into());
                    failures.extend(lost.iter().map(|(f, why)| format!("  {f:?}: {why}")));
                }
                None => {}
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
                Some(Loss::Refused(text)) => {
                    if !line.is_some_and(|m| m.contains(text)) {
                        failures.push(format!("the error line does not mention {text}: {stderr}"));
                    }
                }
                Some(Loss::Degraded(expected)) => failures.push(format!(
                    "expected it to run without {expected:?}, but it was refused"
                )),
                None => {}
            }
        }
    }
    Ok(failures)
}

/// The system calls a `SystemCallFilter=` allow list admits, its @groups
/// expanded as `systemd-analyze syscall-filter` lists them.
fn allowed_syscalls(analyze: &Path, filter: &[String]) -> Result<BTreeSet<String>> {
    if filter.is_empty() {
        bail!("the unit has no SystemCallFilter");
    }
    let out = Command::new(analyze)
        .args(["syscall-filter", "--no-pager"])
        .output()
        .context("running systemd-analyze syscall-filter")?;
    let text = String::from_utf8(out.stdout)?;
    let mut groups: std::collections::HashMap<String, Vec<String>> = Default::default();
    let mut current = None;
    for line in text.lines() {
        if line.starts_with('@') {
            let name = line.split_whitespace().next().unwrap_or("").to_string();
            groups.insert(name.clone(), Vec::new());
            current = Some(name);
        } else if let (Some(group), item) = (&current, line.trim()) {
            if !item.is_empty() && !item.starts_with('#') {
                groups
                    .entry(group.clone())
                    .or_default()
                    .push(item.to_string());
            }
        }
    }
    fn expand(
        item: &str,
        groups: &std::collections::HashMap<String, Vec<String>>,
        out: &mut BTreeSet<String>,
    ) -> Result<()> {
        if !item.starts_with('@') {
            out.insert(item.to_string());
            return Ok(());
        }
        let members = groups
            .get(item)
            .with_context(|| format!("systemd-analyze knows no group {item}"))?;
        for m in members {
            expand(m, groups, out)?;
        }
        Ok(())
    }
    let mut allowed = BTreeSet::new();
    for item in filter {
        if item.starts_with('~') {
            bail!("SystemCallFilter `{item}` is a deny list: not supported here");
        }
        // `name:errno` admits name.
        let name = item.split(':').next().unwrap_or(item);
        expand(name, &groups, &mut allowed)?;
    }
    Ok(allowed)
}

/// The system call names in an `strace -c` table.
fn strace_summary(text: &str) -> BTreeSet<String> {
    text.lines()
        .filter_map(|l| {
            let words: Vec<&str> = l.split_whitespace().collect();
            let first = words.first()?.parse::<f64>().ok();
            let last = words.last()?;
            (first.is_some() && *last != "total").then(|| last.to_string())
        })
        .collect()
}

/// portwatch's process: the child of `strace`'s.
fn child_of(pid: u32) -> Result<nix::unistd::Pid> {
    let children = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))?;
    let child: i32 = children
        .split_whitespace()
        .next()
        .context("strace has no child")?
        .parse()?;
    Ok(nix::unistd::Pid::from_raw(child))
}

/// A stand-in OTLP/HTTP collector on loopback: every request answered 200
/// (an empty ExportLogsServiceResponse), counted; it stops when dropped.
struct OtlpSink {
    addr: SocketAddr,
    requests: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
}

impl OtlpSink {
    fn start() -> Result<OtlpSink> {
        let listener = std::net::TcpListener::bind((LOOPBACK, 0))?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let (requests, stop) = (
            Arc::new(AtomicUsize::new(0)),
            Arc::new(AtomicBool::new(false)),
        );
        let (counted, stopping) = (requests.clone(), stop.clone());
        thread::spawn(move || {
            while !stopping.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((stream, _)) => {
                        let counted = counted.clone();
                        thread::spawn(move || {
                            let _ = OtlpSink::serve(stream, &counted);
                        });
                    }
                    Err(_) => thread::sleep(Duration::from_millis(20)),
                }
            }
        });
        Ok(OtlpSink {
            addr,
            requests,
            stop,
        })
    }

    /// Requests on one connection (kept alive), until it closes.
    fn serve(stream: TcpStream, counted: &AtomicUsize) -> Result<()> {
        stream.set_nonblocking(false)?;
        stream.set_read_timeout(Some(Duration::from_secs(10)))?;
        let mut out = stream.try_clone()?;
        let mut reader = BufReader::new(stream);
        loop {
            let mut length = 0;
            let mut line = String::new();
            if reader.read_line(&mut line)? == 0 {
                return Ok(());
            }
            loop {
                line.clear();
                reader.read_line(&mut line)?;
                let header = line.trim_end();
                if header.is_empty() {
                    break;
                }
                if let Some((name, value)) = header.split_once(':') {
                    if name.eq_ignore_ascii_case("content-length") {
                        length = value.trim().parse()?;
                    }
                }
            }
            let mut body = vec![0; length];
            reader.read_exact(&mut body)?;
            counted.fetch_add(1, Ordering::Relaxed);
            out.write_all(
                b"HTTP/1.1 200 OK\r\nContent-Type: application/x-protobuf\r\nContent-Length: 0\r\n\r\n",
            )?;
        }
    }
}

impl Drop for OtlpSink {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// ExecStart's portwatch (as root) under `strace -f -c`, exporting to an OTLP
/// collector as /etc/default/portwatch would have it, through a start with a
/// listener from before, a connection, a scrape and SIGTERM: each system call
/// it made must be admitted by the unit's filter.
fn syscalls(s: &Setup, unit: &Unit) -> Result<Vec<String>> {
    let strace = which("strace").context("strace is not installed (apt-get install strace)")?;
    let analyze = which("systemd-analyze")
        .context("systemd-analyze is not installed (apt-get install systemd)")?;
    let allowed = allowed_syscalls(&analyze, &unit.syscall_filter)?;
    let state = s.state_dir("strace", 0)?;
    let summary = s.dir.join("strace.txt");
    let metrics = SocketAddr::new(LOOPBACK, sock::unused_port(LOOPBACK)?);
    let mut server = Server::spawn(&ServerSpec {
        connections: 1,
        hold: Hold::Ms(300),
        ..ServerSpec::new(LOOPBACK)
    })?;
    let port = server.listener.port.to_string();
    let collector = OtlpSink::start()?;
    let mut running = Launch::new(&strace.to_string_lossy())
        .args(["-f", "-qq", "-c", "-o"])
        .arg(&summary)
        .arg("--")
        .arg(&s.portwatch)
        .args(unit.args(&state.join("history.db"), metrics)?)
        .args(["--print", "json", "--port", &port])
        .args(s.attach_args())
        .env(
            "OTEL_EXPORTER_OTLP_ENDPOINT",
            &format!("http://{}", collector.addr),
        )
        .expect_mode(&s.mode)
        .start(launch::discard)?;
    let mut client = Client::spawn(
        server.listener.socket_addr(),
        "pw-svc-client",
        Hold::Ms(300),
    )?;
    client.connected()?;
    server.accepted()?;
    let scraped = scrape(metrics);
    client.finish()?;
    server.finish()?;
    thread::sleep(COMMITTED);
    nix::sys::signal::kill(child_of(running.pid())?, Signal::SIGTERM)?;
    let Some(status) = running.wait_exit(Duration::from_secs(20), || {})? else {
        bail!("portwatch under strace did not end within 20 s of SIGTERM");
    };
    let stopped = running.finished(status)?;
    let mut failures = Vec::new();
    if !stopped.status.success() || !stopped.stderr.errors()?.is_empty() {
        failures.push(format!(
            "under strace: exit {}, stderr {}",
            stopped.status, stopped.stderr
        ));
    }
    if let Err(e) = scraped {
        failures.push(format!("metrics under strace: {e:#}"));
    }
    println!(
        "# OTLP requests from portwatch under strace: {}",
        collector.requests.load(Ordering::Relaxed)
    );
    let used = strace_summary(&std::fs::read_to_string(&summary)?);
    let _ = std::fs::remove_dir_all(&state);
    if !used.contains("bpf") {
        failures.push(format!("strace's summary has no bpf call: {used:?}"));
    }
    let denied: Vec<&String> = used.difference(&allowed).collect();
    if !denied.is_empty() {
        failures.push(format!(
            "system calls made but not in SystemCallFilter {:?}: {denied:?}",
            unit.syscall_filter
        ));
    }
    Ok(failures)
}

/// ExecReload sends a signal (`kill -HUP $MAINPID`): portwatch must go on
/// tracing after it. One that dies of it would be stopped by `systemctl reload`
/// for good: systemd counts SIGHUP as a clean end, so Restart=on-failure does
/// not start it again.
fn reload(s: &Setup, unit: &Unit) -> Result<Vec<String>> {
    let signal = match unit.exec_reload.as_slice() {
        [kill, flag, pid] if kill.ends_with("/kill") && pid == "$MAINPID" => {
            let name = flag.trim_start_matches('-');
            let name = if name.starts_with("SIG") {
                name.to_string()
            } else {
                format!("SIG{name}")
            };
            name.parse::<Signal>()
                .map_err(|_| anyhow!("ExecReload's signal `{flag}` is not a signal"))?
        }
        other => bail!(
            "ExecReload is `{}`, expected `/bin/kill -SIGNAL $MAINPID`",
            other.join(" ")
        ),
    };
    let state = s.state_dir("reload", 0)?;
    let metrics = SocketAddr::new(LOOPBACK, sock::unused_port(LOOPBACK)?);
    let target = SocketAddr::new(LOOPBACK, sock::unused_port(LOOPBACK)?);
    let seen = Arc::new(Mutex::new(Vec::<Value>::new()));
    let kept = seen.clone();
    let mut running = Launch::new(&s.portwatch.to_string_lossy())
        .args(unit.args(&state.join("history.db"), metrics)?)
        .args(["--print", "json", "--port", &target.port().to_string()])
        .args(s.attach_args())
        .expect_mode(&s.mode)
        .start(move |stdout| {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Ok(event) = serde_json::from_str(&line) {
                    kept.lock().unwrap().push(event);
                }
            }
        })?;
    let pid = nix::unistd::Pid::from_raw(running.pid() as i32);
    nix::sys::signal::kill(pid, signal)?;
    let died = running.wait_exit(Duration::from_millis(500), || {})?;
    let _ = std::fs::remove_dir_all(&state);
    if let Some(status) = died {
        let stopped = running.finished(status)?;
        return Ok(vec![format!(
            "portwatch ended on {signal} ({status}): `systemctl reload` would stop the service; stderr {}",
            stopped.stderr
        )]);
    }
    let (client, errno) = failing_connect("refused", target, "pw-svc-poke")?;
    let expected =
        expect::connect_failed(&client, target, errno, "refused").with(json!({"attach": s.mode}));
    let mut failures = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    let events = loop {
        let events = seen.lock().unwrap().clone();
        if all_came(&events, &[&expected]) || std::time::Instant::now() > deadline {
            break events;
        }
        thread::sleep(Duration::from_millis(20));
    };
    failures.extend(
        expect::compare(&events, &[expected])
            .into_iter()
            .map(|f| format!("after {signal}: {f}")),
    );
    let stopped = running.stop_with(Signal::SIGTERM)?;
    if !stopped.status.success() {
        failures.push(format!(
            "exit {} on SIGTERM after {signal}, stderr {}",
            stopped.status, stopped.stderr
        ));
    }
    Ok(failures)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_unit_reads() {
        let unit = Unit::read().unwrap();
        assert_eq!(unit.exec_start[1], "record");
        assert!(unit.caps.iter().any(|c| c == "CAP_BPF"));
        let args = unit
            .args(Path::new("/t/h.db"), "127.0.0.1:1".parse().unwrap())
            .unwrap();
        let at = |flag: &str| args[args.iter().position(|a| a == flag).unwrap() + 1].clone();
        assert_eq!(
            (at("--db"), at("--metrics")),
            ("/t/h.db".into(), "127.0.0.1:1".into())
        );
        assert!(!args.iter().any(|a| a.starts_with('$')));
    }

    #[test]
    fn lists_and_continuations() {
        let text = "[Unit]\nX=1\n[Service]\n# c\nA=x y\nA=\nA=z \\\n  w\n";
        let a = service_assignments(text).unwrap();
        assert_eq!(list_setting(&a, "A"), ["z", "w"]);
        assert!(service_assignments("[Service]\nnot an assignment\n").is_err());
    }

    #[test]
    fn strace_table() {
        let table = "% time     seconds  usecs/call     calls    errors syscall\n------ ----------- ----------- --------- --------- ----------------\n 36.35    0.004372           3      1322           epoll_wait\n  0.10    0.000012           1         9         2 bpf\n------ ----------- ----------- --------- --------- ----------------\n100.00    0.012027           5      2197       142 total\n";
        let names: Vec<String> = strace_summary(table).into_iter().collect();
        assert_eq!(names, ["bpf", "epoll_wait"]);
    }
}
