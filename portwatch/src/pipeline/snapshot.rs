//! The sockets that exist now as events: listeners first, then established
//! connections, each with its owning process (found by its socket inode in
//! /proc/PID/fd) and the role the ports notes would give it, marked `snapshot`.
use std::collections::HashSet;

use chrono::Utc;

use crate::{
    enrich::{
        cgroups,
        procfs::{self, Stat},
    },
    event::{
        address::{self, plain},
        classify::{endpoint, EphemeralRange},
        model::{ConnEvent, EventKind, Owner, Role, TcpState, Transport},
        notes,
    },
    kernel::sockdiag::{DiagSocket, TCP_ESTABLISHED, TCP_LISTEN},
};

/// The owner of a process as live events describe it, read from /proc.
fn owner_of(
    pid: u32,
    uid: u32,
    ns_per_tick: u64,
    cgroup_root: Option<&std::path::Path>,
) -> Option<Owner> {
    let text = procfs::read_stat(pid)?;
    let stat = Stat::parse(&text)?;
    let cgroup_id = cgroup_root
        .and_then(|root| cgroups::of_process(root, pid))
        .map(|(_, id)| id);
    Some(Owner {
        pid,
        tid: pid,
        uid,
        comm: stat.comm.to_string(),
        ppid: Some(stat.ppid),
        cgroup_id,
        start_ns: Some(stat.start_ticks * ns_per_tick),
    })
}

/// Snapshot events for `sockets`: listeners first, then established connections,
/// each with the role the seed would give it (an established socket on a port this
/// host listens on is the server side).
pub fn events(sockets: &[DiagSocket], range: EphemeralRange) -> Vec<ConnEvent> {
    let owners = procfs::socket_holders();
    let ns_per_tick = procfs::ns_per_tick();
    let cgroup_root = cgroups::cgroup2_root();
    let listening: HashSet<u16> = sockets
        .iter()
        .filter(|s| s.state == TCP_LISTEN)
        .map(|s| s.local.1)
        .collect();
    let mut ordered: Vec<&DiagSocket> = sockets.iter().collect();
    ordered.sort_by_key(|s| (s.state != TCP_LISTEN, s.local.1, s.remote.1));
    let now = Utc::now();
    // sock_diag lists this process's network namespace only.
    let netns = procfs::own_netns();
    ordered
        .into_iter()
        .filter(|s| s.state == TCP_LISTEN || s.state == TCP_ESTABLISHED)
        .filter_map(|s| Some((s, TcpState::from_raw(s.state)?)))
        .map(|(s, state)| {
            let holders = owners.get(&s.inode);
            let owner = holders
                .and_then(|p| p.first())
                .and_then(|pid| owner_of(*pid, s.uid, ns_per_tick, cgroup_root.as_deref()));
            let local = endpoint(plain(s.local.0), s.local.1, range, Transport::Tcp);
            let remote = endpoint(plain(s.remote.0), s.remote.1, range, Transport::Tcp);
            let role = if s.state == TCP_LISTEN {
                Role::Listener
            } else if listening.contains(&s.local.1) {
                Role::Server
            } else {
                Role::Client
            };
            let mut event = ConnEvent {
                time: now,
                kind: EventKind::Snapshot,
                role,
                proto: Transport::Tcp,
                family: address::family(local.addr),
                // Exact when one process holds the socket; when several do (a
                // forked server), the lowest pid is named and marked inexact.
                pid_exact: owner.is_some() && holders.is_some_and(|h| h.len() == 1),
                owner,
                local,
                remote,
                state,
                old_state: state,
                // sock_diag's cookie identifies the socket; /proc/net/tcp has only
                // the inode.
                sock_id: if s.cookie != 0 {
                    s.cookie
                } else {
                    s.inode as u64
                },
                cookie_id: s.cookie != 0,
                netns,
                duration: None,
                error: None,
                process: None,
                notes: Vec::new(),
                lifetime: None,
                inferred: false,
            };
            event.notes = notes::notes(&event, range);
            event
        })
        .collect()
}
