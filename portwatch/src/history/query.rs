//! Reading sockets back (`portwatch query`): which were open at an instant, or
//! lived in a window, narrowed by the filters; each as the live event that opened
//! it (a UDP socket's rows: its listener, and each flow), with its lifetime.
use std::{net::IpAddr, sync::Arc, time::Duration};

use rusqlite::{types::Value, Connection, Row};

use super::{
    schema::{
        proto_code, proto_of, OUTCOME_CLOSED_INFERRED, OUTCOME_CONNECT_FAILED, ROLE_CLIENT,
        ROLE_LISTENER, ROLE_SERVER, SPAN_OPEN,
    },
    time::from_ns,
};
use crate::event::{
    address::Prefix,
    classify::{connect_failure_reason, endpoint, EphemeralRange},
    model::{
        ConnEvent, ConnectError, EventKind, Family, Lifetime, Owner, ProcessDetails, Role,
        TcpState, Transport,
    },
    notes,
};

/// `--event`: what happened to the socket.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum QueryEvent {
    Listen,
    Connect,
    Accept,
    ConnectFailed,
    Close,
}

/// What to look for; every filter given must match.
#[derive(Clone, Debug, Default)]
pub struct Query {
    /// Open at this instant (ns since the epoch).
    pub at: Option<i64>,
    /// Lived (or, with `--event`, did that) within this window.
    pub since: Option<i64>,
    pub until: Option<i64>,
    /// Either end's port.
    pub ports: Vec<u16>,
    pub local_ports: Vec<u16>,
    pub remote: Option<Prefix>,
    pub pids: Vec<u32>,
    pub comms: Vec<String>,
    pub exes: Vec<String>,
    /// User names or uids (as text).
    pub users: Vec<String>,
    pub roles: Vec<Role>,
    pub events: Vec<QueryEvent>,
    /// Container ids or prefixes.
    pub containers: Vec<String>,
    /// Only sockets of these protocols (`--proto`; empty: TCP and UDP).
    pub protos: Vec<Transport>,
}

/// Every span (`schema::span`) of a closed socket, for the clause of `--at`;
/// statements using [`Query::clause`] start with it.
pub const WITH_SPANS: &str =
    "WITH RECURSIVE spans(l) AS (SELECT 0 UNION ALL SELECT l + 1 FROM spans WHERE l < 62)";

/// The end of a socket's known life: its close, else the end of its run.
const END: &str = "coalesce(s.closed, r.stopped, r.heartbeat)";

/// `column IN (?, ?, ...)` with `values` bound.
fn any_of(column: &str, values: Vec<Value>, args: &mut Vec<Value>) -> String {
    let marks = vec!["?"; values.len()].join(", ");
    args.extend(values);
    format!("{column} IN ({marks})")
}

