//! The unit's SystemCallFilter against what portwatch really calls (strace), and its reload signal.
use super::*;

/// The system calls a `SystemCallFilter=` allow list admits, its @groups
/// expanded as `systemd-analyze syscall-filter` lists them.
pub(super) fn allowed_syscalls(analyze: &Path, filter: &[String]) -> Result<BTreeSet<String>> {
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
    pub(super) fn expand(
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
pub(super) fn strace_summary(text: &str) -> BTreeSet<String> {
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
pub(super) fn child_of(pid: u32) -> Result<nix::unistd::Pid> {
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
pub(super) struct OtlpSink {
    pub(super) addr: SocketAddr,
    pub(super) requests: Arc<AtomicUsize>,
    pub(super) stop: Arc<AtomicBool>,
}

impl OtlpSink {
    pub(super) fn start() -> Result<OtlpSink> {
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
    pub(super) fn serve(stream: TcpStream, counted: &AtomicUsize) -> Result<()> {
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
pub(super) fn syscalls(s: &Setup, unit: &Unit) -> Result<Vec<String>> {
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
pub(super) fn reload(s: &Setup, unit: &Unit) -> Result<Vec<String>> {
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
