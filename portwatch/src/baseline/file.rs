//! The baseline file: TOML a person reviews and commits. Read strictly (unknown
//! keys, wrong types, ports out of range, invalid addresses and duplicate entries
//! are refused with the file, line and what is wrong); written sorted and commented.
use std::{
    fmt::Write as _,
    net::IpAddr,
    path::{Path, PathBuf},
};

use serde::{Deserialize, Serialize};

use crate::event::address::Prefix;

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

/// Where a listener is bound.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Bind {
    Loopback,
    Any,
    Exact(IpAddr),
}

impl Bind {
    pub fn of(addr: IpAddr) -> Bind {
        let addr = crate::event::address::plain(addr);
        if addr.is_unspecified() {
            Bind::Any
        } else if addr.is_loopback() {
            Bind::Loopback
        } else {
            Bind::Exact(addr)
        }
    }

    pub fn text(&self) -> String {
        match self {
            Bind::Loopback => "loopback".into(),
            Bind::Any => "any".into(),
            Bind::Exact(a) => a.to_string(),
        }
    }

    fn parse(text: &str) -> Result<Bind, String> {
        match text {
            "loopback" => Ok(Bind::Loopback),
            "any" => Ok(Bind::Any),
            other => other
                .parse()
                .map(Bind::Exact)
                .map_err(|_| format!("bind {other:?} is not `loopback`, `any` or an IP address")),
        }
    }
}

/// A port, or an inclusive range `LOW-HIGH` (written as a string).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Ports {
    pub low: u16,
    pub high: u16,
}

impl Ports {
    pub fn one(port: u16) -> Ports {
        Ports {
            low: port,
            high: port,
        }
    }

    pub fn contains(&self, port: u16) -> bool {
        (self.low..=self.high).contains(&port)
    }

    fn text(&self) -> String {
        if self.low == self.high {
            self.low.to_string()
        } else {
            format!("\"{}-{}\"", self.low, self.high)
        }
    }
}

/// `port = 22` or `port = "32768-60999"`, as written.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum PortSpec {
    One(i64),
    Range(String),
}

impl PortSpec {
    fn ports(&self) -> Result<Ports, String> {
        let port = |n: i64| -> Result<u16, String> {
            u16::try_from(n)
                .ok()
                .filter(|p| *p > 0)
                .ok_or_else(|| format!("port {n} is out of range (1-65535)"))
        };
        match self {
            PortSpec::One(n) => port(*n).map(Ports::one),
            PortSpec::Range(text) => {
                let (low, high) = text
                    .split_once('-')
                    .ok_or_else(|| format!("port {text:?} is neither a number nor LOW-HIGH"))?;
                let num = |s: &str| {
                    s.trim()
                        .parse::<i64>()
                        .map_err(|_| format!("port range {text:?} is not LOW-HIGH"))
                };
                let (low, high) = (port(num(low)?)?, port(num(high)?)?);
                if low > high {
                    return Err(format!("port range {text:?} runs backwards"));
                }
                Ok(Ports { low, high })
            }
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Listener {
    pub exe: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    #[serde(default = "tcp")]
    pub protocol: String,
    /// `ipv4`, `ipv6` (which may take IPv4 too when dual-stack).
    pub family: String,
    pub bind: String,
    pub port: PortSpec,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cgroup: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container: Option<String>,
    /// Comes and goes (seen listening while learning, gone at its end): allowed,
    /// but not reported when missing.
    #[serde(default)]
    pub transient: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Outbound {
    pub exe: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    #[serde(default = "tcp")]
    pub protocol: String,
    pub port: PortSpec,
    /// A network the destination is in (ADDRESS[/PREFIX]); any when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remote: Option<String>,
}

fn tcp() -> String {
    "tcp".into()
}

/// A listener entry, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExpectedListener {
    pub exe: String,
    pub user: Option<String>,
    pub ipv6: bool,
    pub bind: Bind,
    pub ports: Ports,
    pub transient: bool,
}

/// An outbound entry, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExpectedOutbound {
    pub exe: String,
    pub user: Option<String>,
    pub ports: Ports,
    pub remote: Option<Prefix>,
}

/// A baseline that cannot be used: the file, the line (when known) and what.
#[derive(Debug, thiserror::Error)]
#[error("{}{}: {what}", path.display(), line.map(|l| format!(":{l}")).unwrap_or_default())]
pub struct BaselineError {
    pub path: PathBuf,
    pub line: Option<usize>,
    pub what: String,
}

/// A baseline ready for checking.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Expected {
    pub listeners: Vec<ExpectedListener>,
    pub outbound: Vec<ExpectedOutbound>,
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
fn checked_entries<T, C: PartialEq>(
    text: &str,
    table: &str,
    entries: &[T],
    check: fn(&T) -> Result<C, String>,
) -> Result<Vec<C>, (Option<usize>, String)> {
    let mut out: Vec<C> = Vec::new();
    for (i, entry) in entries.iter().enumerate() {
        let at = |what| (entry_line(text, table, i), what);
        let checked = check(entry).map_err(at)?;
        if out.contains(&checked) {
            return Err(at(format!("the same {table} entry is listed twice")));
        }
        out.push(checked);
    }
    Ok(out)
}

fn check_protocol(protocol: &str) -> Result<(), String> {
    match protocol {
        "tcp" => Ok(()),
        other => Err(format!("protocol {other:?} is not `tcp`")),
    }
}

pub fn check_listener(l: &Listener) -> Result<ExpectedListener, String> {
    check_protocol(&l.protocol)?;
    let ipv6 = match l.family.as_str() {
        "ipv4" => false,
        "ipv6" => true,
        other => return Err(format!("family {other:?} is not `ipv4` or `ipv6`")),
    };
    if l.exe.is_empty() {
        return Err("exe is empty".into());
    }
    Ok(ExpectedListener {
        exe: l.exe.clone(),
        user: l.user.clone(),
        ipv6,
        bind: Bind::parse(&l.bind)?,
        ports: l.port.ports()?,
        transient: l.transient,
    })
}

pub fn check_outbound(o: &Outbound) -> Result<ExpectedOutbound, String> {
    check_protocol(&o.protocol)?;
    if o.exe.is_empty() {
        return Err("exe is empty".into());
    }
    Ok(ExpectedOutbound {
        exe: o.exe.clone(),
        user: o.user.clone(),
        ports: o.port.ports()?,
        remote: o.remote.as_deref().map(Prefix::parse).transpose()?,
    })
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
        let ports = l.port.ports().map(|p| p.text()).unwrap_or_default();
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
        let ports = o.port.ports().map(|p| p.text()).unwrap_or_default();
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
}
