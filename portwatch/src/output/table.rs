//! The table format: netstat's columns (Proto, Local Address, Foreign Address,
//! State) with the time, the event, the process, the role and what each port is.
use std::{
    io::{self, Write},
    net::IpAddr,
};

use super::{
    append,
    escape::escape_control,
    printer::{Printer, RunInfo},
    table_row::{Row, BLUE, BOLD, CYAN, GREEN, HEADER, RED, YELLOW},
    time_text::LocalClock,
};
use crate::{
    baseline::check::Drift,
    event::model::{ConnEvent, Endpoint, EventKind, Role},
};

pub struct TablePrinter<W: Write> {
    out: W,
    explain: bool,
    color: bool,
    /// The line being built, reused from event to event.
    line: Vec<u8>,
    clock: LocalClock,
}

impl<W: Write> TablePrinter<W> {
    pub fn new(mut out: W, info: RunInfo) -> io::Result<Self> {
        let mut line = Vec::with_capacity(512);
        let mut row = Row::new(&mut line, info.color);
        for title in HEADER {
            row.start(Some(BOLD));
            row.line.extend_from_slice(title.as_bytes());
            row.end();
        }
        row.finish();
        out.write_all(&line)?;
        out.flush()?;
        Ok(TablePrinter {
            out,
            explain: info.explain,
            color: info.color,
            line,
            clock: LocalClock::new(),
        })
    }
}

/// `127.0.0.1:80`, `[::1]:80`, netstat style.
fn socket_address(out: &mut Vec<u8>, addr: IpAddr, port: u16) {
    let v6 = addr.is_ipv6();
    if v6 {
        out.push(b'[');
    }
    append::ip(out, addr);
    out.extend_from_slice(if v6 { b"]:" } else { b":" });
    append::decimal(out, port);
}

/// `well-known/http`, `dynamic,eph`: the IANA class, `eph` when inside the host's
/// ephemeral range, and the service when one is known.
fn port_description(out: &mut Vec<u8>, e: &Endpoint) {
    out.extend_from_slice(e.class.name().as_bytes());
    if e.ephemeral {
        out.extend_from_slice(b",eph");
    }
    if let Some(service) = e.service {
        out.push(b'/');
        out.extend_from_slice(escape_control(service).as_bytes());
    }
}

/// `4242/curl`; `~` marks an owner that was inferred, not seen in the process's
/// context.
fn process(out: &mut Vec<u8>, e: &ConnEvent) {
    match &e.owner {
        Some(o) => {
            if !e.pid_exact {
                out.push(b'~');
            }
            append::decimal(out, o.pid);
            out.push(b'/');
            out.extend_from_slice(escape_control(&o.comm).as_bytes());
        }
        None => out.push(b'-'),
    }
}

/// Notes, the error, the handshake or lifetime, the container: comma-separated.
fn detail(out: &mut Vec<u8>, e: &ConnEvent) {
    let start = out.len();
    let sep = |out: &mut Vec<u8>| {
        if out.len() > start {
            out.extend_from_slice(b", ");
        }
    };
    if e.inferred {
        out.extend_from_slice(
            b"inferred: the kernel no longer has the socket, its close was not reported",
        );
    }
    for n in &e.notes {
        sep(out);
        out.extend_from_slice(b"! ");
        out.extend_from_slice(n.text().as_bytes());
    }
    if let Some(err) = &e.error {
        sep(out);
        out.extend_from_slice(err.reason.as_bytes());
        if err.errno != 0 {
            out.extend_from_slice(b" (errno ");
            append::decimal(out, err.errno);
            out.push(b')');
        }
    }
    match (e.kind, e.duration) {
        // A recorded socket (`portwatch query`): its whole life.
        (_, Some(d)) if e.lifetime.is_some() => {
            sep(out);
            out.extend_from_slice(b"lived ");
            human_duration(out, d);
        }
        (EventKind::Connect, Some(d)) => {
            sep(out);
            out.extend_from_slice(b"handshake ");
            human_duration(out, d);
        }
        (EventKind::Close, Some(d)) => {
            sep(out);
            out.extend_from_slice(b"after ");
            human_duration(out, d);
        }
        _ => {}
    }
    if let Some(l) = &e.lifetime {
        sep(out);
        if l.opened.is_none() {
            out.extend_from_slice(b"existed before recording, ");
        }
        match &l.closed {
            Some(t) => {
                out.extend_from_slice(b"closed ");
                out.extend_from_slice(
                    t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
                        .as_bytes(),
                );
            }
            None => out.extend_from_slice(b"still open"),
        }
    }
    if let Some(id) = e.process.as_ref().and_then(|p| p.container_id.as_deref()) {
        sep(out);
        out.extend_from_slice(b"container ");
        out.extend_from_slice(&id.as_bytes()[..id.len().min(12)]);
    }
}

