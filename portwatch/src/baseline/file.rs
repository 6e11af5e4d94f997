//! The baseline file: TOML a person reviews and commits. Read strictly (unknown
//! keys, wrong types, ports out of range, invalid addresses and duplicate entries
//! are refused with the file, line and what is wrong); written sorted and commented.
use std::{
    fmt::{Display, Write as _},
    path::{Path, PathBuf},
};

use serde::{Deserialize, Serialize};

use super::entry::{check_listener, check_outbound, Expected};
pub use super::entry::{Listener, Outbound};

/// The format version this portwatch reads and writes.
pub const VERSION: u32 = 1;

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Baseline {
    pub version: u32,
    #[serde(default, rename = "listener")]
    pub listeners: Vec<Listener>,
    #[serde(default, rename = "outbound")]
    pub outbound: Vec<Outbound>,
}

/// A baseline that cannot be used: the file, the line (when known) and what.
#[derive(Debug, thiserror::Error)]
#[error("{}{}: {what}", path.display(), line.map(|l| format!(":{l}")).unwrap_or_default())]
pub struct BaselineError {
    pub path: PathBuf,
    pub line: Option<usize>,
    pub what: String,
}

/// The 1-based line of the `n`th `[[table]]` header in `text`.
fn entry_line(text: &str, table: &str, n: usize) -> Option<usize> {
    let header = format!("[[{table}]]");
    text.lines()
        .enumerate()
        .filter(|(_, l)| l.trim() == header)
        .nth(n)
        .map(|(i, _)| i + 1)
}

/// Read and check `path`.
pub fn load(path: &Path) -> Result<(Baseline, Expected), BaselineError> {
    let fail = |line, what: String| BaselineError {
        path: path.into(),
        line,
        what,
    };
    let text = std::fs::read_to_string(path).map_err(|e| fail(None, e.to_string()))?;
    parse(&text).map_err(|(line, what)| fail(line, what))
}

/// Parse and check a baseline's text; Err: (line, what is wrong).
pub fn parse(text: &str) -> Result<(Baseline, Expected), (Option<usize>, String)> {
    let baseline: Baseline = toml::from_str(text).map_err(|e| {
        let line = e
            .span()
            .map(|s| text[..s.start.min(text.len())].matches('\n').count() + 1);
        (line, e.message().to_string())
    })?;
    if baseline.version != VERSION {
        return Err((
            None,
            format!(
                "version {} is not one this portwatch reads ({VERSION})",
                baseline.version
            ),
        ));
    }
    let expected = Expected {
        listeners: checked_entries(text, "listener", &baseline.listeners, check_listener)?,
        outbound: checked_entries(text, "outbound", &baseline.outbound, check_outbound)?,
    };
    Ok((baseline, expected))
}

/// Each `[[table]]` entry checked, none twice; Err names the entry's line.
fn checked_entries<T, C: PartialEq, E: Display>(
    text: &str,
    table: &str,
    entries: &[T],
    check: fn(&T) -> Result<C, E>,
) -> Result<Vec<C>, (Option<usize>, String)> {
    let mut out: Vec<C> = Vec::new();
    for (i, entry) in entries.iter().enumerate() {
        let at = |what| (entry_line(text, table, i), what);
        let checked = check(entry).map_err(|e| at(e.to_string()))?;
        if out.contains(&checked) {
            return Err(at(format!("the same {table} entry is listed twice")));
        }
        out.push(checked);
    }
    Ok(out)
}

/// A TOML string: quoted and escaped (control characters as `\uXXXX`), so a
/// hostile path cannot break the file.
fn quoted(text: &str) -> String {
    toml::Value::String(text.to_string()).to_string()
}

/// A listener as the file writes it; `note` becomes a comment above it, and an
/// entry whose owner is unknown is written commented out.
pub struct Written<'a> {
    pub listener: &'a Listener,
    pub note: Option<String>,
    pub commented: bool,
}

