//! The table format: netstat's columns (Proto, Local Address, Foreign Address,
//! State) with the time, the event, the process, the role and what each port is.
use std::{
    io::{self, Write},
    net::IpAddr,
};

use chrono::Local;

use super::{escape::escape_control, Printer, RunInfo};
use crate::{
    model::{ConnEvent, Endpoint, EventKind, Role},
    notes,
};

pub struct TablePrinter<W: Write> {
    out: W,
    explain: bool,
    color: bool,
}

const RESET: &str = "\x1b[0m";
const BOLD: &str = "\x1b[1m";
const RED: &str = "\x1b[31m";
const GREEN: &str = "\x1b[32m";
const YELLOW: &str = "\x1b[33m";
const BLUE: &str = "\x1b[34m";
const CYAN: &str = "\x1b[36m";

const HEADER: [&str; 11] = [
    "TIME",
    "EVENT",
    "PROTO",
    "LOCAL ADDRESS",
    "FOREIGN ADDRESS",
    "STATE",
    "PID/PROGRAM",
    "ROLE",
    "LOCAL PORT",
    "FOREIGN PORT",
    "DETAIL",
];
/// Column widths; a longer value (an IPv6 address, say) widens its own row only.
const WIDTHS: [usize; 10] = [12, 14, 5, 23, 23, 11, 22, 8, 22, 22];

impl<W: Write> TablePrinter<W> {
    pub fn new(mut out: W, info: RunInfo) -> io::Result<Self> {
        let colors = [None; 11].map(|_: Option<&str>| info.color.then_some(BOLD));
        write_row(&mut out, &HEADER.map(String::from), &colors)?;
        out.flush()?;
        Ok(TablePrinter {
            out,
            explain: info.explain,
            color: info.color,
        })
    }
}

/// One aligned line; a cell's color (when colors are on) does not count toward its
/// width.
fn write_row(
    out: &mut impl Write,
    cells: &[String; 11],
    colors: &[Option<&str>; 11],
) -> io::Result<()> {
    let mut line = String::with_capacity(200);
    for (i, cell) in cells.iter().enumerate() {
        match colors[i] {
            Some(c) if !cell.is_empty() => {
                line.push_str(c);
                line.push_str(cell);
                line.push_str(RESET);
            }
            _ => line.push_str(cell),
        }
        if let Some(width) = WIDTHS.get(i) {
            let pad = width.saturating_sub(cell.chars().count()) + 1;
            line.extend(std::iter::repeat_n(' ', pad));
        }
    }
    writeln!(out, "{}", line.trim_end())
}

/// `127.0.0.1:80`, `[::1]:80`, netstat style.
pub fn socket_address(addr: IpAddr, port: u16) -> String {
    match addr {
        IpAddr::V4(a) => format!("{a}:{port}"),
        IpAddr::V6(a) => format!("[{a}]:{port}"),
    }
}

/// `well-known/http`, `dynamic,eph`: the IANA class, `eph` when inside the host's
/// ephemeral range, and the service when one is known.
pub fn port_description(e: &Endpoint) -> String {
    let mut s = String::from(e.class.name());
    if e.ephemeral {
        s.push_str(",eph");
    }
    if let Some(service) = e.service {
        s.push('/');
        s.push_str(service);
    }
    s
}

fn process(e: &ConnEvent) -> String {
    match &e.owner {
        // `~` marks an owner that was inferred, not seen in the process's context.
        Some(o) => format!(
            "{}{}/{}",
            if e.pid_exact { "" } else { "~" },
            o.pid,
            escape_control(&o.comm)
        ),
        None => "-".into(),
    }
}

fn detail(e: &ConnEvent) -> String {
    let mut parts: Vec<String> = e.notes.iter().map(|n| format!("! {}", n.text())).collect();
    if let Some(err) = &e.error {
        parts.push(if err.errno != 0 {
            format!("{} (errno {})", err.reason, err.errno)
        } else {
            err.reason.to_string()
        });
    }
    match (e.kind, e.duration) {
        (EventKind::Connect, Some(d)) => parts.push(format!("handshake {}", human_duration(d))),
        (EventKind::Close, Some(d)) => parts.push(format!("after {}", human_duration(d))),
        _ => {}
    }
    if let Some(id) = e.process.as_ref().and_then(|p| p.container_id.as_deref()) {
        parts.push(format!("container {}", &id[..id.len().min(12)]));
    }
    parts.join(", ")
}

pub fn human_duration(d: std::time::Duration) -> String {
    let us = d.as_micros();
    if us < 1_000 {
        format!("{us}us")
    } else if us < 1_000_000 {
        format!("{:.1}ms", us as f64 / 1e3)
    } else {
        format!("{:.2}s", us as f64 / 1e6)
    }
}