/// `850us`, `1.5ms`, `2.25s`.
fn human_duration(out: &mut Vec<u8>, d: std::time::Duration) {
    let us = d.as_micros();
    if us < 1_000 {
        append::decimal(out, us as u64);
        out.extend_from_slice(b"us");
    } else if us < 1_000_000 {
        let _ = write!(out, "{:.1}ms", us as f64 / 1e3);
    } else {
        let _ = write!(out, "{:.2}s", us as f64 / 1e6);
    }
}

impl<W: Write> Printer for TablePrinter<W> {
    fn drift(&mut self, d: &Drift) -> io::Result<()> {
        super::drift::table_line(&mut self.line, &mut self.clock, d, self.color);
        self.out.write_all(&self.line)
    }

    fn event(&mut self, e: &ConnEvent) -> io::Result<()> {
        let mut row = Row::new(&mut self.line, self.color);
        row.start(None);
        self.clock.write(&e.time, row.line);
        row.end();
        row.cell(
            e.kind.name(),
            Some(match e.kind {
                EventKind::ConnectFailed => RED,
                _ => BOLD,
            }),
        );
        row.cell(e.proto.name(), None);
        row.start(None);
        socket_address(row.line, e.local.addr, e.local.port);
        row.end();
        row.start(None);
        socket_address(row.line, e.remote.addr, e.remote.port);
        row.end();
        row.cell(e.state_text(), None);
        row.start(None);
        process(row.line, e);
        row.end();
        row.cell(
            e.role.name(),
            Some(match e.role {
                Role::Listener => BLUE,
                Role::Server => GREEN,
                Role::Client => CYAN,
            }),
        );
        row.start(None);
        port_description(row.line, &e.local);
        row.end();
        row.start(None);
        // A listener has no peer: 0.0.0.0:0 is netstat's placeholder, not a port.
        if e.role == Role::Listener {
            row.line.push(b'-');
        } else {
            port_description(row.line, &e.remote);
        }
        row.end();
        row.start(if e.error.is_some() {
            Some(RED)
        } else if !e.notes.is_empty() {
            Some(YELLOW)
        } else {
            None
        });
        detail(row.line, e);
        row.end();
        row.finish();
        if self.explain {
            let _ = writeln!(self.line, "             \u{2514} {}", super::sentence(e));
        }
        self.out.write_all(&self.line)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::decode::tests::sample_event;
    use crate::output::table_row::{RESET, WIDTHS};

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
        e.notes = vec![crate::event::model::Note::ClientFromWellKnownPort];
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
        let text = |a: &str, port| {
            let mut v = Vec::new();
            socket_address(&mut v, a.parse().unwrap(), port);
            String::from_utf8(v).unwrap()
        };
        assert_eq!(text("::1", 80), "[::1]:80");
        assert_eq!(text("0.0.0.0", 0), "0.0.0.0:0");
    }

    #[test]
    fn durations_errors_and_containers_in_the_detail() {
        let mut e = sample_event();
        let text = |e: &ConnEvent| {
            let mut v = Vec::new();
            detail(&mut v, e);
            String::from_utf8(v).unwrap()
        };
        assert_eq!(text(&e), "handshake 1.5ms");
        e.duration = Some(std::time::Duration::from_micros(850));
        assert_eq!(text(&e), "handshake 850us");
        e.kind = EventKind::Close;
        e.duration = Some(std::time::Duration::from_millis(2250));
        e.process = Some(std::sync::Arc::new(crate::event::model::ProcessDetails {
            container_id: Some("0123456789abcdef".into()),
            ..Default::default()
        }));
        assert_eq!(text(&e), "after 2.25s, container 0123456789ab");
        e.kind = EventKind::ConnectFailed;
        e.error = Some(crate::event::model::ConnectError {
            errno: 111,
            reason: "connection refused",
        });
        e.notes = vec![crate::event::model::Note::ClientFromWellKnownPort];
        assert_eq!(
            text(&e),
            "! client from a well-known port, connection refused (errno 111), container 0123456789ab"
        );
    }

    #[test]
    fn a_colored_empty_cell_has_no_color_codes() {
        let mut buf = Vec::new();
        let mut p = TablePrinter::new(
            &mut buf,
            RunInfo {
                color: true,
                ..RunInfo::default()
            },
        )
        .unwrap();
        let mut e = sample_event();
        e.duration = None;
        p.event(&e).unwrap();
        let text = String::from_utf8(buf).unwrap();
        let row = text.lines().nth(1).unwrap();
        assert!(!row.ends_with(RESET), "{row:?}");
        assert!(!row.contains(&format!("{YELLOW}{RESET}")));
    }
}