impl Query {
    /// The WHERE clause over `sockets s JOIN runs r LEFT JOIN processes p`, and its
    /// arguments.
    pub fn clause(&self) -> (String, Vec<Value>) {
        let protos = &self.protos;
        let mut wh = vec!["1".to_string()];
        let mut args: Vec<Value> = Vec::new();
        if let Some(at) = self.at {
            // Per span, only the sockets first seen within their span's reach
            // before T (see `schema::span`), and those not closed.
            wh.push(format!(
                "s.id IN (SELECT x.id FROM spans JOIN sockets x ON x.span = spans.l
                            AND x.seen > ?1 - (1 << spans.l) AND x.seen <= ?1
                          UNION ALL SELECT id FROM sockets WHERE span = {SPAN_OPEN} AND seen <= ?1)
                 AND {END} > ?1"
            ));
            args.push(Value::Integer(at));
        }
        let by_event = |e: QueryEvent| match e {
            QueryEvent::Close => "s.closed",
            QueryEvent::Connect => "s.established",
            _ => "coalesce(s.opened, s.seen)",
        };
        let times: Vec<&str> = if self.events.is_empty() {
            vec![]
        } else {
            self.events.iter().map(|e| by_event(*e)).collect()
        };
        if let Some(since) = self.since {
            match times.as_slice() {
                [] => wh.push(format!("{END} >= ?")),
                [t, ..] => wh.push(format!("{t} >= ?")),
            }
            args.push(Value::Integer(since));
        }
        if let Some(until) = self.until {
            match times.as_slice() {
                [] => wh.push("coalesce(s.opened, s.seen) <= ?".into()),
                [t, ..] => wh.push(format!("{t} <= ?")),
            }
            args.push(Value::Integer(until));
        }
        if !self.events.is_empty() {
            let alternatives: Vec<&str> = self
                .events
                .iter()
                .map(|e| match e {
                    QueryEvent::Listen => "s.role = 0",
                    QueryEvent::Accept => "s.role = 1",
                    QueryEvent::Connect => "(s.role = 2 AND s.outcome <> 2)",
                    QueryEvent::ConnectFailed => "s.outcome = 2",
                    QueryEvent::Close => "(s.closed IS NOT NULL AND s.outcome <> 2)",
                })
                .collect();
            wh.push(format!("({})", alternatives.join(" OR ")));
        }
        let ports = |v: &[u16]| {
            v.iter()
                .map(|p| Value::Integer(*p as i64))
                .collect::<Vec<_>>()
        };
        if !self.ports.is_empty() {
            let a = any_of("s.local_port", ports(&self.ports), &mut args);
            let b = any_of("s.remote_port", ports(&self.ports), &mut args);
            wh.push(format!("({a} OR {b})"));
        }
        if !self.local_ports.is_empty() {
            wh.push(any_of("s.local_port", ports(&self.local_ports), &mut args));
        }
        if !protos.is_empty() {
            let codes = protos
                .iter()
                .map(|p| Value::Integer(proto_code(*p)))
                .collect();
            wh.push(any_of("s.proto", codes, &mut args));
        }
        if !self.pids.is_empty() {
            let v = self
                .pids
                .iter()
                .map(|p| Value::Integer(*p as i64))
                .collect();
            wh.push(any_of("p.pid", v, &mut args));
        }
        let texts = |v: &[String]| v.iter().map(|s| Value::Text(s.clone())).collect::<Vec<_>>();
        if !self.comms.is_empty() {
            wh.push(any_of("p.comm", texts(&self.comms), &mut args));
        }
        if !self.exes.is_empty() {
            wh.push(any_of("p.exe", texts(&self.exes), &mut args));
        }
        if !self.users.is_empty() {
            let a = any_of("p.user", texts(&self.users), &mut args);
            let b = any_of("CAST(p.uid AS TEXT)", texts(&self.users), &mut args);
            wh.push(format!("({a} OR {b})"));
        }
        if !self.roles.is_empty() {
            let v = self
                .roles
                .iter()
                .map(|r| {
                    Value::Integer(match r {
                        Role::Listener => ROLE_LISTENER,
                        Role::Server => ROLE_SERVER,
                        Role::Client => ROLE_CLIENT,
                    })
                })
                .collect();
            wh.push(any_of("s.role", v, &mut args));
        }
        if !self.containers.is_empty() {
            let likes: Vec<String> = self
                .containers
                .iter()
                .map(|c| {
                    args.push(Value::Text(format!("{c}%")));
                    "p.container_id LIKE ?".to_string()
                })
                .collect();
            wh.push(format!("({})", likes.join(" OR ")));
        }
        (wh.join(" AND "), args)
    }
}

const COLUMNS: &str = "s.role, s.family, s.local_addr, s.local_port, s.remote_addr, s.remote_port,
    s.seen, s.opened, s.established, s.closed, s.outcome, s.errno, s.pid_exact, s.sock_id,
    p.pid, p.start_ns, p.comm, p.exe, p.cmdline, p.user, p.uid, p.ppid, p.cgroup, p.container_id,
    r.mode, s.proto";

/// Left joins: SQLite leaves out a join whose columns a statement does not use.
pub const FROM: &str =
    "sockets s LEFT JOIN runs r ON r.id = s.run_id LEFT JOIN processes p ON p.id = s.process_id";

/// The matching sockets, oldest first, as events.
pub fn sockets(conn: &Connection, q: &Query) -> rusqlite::Result<Vec<ConnEvent>> {
    let (clause, args) = q.clause();
    let sql =
        format!("{WITH_SPANS} SELECT {COLUMNS} FROM {FROM} WHERE {clause} ORDER BY s.seen, s.id");
    let mut stmt = conn.prepare(&sql)?;
    let range = EphemeralRange::of_host();
    let rows = stmt.query_map(rusqlite::params_from_iter(args), |r| {
        to_event(r, range, q.at)
    })?;
    let mut out = Vec::new();
    for row in rows {
        let event = row?;
        if q.remote.is_none_or(|p| p.contains(event.remote.addr)) {
            out.push(event);
        }
    }
    Ok(out)
}

fn addr(bytes: Vec<u8>) -> IpAddr {
    match <[u8; 16]>::try_from(bytes.as_slice()) {
        Ok(b) => IpAddr::from(b),
        Err(_) => match <[u8; 4]>::try_from(bytes.as_slice()) {
            Ok(b) => IpAddr::from(b),
            Err(_) => IpAddr::from([0u8; 4]),
        },
    }
}

