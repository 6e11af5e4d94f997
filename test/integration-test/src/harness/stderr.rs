//! The one reader of what portwatch says on stderr: each line as a typed
//! [`Line`], and a whole run's stderr as [`Stderr`].
use std::fmt;

use anyhow::{bail, Context, Result};

const PREFIX: &str = "portwatch: ";

/// `portwatch: attached (mode MODE): HOOK, HOOK, ...`: every program is attached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attached {
    pub mode: String,
    /// What was hooked, as portwatch names it: `sock:inet_sock_set_state`,
    /// `syscalls:sys_exit_accept`, `fentry:tcp_connect`, ...
    pub hooks: Vec<String>,
}

impl Attached {
    /// Whether an accept hook of tracepoint mode (a syscall tracepoint or the
    /// BPF LSM hook) is attached.
    pub fn hooks_accept_in_tracepoint_mode(&self) -> bool {
        self.hooks
            .iter()
            .any(|h| h.starts_with("syscalls:") || h.starts_with("lsm:"))
    }
}

/// `portwatch: detached; N events, L lost, S skipped, R received from the
/// kernel[, U undecodable][, P without a process][, A accepts not kept exact][, K
/// unreadable in the kernel][, O owners not stored]`: the counts of a run ended by
/// a signal (the optional ones only when not 0).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Closing {
    /// Events printed.
    pub events: u64,
    /// Events lost because the ring buffer was full.
    pub lost: u64,
    /// Program runs the kernel skipped (its recursion guard).
    pub skipped: u64,
    /// Records read from the ring buffer, before the userspace filters.
    pub received: u64,
    /// Records that could not be decoded (0 when the line does not say).
    pub undecodable: u64,
    /// Events printed that name no process.
    pub without_process: u64,
    /// Accepts whose exact owner the kernel side could not keep.
    pub accepts_not_exact: u64,
    /// Kernel-side runs dropped because a kernel read failed.
    pub unreadable: u64,
    /// Socket owners the kernel side could not store.
    pub owners_not_stored: u64,
    /// Closes printed that the kernel never reported, inferred from the sockets
    /// it lists.
    pub inferred: u64,
}

/// One stderr line of portwatch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Line {
    Attached(Attached),
    Closing(Closing),
    /// `portwatch: warning: MESSAGE`.
    Warning(String),
    /// `portwatch: error: MESSAGE`, or a usage error (`error: MESSAGE`).
    Error(String),
    /// Anything else (`portwatch: stats: ...`, usage text, ...).
    Other(String),
}

impl Line {
    /// Read one line. A line that starts like an attached or closing line but does
    /// not parse is an error: portwatch's format changed, the tests must follow.
    pub fn parse(line: &str) -> Result<Line> {
        let Some(rest) = line.strip_prefix(PREFIX) else {
            return Ok(match line.strip_prefix("error: ") {
                Some(message) => Line::Error(message.to_string()),
                None => Line::Other(line.to_string()),
            });
        };
        if let Some(message) = rest.strip_prefix("warning: ") {
            return Ok(Line::Warning(message.to_string()));
        }
        if let Some(message) = rest.strip_prefix("error: ") {
            return Ok(Line::Error(message.to_string()));
        }
        if let Some(attached) = rest.strip_prefix("attached ") {
            return parse_attached(attached)
                .map(Line::Attached)
                .with_context(|| format!("unreadable attached line `{line}`"));
        }
        if let Some(counts) = rest.strip_prefix("detached; ") {
            return parse_closing(counts)
                .map(Line::Closing)
                .with_context(|| format!("unreadable closing line `{line}`"));
        }
        Ok(Line::Other(line.to_string()))
    }
}

/// `(mode MODE): HOOK, HOOK`
fn parse_attached(text: &str) -> Result<Attached> {
    let Some((mode, hooks)) = text
        .strip_prefix("(mode ")
        .and_then(|t| t.split_once("): "))
    else {
        bail!("expected `(mode MODE): HOOKS`");
    };
    Ok(Attached {
        mode: mode.to_string(),
        hooks: hooks.split(", ").map(str::to_string).collect(),
    })
}