impl<W: Write> Printer for TablePrinter<W> {
    fn event(&mut self, e: &ConnEvent) -> io::Result<()> {
        let cells = [
            e.time
                .with_timezone(&Local)
                .format("%H:%M:%S%.3f")
                .to_string(),
            e.kind.name().into(),
            "tcp".into(),
            socket_address(e.local.addr, e.local.port),
            socket_address(e.remote.addr, e.remote.port),
            e.state.name().into(),
            process(e),
            e.role.name().into(),
            port_description(&e.local),
            // A listener has no peer: 0.0.0.0:0 is netstat's placeholder, not a port.
            if e.role == Role::Listener {
                "-".into()
            } else {
                port_description(&e.remote)
            },
            detail(e),
        ];
        let mut colors = [None; 11];
        if self.color {
            colors[1] = Some(match e.kind {
                EventKind::ConnectFailed => RED,
                _ => BOLD,
            });
            colors[7] = Some(match e.role {
                Role::Listener => BLUE,
                Role::Server => GREEN,
                Role::Client => CYAN,
            });
            if !e.notes.is_empty() || e.error.is_some() {
                colors[10] = Some(if e.error.is_some() { RED } else { YELLOW });
            }
        }
        write_row(&mut self.out, &cells, &colors)?;
        if self.explain {
            writeln!(self.out, "             \u{2514} {}", notes::sentence(e))?;
        }
        self.out.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::output::tests::sample_event;

    #[test]
    fn header_then_one_aligned_row_per_event() {
        let mut buf = Vec::new();
        {
            let mut p = TablePrinter::new(&mut buf, RunInfo::default()).unwrap();
            p.event(&sample_event()).unwrap();
        }
        let text = String::from_utf8(buf).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2);
        assert!(lines[0].starts_with("TIME "));
        for word in ["Proto", "Local Address", "Foreign Address", "State"] {
            assert!(lines[0].contains(&word.to_uppercase()), "{word}");
        }
        let row = lines[1];
        // Columns start where the header's do.
        let col = |line: &str, n: usize| -> usize {
            WIDTHS[..n]
                .iter()
                .map(|w| w + 1)
                .sum::<usize>()
                .min(line.len())
        };
        assert_eq!(&row[col(row, 1)..col(row, 1) + 7], "connect");
        assert_eq!(&lines[0][col(row, 3)..col(row, 3) + 13], "LOCAL ADDRESS");
        assert_eq!(&row[col(row, 3)..col(row, 3) + 15], "127.0.0.1:51031");
        assert!(row.contains("222.222.222.222:80"));
        assert!(row.contains("ESTABLISHED"));
        assert!(row.contains("4242/curl"));
        assert!(row.contains("client"));
        assert!(row.contains("dynamic,eph"));
        assert!(row.contains("well-known/http"));
        assert!(row.contains("handshake 1.5ms"));
    }

    #[test]
    fn hostile_names_and_inexact_owners_are_visible() {
        let mut e = sample_event();
        e.owner.as_mut().unwrap().comm = "evil\x1b[2J".into();
        e.pid_exact = false;
        let mut buf = Vec::new();
        TablePrinter::new(&mut buf, RunInfo::default())
            .unwrap()
            .event(&e)
            .unwrap();
        let text = String::from_utf8(buf).unwrap();
        assert!(!text.contains('\x1b'));
        assert!(text.contains("~4242/evil\\x1b[2J"));
    }

    #[test]
    fn colors_keep_columns_aligned_and_explain_adds_the_sentence() {
        let mut plain = Vec::new();
        TablePrinter::new(&mut plain, RunInfo::default())
            .unwrap()
            .event(&sample_event())
            .unwrap();
        let mut colored = Vec::new();
        let info = RunInfo {
            color: true,
            explain: true,
            ..RunInfo::default()
        };
        TablePrinter::new(&mut colored, info)
            .unwrap()
            .event(&sample_event())
            .unwrap();
        let colored = String::from_utf8(colored).unwrap();
        assert!(colored.contains("\x1b[36mclient\x1b[0m"));
        let stripped = colored
            .replace(RESET, "")
            .replace(BOLD, "")
            .replace(CYAN, "");
        let mut lines = stripped.lines();
        let plain = String::from_utf8(plain).unwrap();
        for p in plain.lines() {
            assert_eq!(lines.next(), Some(p));
        }
        assert!(lines.next().unwrap().contains(
            "local machine is a client of 222.222.222.222's HTTP service (80) from temporary port 51031"
        ));
    }

    #[test]
    fn notes_are_marked() {
        let mut e = sample_event();
        e.notes = vec![crate::notes::Note::ClientFromWellKnownPort];
        let mut buf = Vec::new();
        TablePrinter::new(&mut buf, RunInfo::default())
            .unwrap()
            .event(&e)
            .unwrap();
        assert!(String::from_utf8(buf)
            .unwrap()
            .contains("! client from a well-known port"));
    }

    #[test]
    fn ipv6_addresses_are_bracketed() {
        assert_eq!(socket_address("::1".parse().unwrap(), 80), "[::1]:80");
        assert_eq!(socket_address("0.0.0.0".parse().unwrap(), 0), "0.0.0.0:0");
    }
}
