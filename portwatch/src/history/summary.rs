//! `portwatch query --summary`: per process (executable and user), what it did in
//! the sockets the filters select.
use std::{
    collections::{HashMap, HashSet},
    io::{self, Write},
};

use rusqlite::Connection;
use serde::Serialize;

use super::{
    query::{Query, FROM, WITH_SPANS},
    schema::{OUTCOME_CONNECT_FAILED, PROTO_UDP, ROLE_CLIENT, ROLE_LISTENER, ROLE_SERVER},
    time::from_ns,
};

#[derive(Debug, Serialize, PartialEq, Eq)]
pub struct ProcessSummary {
    /// Null when the owner was not known (sockets from before tracing), or its
    /// executable could not be read (it exited first: `comm` then names it).
    pub exe: Option<String>,
    /// The process name, where the executable is not known.
    pub comm: Option<String>,
    pub user: Option<String>,
    /// Distinct TCP ports it listened on.
    pub listen_ports: Vec<u16>,
    /// Distinct UDP ports it listened on (bound as a server).
    pub udp_listen_ports: Vec<u16>,
    /// Distinct remote addresses and remote ports of its connections.
    pub remote_peers: u64,
    pub remote_ports: u64,
    /// Connections it made (client) and served (server).
    pub connections_out: u64,
    pub connections_in: u64,
    pub connect_failures: u64,
    pub first_seen: String,
    pub last_seen: String,
}

/// What one process (executable and user) did, gathered row by row.
#[derive(Default)]
struct Acc {
    listen_ports: HashSet<u16>,
    udp_listen_ports: HashSet<u16>,
    /// Addresses as numbers (IPv4 in the low bits): no allocation per row.
    peers: HashSet<u128>,
    remote_ports: HashSet<u16>,
    out: u64,
    inbound: u64,
    failures: u64,
    first: i64,
    last: i64,
}