/// `N events, L lost, S skipped, R received from the kernel[, U undecodable]`
fn parse_closing(text: &str) -> Result<Closing> {
    let mut parts = text.split(", ");
    let mut count = |label: &str| -> Result<u64> {
        let part = parts
            .next()
            .with_context(|| format!("no `{label}` count"))?;
        let (number, found) = part
            .split_once(' ')
            .with_context(|| format!("`{part}` is not `NUMBER {label}`"))?;
        if found != label {
            bail!("`{part}`: expected `NUMBER {label}`");
        }
        number
            .parse()
            .with_context(|| format!("`{number}` in `{part}` is not a count"))
    };
    let mut closing = Closing {
        events: count("events")?,
        lost: count("lost")?,
        skipped: count("skipped")?,
        received: count("received from the kernel")?,
        ..Closing::default()
    };
    // The optional counts, each at most once, in this order.
    let optional: [(&str, &mut u64); 6] = [
        ("undecodable", &mut closing.undecodable),
        ("without a process", &mut closing.without_process),
        ("accepts not kept exact", &mut closing.accepts_not_exact),
        ("unreadable in the kernel", &mut closing.unreadable),
        ("owners not stored", &mut closing.owners_not_stored),
        (
            "closes inferred (not reported by the kernel)",
            &mut closing.inferred,
        ),
    ];
    let rest: Vec<&str> = parts.collect();
    let mut next = rest.iter().peekable();
    for (label, slot) in optional {
        if let Some(part) = next.next_if(|p| p.ends_with(label)) {
            let number = part.strip_suffix(label).unwrap_or("").trim_end();
            *slot = number
                .parse()
                .with_context(|| format!("`{number}` in `{part}` is not a count"))?;
        }
    }
    if let Some(extra) = next.next() {
        bail!("unexpected `{extra}`");
    }
    Ok(closing)
}

/// Everything portwatch wrote on stderr, line by line.
#[derive(Debug, Clone, Default)]
pub struct Stderr {
    lines: Vec<String>,
}

impl Stderr {
    pub fn new(lines: Vec<String>) -> Stderr {
        Stderr { lines }
    }

    pub fn from_bytes(bytes: &[u8]) -> Stderr {
        Stderr::new(
            String::from_utf8_lossy(bytes)
                .lines()
                .map(str::to_string)
                .collect(),
        )
    }

    /// Every line read, in order.
    pub fn parsed(&self) -> Result<Vec<Line>> {
        self.lines.iter().map(|l| Line::parse(l)).collect()
    }

    /// The counts of the closing line.
    pub fn closing(&self) -> Result<Closing> {
        self.parsed()?
            .into_iter()
            .find_map(|l| match l {
                Line::Closing(c) => Some(c),
                _ => None,
            })
            .with_context(|| format!("no closing line on portwatch's stderr: {self}"))
    }

    /// The messages of the error lines.
    pub fn errors(&self) -> Result<Vec<String>> {
        Ok(self
            .parsed()?
            .into_iter()
            .filter_map(|l| match l {
                Line::Error(m) => Some(m),
                _ => None,
            })
            .collect())
    }

    /// The only line, when there is exactly one, read.
    pub fn single_line(&self) -> Option<Line> {
        match self.lines.as_slice() {
            [line] => Line::parse(line).ok(),
            _ => None,
        }
    }

    /// The lines after the attached line (all of them when there is none).
    pub fn after_attached(&self) -> Stderr {
        let attached = self
            .lines
            .iter()
            .position(|l| matches!(Line::parse(l), Ok(Line::Attached(_))));
        Stderr::new(self.lines[attached.map_or(0, |i| i + 1)..].to_vec())
    }

    /// The lines, as written.
    pub fn lines(&self) -> &[String] {
        &self.lines
    }

    /// Whether Rust's panic message is among the lines.
    pub fn panicked(&self) -> bool {
        self.lines
            .iter()
            .any(|l| l.contains("panicked") || l.contains("RUST_BACKTRACE"))
    }

