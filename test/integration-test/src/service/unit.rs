//! The unit file: its settings as systemd reads them, and `systemd-analyze verify`.
use super::*;

/// What the tests take from the unit file.
pub(super) struct Unit {
    /// ExecStart's words: `$VARIABLE` words (unset here) and the program's
    /// prefix characters left out.
    pub(super) exec_start: Vec<String>,
    /// CapabilityBoundingSet, which must be AmbientCapabilities too.
    pub(super) caps: Vec<String>,
    pub(super) syscall_filter: Vec<String>,
    /// ExecReload's words.
    pub(super) exec_reload: Vec<String>,
}

/// Every `KEY=VALUE` of the [Service] section, in order, continuation lines
/// joined.
pub(super) fn service_assignments(text: &str) -> Result<Vec<(String, String)>> {
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
pub(super) fn list_setting(assignments: &[(String, String)], key: &str) -> Vec<String> {
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
pub(super) fn command_setting(assignments: &[(String, String)], key: &str) -> Result<Vec<String>> {
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
    pub(super) fn read() -> Result<Unit> {
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
    pub(super) fn args(&self, db: &Path, metrics: SocketAddr) -> Result<Vec<String>> {
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
pub(super) fn verify(portwatch: &str) -> Result<Vec<String>> {
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
    let dir = crate::harness::scratch::fresh_dir("service-verify")?;
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