/// The file's text: a header, then the listeners and outbound entries, sorted.
pub fn write(header: &str, listeners: &[Written<'_>], outbound: &[Outbound]) -> String {
    let mut out = String::new();
    for line in header.lines() {
        let _ = writeln!(out, "# {line}");
    }
    let _ = writeln!(out, "version = {VERSION}");
    out.push_str(&write_entries(listeners, outbound));
    out
}

/// The entries alone (to add to a file).
pub fn write_entries(listeners: &[Written<'_>], outbound: &[Outbound]) -> String {
    let mut out = String::new();
    for w in listeners {
        let l = w.listener;
        out.push('\n');
        if let Some(note) = &w.note {
            let _ = writeln!(out, "# {}", note.replace('\n', " "));
        }
        let prefix = if w.commented { "# " } else { "" };
        let mut entry = String::new();
        let _ = writeln!(entry, "[[listener]]");
        let _ = writeln!(entry, "exe = {}", quoted(&l.exe));
        if let Some(user) = &l.user {
            let _ = writeln!(entry, "user = {}", quoted(user));
        }
        let _ = writeln!(entry, "protocol = {}", quoted(&l.protocol));
        let _ = writeln!(entry, "family = {}", quoted(&l.family));
        let _ = writeln!(entry, "bind = {}", quoted(&l.bind));
        let ports = l.port.ports().map(|p| p.toml()).unwrap_or_default();
        let _ = writeln!(entry, "port = {ports}");
        if let Some(cgroup) = &l.cgroup {
            let _ = writeln!(entry, "cgroup = {}", quoted(cgroup));
        }
        if let Some(container) = &l.container {
            let _ = writeln!(entry, "container = {}", quoted(container));
        }
        if l.transient {
            let _ = writeln!(entry, "transient = true");
        }
        for line in entry.lines() {
            let _ = writeln!(out, "{prefix}{line}");
        }
    }
    for o in outbound {
        out.push('\n');
        let _ = writeln!(out, "[[outbound]]");
        let _ = writeln!(out, "exe = {}", quoted(&o.exe));
        if let Some(user) = &o.user {
            let _ = writeln!(out, "user = {}", quoted(user));
        }
        let _ = writeln!(out, "protocol = {}", quoted(&o.protocol));
        let ports = o.port.ports().map(|p| p.toml()).unwrap_or_default();
        let _ = writeln!(out, "port = {ports}");
        if let Some(remote) = &o.remote {
            let _ = writeln!(out, "remote = {}", quoted(remote));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        baseline::entry::{Bind, EntryError, PortSpec, Ports},
        event::model::Transport,
    };

    const GOOD: &str = r#"
version = 1

[[listener]]
exe = "/usr/sbin/sshd"
user = "root"
protocol = "tcp"
family = "ipv4"
bind = "any"
port = 22

[[listener]]
exe = "/usr/sbin/rpc.statd"
family = "ipv6"
bind = "loopback"
port = "32768-60999"

[[outbound]]
exe = "/usr/bin/curl"
port = 443
remote = "10.0.0.0/8"
"#;

    #[test]
    fn a_good_baseline() {
        let (_, e) = parse(GOOD).unwrap();
        assert_eq!(e.listeners.len(), 2);
        assert_eq!(e.listeners[0].ports, Ports::one(22));
        assert_eq!(e.listeners[0].bind, Bind::Any);
        assert!(e.listeners[1].ports.contains(40000));
        assert!(e.listeners[1].ipv6);
        assert_eq!(e.outbound[0].ports, Ports::one(443));
        assert!(e.outbound[0].remote.is_some());
    }

    fn line_of(text: &str) -> (Option<usize>, String) {
        parse(text).unwrap_err()
    }

    #[test]
    fn bad_baselines_name_the_line() {
        let unknown = GOOD.replace("bind = \"any\"", "bind = \"any\"\nbindd = 1");
        assert_eq!(line_of(&unknown).0, Some(10));
        let wrong_type = GOOD.replace("port = 22", "port = true");
        assert!(line_of(&wrong_type).0.is_some());
        let out_of_range = GOOD.replace("port = 22", "port = 70000");
        assert_eq!(
            line_of(&out_of_range),
            (Some(4), "port 70000 is out of range (1-65535)".into())
        );
        let zero = GOOD.replace("port = 22", "port = 0");
        assert!(line_of(&zero).1.contains("out of range"));
        let address = GOOD.replace("bind = \"any\"", "bind = \"300.1.1.1\"");
        assert!(line_of(&address).1.contains("not `loopback`"));
        let remote = GOOD.replace("10.0.0.0/8", "10.0.0.0/40");
        assert_eq!(line_of(&remote).0, Some(18));
        let twice = format!(
            "{GOOD}\n[[outbound]]\nexe = \"/usr/bin/curl\"\nport = 443\nremote = \"10.0.0.0/8\"\n"
        );
        assert_eq!(
            line_of(&twice),
            (Some(23), "the same outbound entry is listed twice".into())
        );
        assert!(line_of("version = 2").1.contains("version 2"));
        assert!(line_of("not toml at all [").0.is_some());
    }

    #[test]
    fn written_files_read_back_and_escape_hostile_names() {
        let hostile = Listener {
            exe: "/tmp/evil\"\n[[listener]]\nexe = \"x".into(),
            user: Some("root".into()),
            protocol: "tcp".into(),
            family: "ipv4".into(),
            bind: "loopback".into(),
            port: PortSpec::Range("40000-40010".into()),
            cgroup: None,
            container: None,
            transient: false,
        };
        let text = write(
            "learnt",
            &[Written {
                listener: &hostile,
                note: None,
                commented: false,
            }],
            &[],
        );
        let (b, e) = parse(&text).unwrap();
        assert_eq!(b.listeners.len(), 1);
        assert_eq!(b.listeners[0].exe, hostile.exe);
        assert_eq!(
            e.listeners[0].ports,
            Ports {
                low: 40000,
                high: 40010
            }
        );
    }

    const DNS: &str = r#"
version = 1

[[listener]]
exe = "/usr/sbin/named"
protocol = "tcp"
family = "ipv4"
bind = "any"
port = 53

[[listener]]
exe = "/usr/sbin/named"
protocol = "udp"
family = "ipv4"
bind = "any"
port = 53

[[outbound]]
exe = "/usr/sbin/named"
protocol = "udp"
port = 53
"#;

    #[test]
    fn udp_entries_are_read_apart_from_tcp_ones() {
        let (b, e) = parse(DNS).unwrap();
        let protos: Vec<Transport> = e.listeners.iter().map(|l| l.proto).collect();
        assert_eq!(protos, [Transport::Tcp, Transport::Udp]);
        assert_eq!(e.outbound[0].proto, Transport::Udp);
        // Written back as they were.
        let written: Vec<Written<'_>> = b
            .listeners
            .iter()
            .map(|listener| Written {
                listener,
                note: None,
                commented: false,
            })
            .collect();
        let (_, again) = parse(&write("again", &written, &b.outbound)).unwrap();
        assert_eq!(again, e);
    }

    #[test]
    fn other_protocols_are_refused_with_their_line() {
        let sctp = DNS.replacen("protocol = \"udp\"", "protocol = \"sctp\"", 1);
        let (b, _) = parse(DNS).unwrap();
        assert_eq!(line_of(&sctp).0, Some(11));
        let mut bad = b.listeners[1].clone();
        bad.protocol = "sctp".into();
        assert_eq!(
            check_listener(&bad),
            Err(EntryError::Protocol("sctp".into()))
        );
        let mut bad = b.outbound[0].clone();
        bad.protocol = "UDP".into();
        assert_eq!(
            check_outbound(&bad),
            Err(EntryError::Protocol("UDP".into()))
        );
        let twice = format!(
            "{DNS}\n[[outbound]]\nexe = \"/usr/sbin/named\"\nprotocol = \"udp\"\nport = 53\n"
        );
        assert_eq!(line_of(&twice).0, Some(23));
    }
}