/// One scan of the matching sockets, grouped here rather than in SQL: SQLite's
/// `count(DISTINCT ...)` per group sorts every group, several times slower on a
/// million sockets than these sets.
pub fn summarize(conn: &Connection, q: &Query) -> rusqlite::Result<Vec<ProcessSummary>> {
    let (clause, args) = q.clause();
    let sql = format!(
        "{WITH_SPANS} SELECT s.process_id, s.role, s.outcome, s.local_port, s.remote_addr, s.remote_port,
            coalesce(s.opened, s.seen), coalesce(s.closed, s.established, s.opened, s.seen), s.proto
         FROM {FROM} WHERE {clause}"
    );
    let mut by_process: HashMap<Option<i64>, Acc> = HashMap::new();
    let mut stmt = conn.prepare(&sql)?;
    let mut rows = stmt.query(rusqlite::params_from_iter(args))?;
    while let Some(r) = rows.next()? {
        let acc = by_process.entry(r.get(0)?).or_insert_with(|| Acc {
            first: i64::MAX,
            last: i64::MIN,
            ..Acc::default()
        });
        let role: i64 = r.get(1)?;
        let outcome: i64 = r.get(2)?;
        match role {
            ROLE_LISTENER if r.get::<_, i64>(8)? == PROTO_UDP => {
                acc.udp_listen_ports.insert(r.get(3)?);
            }
            ROLE_LISTENER => {
                acc.listen_ports.insert(r.get(3)?);
            }
            _ => {
                let bytes = r.get_ref(4)?.as_blob()?;
                let mut addr = [0u8; 16];
                addr[16 - bytes.len().min(16)..].copy_from_slice(&bytes[..bytes.len().min(16)]);
                acc.peers.insert(u128::from_be_bytes(addr));
                if role == ROLE_CLIENT {
                    acc.remote_ports.insert(r.get(5)?);
                }
            }
        }
        match (role, outcome) {
            (_, OUTCOME_CONNECT_FAILED) => acc.failures += 1,
            (ROLE_CLIENT, _) => acc.out += 1,
            (ROLE_SERVER, _) => acc.inbound += 1,
            _ => {}
        }
        acc.first = acc.first.min(r.get(6)?);
        acc.last = acc.last.max(r.get(7)?);
    }
    let mut who = conn.prepare(
        "SELECT exe, CASE WHEN exe IS NULL THEN comm END, user FROM processes WHERE id = ?1",
    )?;
    type Key = (Option<String>, Option<String>, Option<String>);
    let mut merged: HashMap<Key, Acc> = HashMap::new();
    for (process, acc) in by_process {
        let key = match process {
            Some(id) => who.query_row([id], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?,
            None => (None, None, None),
        };
        let into = merged.entry(key).or_insert_with(|| Acc {
            first: i64::MAX,
            last: i64::MIN,
            ..Acc::default()
        });
        into.listen_ports.extend(acc.listen_ports);
        into.udp_listen_ports.extend(acc.udp_listen_ports);
        into.peers.extend(acc.peers);
        into.remote_ports.extend(acc.remote_ports);
        into.out += acc.out;
        into.inbound += acc.inbound;
        into.failures += acc.failures;
        into.first = into.first.min(acc.first);
        into.last = into.last.max(acc.last);
    }
    let time = |ns| from_ns(ns).to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    let mut out: Vec<ProcessSummary> = merged
        .into_iter()
        .map(|((exe, comm, user), acc)| {
            let sorted = |ports: HashSet<u16>| {
                let mut ports: Vec<u16> = ports.into_iter().collect();
                ports.sort_unstable();
                ports
            };
            ProcessSummary {
                exe,
                comm,
                user,
                listen_ports: sorted(acc.listen_ports),
                udp_listen_ports: sorted(acc.udp_listen_ports),
                remote_peers: acc.peers.len() as u64,
                remote_ports: acc.remote_ports.len() as u64,
                connections_out: acc.out,
                connections_in: acc.inbound,
                connect_failures: acc.failures,
                first_seen: time(acc.first),
                last_seen: time(acc.last),
            }
        })
        .collect();
    // Known executables by path, then processes known by name, the unknown owner
    // last.
    out.sort_by_key(|s| {
        let known = (s.exe.is_none(), s.comm.is_none());
        (known, s.exe.clone(), s.comm.clone(), s.user.clone())
    });
    Ok(out)
}

pub fn write_json(rows: &[ProcessSummary], out: &mut impl Write) -> io::Result<()> {
    for row in rows {
        serde_json::to_writer(&mut *out, row)?;
        writeln!(out)?;
    }
    Ok(())
}

pub fn write_table(rows: &[ProcessSummary], out: &mut impl Write) -> io::Result<()> {
    writeln!(
        out,
        "{:<32} {:<10} {:<20} {:>6} {:>6} {:>8} {:>8} {:>6}  {:<24} LAST SEEN",
        "EXECUTABLE", "USER", "LISTENS ON", "PEERS", "PORTS", "OUT", "IN", "FAILED", "FIRST SEEN"
    )?;
    for r in rows {
        let tcp = r.listen_ports.iter().map(u16::to_string);
        let udp = r.udp_listen_ports.iter().map(|p| format!("{p}/udp"));
        let ports: Vec<String> = tcp.chain(udp).collect();
        writeln!(
            out,
            "{:<32} {:<10} {:<20} {:>6} {:>6} {:>8} {:>8} {:>6}  {:<24} {}",
            crate::output::escape_control(&match (&r.exe, &r.comm) {
                (Some(exe), _) => exe.clone(),
                (None, Some(comm)) => format!("[{comm}]"),
                (None, None) => "(unknown)".to_string(),
            }),
            crate::output::escape_control(r.user.as_deref().unwrap_or("-")),
            if ports.is_empty() {
                "-".to_string()
            } else {
                ports.join(",")
            },
            r.remote_peers,
            r.remote_ports,
            r.connections_out,
            r.connections_in,
            r.connect_failures,
            r.first_seen,
            r.last_seen
        )?;
    }
    Ok(())
}