    /// Whether any line mentions `word` (in any kind of line).
    pub fn mentions(&self, word: &str) -> bool {
        self.lines.iter().any(|l| l.contains(word))
    }
}

impl fmt::Display for Stderr {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "{:?}", self.lines)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attached_line() {
        let line = "portwatch: attached (mode tracepoint): sock:inet_sock_set_state, syscalls:sys_exit_accept, syscalls:sys_exit_accept4";
        let Line::Attached(a) = Line::parse(line).unwrap() else {
            panic!("not read as attached")
        };
        assert_eq!(a.mode, "tracepoint");
        assert_eq!(
            a.hooks,
            [
                "sock:inet_sock_set_state",
                "syscalls:sys_exit_accept",
                "syscalls:sys_exit_accept4"
            ]
        );
        assert!(a.hooks_accept_in_tracepoint_mode());
    }

    #[test]
    fn closing_line_without_and_with_undecodable() {
        let line = "portwatch: detached; 12 events, 3 lost, 4 skipped, 15 received from the kernel";
        assert_eq!(
            Line::parse(line).unwrap(),
            Line::Closing(Closing {
                events: 12,
                lost: 3,
                skipped: 4,
                received: 15,
                ..Closing::default()
            })
        );
        let line = "portwatch: detached; 1 events, 0 lost, 0 skipped, 2 received from the kernel, 7 undecodable";
        let Line::Closing(c) = Line::parse(line).unwrap() else {
            panic!("not read as closing")
        };
        assert_eq!((c.events, c.received, c.undecodable), (1, 2, 7));
        let line = "portwatch: detached; 9 events, 0 lost, 3 skipped, 9 received from the kernel, 4 without a process, 2 accepts not kept exact, 1 owners not stored";
        let Line::Closing(c) = Line::parse(line).unwrap() else {
            panic!("not read as closing")
        };
        assert_eq!(
            (
                c.without_process,
                c.accepts_not_exact,
                c.owners_not_stored,
                c.unreadable
            ),
            (4, 2, 1, 0)
        );
    }

    #[test]
    fn malformed_closing_line_is_an_error() {
        for line in [
            "portwatch: detached; 12 events, 3 lost",
            "portwatch: detached; 12 events, x lost, 4 skipped, 15 received from the kernel",
            "portwatch: detached; 1 events, 0 lost, 0 skipped, 2 received from the kernel, 7 odd",
            "portwatch: detached; 1 events, 0 lost, 0 skipped, 2 received from the kernel, 3 owners not stored, 4 without a process",
            "portwatch: detached; 1 events, 0 skipped, 0 lost, 2 received from the kernel",
        ] {
            assert!(Line::parse(line).is_err(), "{line}");
        }
    }

    #[test]
    fn warnings_errors_and_others() {
        assert_eq!(
            Line::parse("portwatch: warning: 3 events lost").unwrap(),
            Line::Warning("3 events lost".into())
        );
        assert_eq!(
            Line::parse("portwatch: error: attach mode fentry is not available").unwrap(),
            Line::Error("attach mode fentry is not available".into())
        );
        assert_eq!(
            Line::parse("error: invalid value '70000'").unwrap(),
            Line::Error("invalid value '70000'".into())
        );
        assert!(matches!(
            Line::parse("portwatch: stats: 1 received").unwrap(),
            Line::Other(_)
        ));
    }

    #[test]
    fn whole_stderr() {
        let stderr = Stderr::new(vec![
            "portwatch: warning: something".into(),
            "portwatch: attached (mode kprobe): kprobe:tcp_connect".into(),
            "portwatch: detached; 2 events, 0 lost, 0 skipped, 5 received from the kernel".into(),
        ]);
        assert_eq!(stderr.after_attached().parsed().unwrap().len(), 1);
        assert_eq!(stderr.closing().unwrap().received, 5);
        assert!(stderr.errors().unwrap().is_empty());
        assert!(stderr.single_line().is_none());
    }
}