/// One row as the event that opened its socket; its state as it was at `at`, or
/// its last.
fn to_event(r: &Row<'_>, range: EphemeralRange, at: Option<i64>) -> rusqlite::Result<ConnEvent> {
    let role = match r.get::<_, i64>(0)? {
        ROLE_LISTENER => Role::Listener,
        ROLE_SERVER => Role::Server,
        _ => Role::Client,
    };
    let family = if r.get::<_, i64>(1)? == 6 {
        Family::Ipv6
    } else {
        Family::Ipv4
    };
    let proto = proto_of(r.get(25)?);
    let local = endpoint(addr(r.get(2)?), r.get(3)?, range, proto);
    let remote = endpoint(addr(r.get(4)?), r.get(5)?, range, proto);
    let seen: i64 = r.get(6)?;
    let opened: Option<i64> = r.get(7)?;
    let closed: Option<i64> = r.get(9)?;
    let outcome: i64 = r.get(10)?;
    let errno: Option<i32> = r.get(11)?;
    let failed = outcome == OUTCOME_CONNECT_FAILED;
    let kind = match (opened, role) {
        (None, _) => EventKind::Snapshot,
        (_, Role::Listener) => EventKind::Listen,
        (_, Role::Server) => EventKind::Accept,
        (_, Role::Client) if failed => EventKind::ConnectFailed,
        (_, Role::Client) => EventKind::Connect,
    };
    let closed_then = closed.is_some_and(|c| at.is_none_or(|t| c <= t));
    let (state, old_state) = states(proto, role, closed_then);
    let pid: Option<u32> = r.get(14)?;
    let owner = match pid {
        Some(pid) => Some(Owner {
            pid,
            tid: pid,
            uid: r.get(20)?,
            comm: r.get(16)?,
            ppid: r.get(21)?,
            cgroup_id: None,
            start_ns: r.get::<_, Option<i64>>(15)?.map(|n| n as u64),
        }),
        None => None,
    };
    let cmdline: Option<String> = r.get(18)?;
    let process = owner.as_ref().map(|_| -> rusqlite::Result<_> {
        Ok(Arc::new(ProcessDetails {
            exe: r.get::<_, Option<String>>(17)?.map(Arc::from),
            cmdline: cmdline
                .as_deref()
                .and_then(|c| serde_json::from_str::<Vec<String>>(c).ok())
                .map(Arc::from),
            user: r.get(19)?,
            cgroup: r.get(22)?,
            container_id: r.get(23)?,
            missing: None,
        }))
    });
    let process = process.transpose()?;
    let start = opened.unwrap_or(seen);
    let mut event = ConnEvent {
        time: from_ns(start),
        kind,
        role,
        proto,
        family,
        owner,
        pid_exact: r.get(12)?,
        local,
        remote,
        state,
        old_state,
        sock_id: r.get::<_, i64>(13)? as u64,
        cookie_id: false,
        netns: None,
        duration: match (Some(start), closed) {
            (Some(a), Some(b)) if b >= a => Some(Duration::from_nanos((b - a) as u64)),
            _ => None,
        },
        error: errno.filter(|_| failed).map(|errno| ConnectError {
            errno,
            reason: connect_failure_reason(errno),
        }),
        process,
        notes: Vec::new(),
        lifetime: Some(Lifetime {
            opened: opened.map(from_ns),
            closed: closed.map(from_ns),
        }),
        inferred: outcome == OUTCOME_CLOSED_INFERRED,
    };
    event.notes = notes::notes(&event, range);
    Ok(event)
}

/// A socket's state as it was (`closed`: it had closed), and the one before its
/// opening event (TCP) or its close (UDP). A UDP socket is unconnected (the
/// kernel's CLOSE, `UNCONN`) while it listens and serves peers, connected
/// (ESTABLISHED) as a client: most clients connect their socket, and the history
/// does not keep which did not.
fn states(proto: Transport, role: Role, closed: bool) -> (TcpState, TcpState) {
    let open = match (proto, role) {
        (Transport::Tcp, Role::Listener) => TcpState::Listen,
        (Transport::Tcp, _) | (Transport::Udp, Role::Client) => TcpState::Established,
        (Transport::Udp, _) => TcpState::Close,
    };
    let state = if closed { TcpState::Close } else { open };
    let before = match (proto, role) {
        (Transport::Udp, _) => open,
        (Transport::Tcp, Role::Listener) => TcpState::Close,
        (Transport::Tcp, Role::Server) => TcpState::SynRecv,
        (Transport::Tcp, Role::Client) => TcpState::SynSent,
    };
    (state, before)
}
