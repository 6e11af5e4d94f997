//! The sockets that exist now as events: listeners first, then established
//! connections and UDP sockets with a peer, each with its owning process (found by
//! its socket inode in /proc/PID/fd) and the role the ports notes would give it,
//! marked `snapshot`.
use std::collections::{HashMap, HashSet};

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
        notes, services,
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

/// What the listing says about each local port, for the roles of its sockets.
#[derive(Default)]
struct LocalPorts {
    /// The ports TCP sockets listen on.
    tcp_listening: HashSet<u16>,
    /// The UDP sockets holding each port.
    udp: HashMap<u16, UdpPort>,
}

/// The UDP sockets holding one port.
#[derive(Clone, Copy, Default)]
struct UdpPort {
    sockets: u32,
    /// One of them is not connected: it takes datagrams from anyone.
    unconnected: bool,
}

impl LocalPorts {
    fn of(sockets: &[DiagSocket]) -> LocalPorts {
        let mut ports = LocalPorts::default();
        for s in sockets {
            match s.proto {
                Transport::Tcp if s.state == TCP_LISTEN => {
                    ports.tcp_listening.insert(s.local.1);
                }
                Transport::Udp if s.local.1 != 0 => {
                    let port = ports.udp.entry(s.local.1).or_default();
                    port.sockets += 1;
                    port.unconnected |= s.state != TCP_ESTABLISHED;
                }
                _ => {}
            }
        }
        ports
    }
}

/// The role the seed gives a listed socket; None for one not shown (a TCP socket
/// neither listening nor established, a UDP socket without a port).
///
/// TCP says it by its state: a listener, or an established socket that is the
/// server side when this host listens on its port. UDP has no listening state:
/// a socket that is not connected takes datagrams from anyone, a listener,
/// unless its port is one the kernel hands out (the ephemeral range) and nothing
/// else says server: then it is a client's, its port picked by the kernel on its
/// first datagram. Something else says server when another socket shares the
/// port (bound to it on purpose), a TCP socket listens on it, or it is a UDP
/// server's by convention. A connected UDP socket is a client, or the server
/// side when an unconnected one listens on its port.
fn role(s: &DiagSocket, ports: &LocalPorts, range: EphemeralRange) -> Option<Role> {
    let port = s.local.1;
    match s.proto {
        Transport::Tcp => match s.state {
            TCP_LISTEN => Some(Role::Listener),
            TCP_ESTABLISHED if ports.tcp_listening.contains(&port) => Some(Role::Server),
            TCP_ESTABLISHED => Some(Role::Client),
            _ => None,
        },
        Transport::Udp if port == 0 => None,
        Transport::Udp => {
            let held = ports.udp.get(&port).copied().unwrap_or_default();
            if s.state == TCP_ESTABLISHED {
                Some(if held.unconnected {
                    Role::Server
                } else {
                    Role::Client
                })
            } else if !range.contains(port)
                || held.sockets > 1
                || ports.tcp_listening.contains(&port)
                || services::usual(port, Transport::Udp).is_some()
            {
                Some(Role::Listener)
            } else {
                Some(Role::Client)
            }
        }
    }
}

/// Snapshot events for `sockets` (TCP, UDP or both, as sock_diag lists them):
/// listeners first, then the others, each with the role [`role`] gives it.
pub fn events(sockets: &[DiagSocket], range: EphemeralRange) -> Vec<ConnEvent> {
    let owners = procfs::socket_holders();
    let ns_per_tick = procfs::ns_per_tick();
    let cgroup_root = cgroups::cgroup2_root();
    let ports = LocalPorts::of(sockets);
    let mut shown: Vec<(&DiagSocket, Role, TcpState)> = sockets
        .iter()
        .filter_map(|s| Some((s, role(s, &ports, range)?, TcpState::from_raw(s.state)?)))
        .collect();
    shown.sort_by_key(|(s, role, _)| {
        (
            *role != Role::Listener,
            s.local.1,
            s.proto != Transport::Tcp,
            s.remote.1,
        )
    });
    let now = Utc::now();
    // sock_diag lists this process's network namespace only.
    let netns = procfs::own_netns();
    shown
        .into_iter()
        .map(|(s, role, state)| {
            let holders = owners.get(&s.inode);
            let owner = holders
                .and_then(|p| p.first())
                .and_then(|pid| owner_of(*pid, s.uid, ns_per_tick, cgroup_root.as_deref()));
            let local = endpoint(plain(s.local.0), s.local.1, range, s.proto);
            let remote = endpoint(plain(s.remote.0), s.remote.1, range, s.proto);
            // A TCP socket is named by sock_diag's cookie, as live events name it
            // (/proc/net/tcp has only the inode); a UDP socket by its inode, as
            // live events name it.
            let cookie_id = s.proto == Transport::Tcp && s.cookie != 0;
            let mut event = ConnEvent {
                time: now,
                kind: EventKind::Snapshot,
                role,
                proto: s.proto,
                family: address::family(local.addr),
                // Exact when one process holds the socket; when several do (a
                // forked server), the lowest pid is named and marked inexact.
                pid_exact: owner.is_some() && holders.is_some_and(|h| h.len() == 1),
                owner,
                local,
                remote,
                state,
                old_state: state,
                sock_id: if cookie_id { s.cookie } else { s.inode as u64 },
                cookie_id,
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

#[cfg(test)]
mod tests {
    use super::*;

    const R: EphemeralRange = EphemeralRange::LINUX_DEFAULT;

    /// A listed socket; `remote` port 0: unconnected (UDP) or listening (TCP).
    fn listed(proto: Transport, local: u16, remote: u16, inode: u32) -> DiagSocket {
        let state = match (proto, remote) {
            (Transport::Tcp, 0) => TCP_LISTEN,
            (Transport::Udp, 0) => TcpState::Close as u8,
            _ => TCP_ESTABLISHED,
        };
        let any = "0.0.0.0".parse().unwrap();
        DiagSocket {
            proto,
            state,
            local: ("127.0.0.1".parse().unwrap(), local),
            remote: (
                if remote == 0 {
                    any
                } else {
                    "10.0.0.1".parse().unwrap()
                },
                remote,
            ),
            inode,
            uid: 0,
            cookie: 0,
        }
    }

    fn roles(sockets: &[DiagSocket]) -> Vec<Option<Role>> {
        let ports = LocalPorts::of(sockets);
        sockets.iter().map(|s| role(s, &ports, R)).collect()
    }

    #[test]
    fn an_unconnected_udp_socket_listens_unless_the_kernel_picked_its_port() {
        let udp = Transport::Udp;
        // 5353 and 53: bound on purpose. 41000: a port the kernel hands out.
        assert_eq!(
            roles(&[
                listed(udp, 5353, 0, 1),
                listed(udp, 53, 0, 2),
                listed(udp, 41000, 0, 3)
            ]),
            vec![
                Some(Role::Listener),
                Some(Role::Listener),
                Some(Role::Client)
            ]
        );
        // Unbound: not shown.
        assert_eq!(roles(&[listed(udp, 0, 0, 1)]), vec![None]);
    }

    #[test]
    fn other_evidence_makes_an_ephemeral_udp_port_a_server_one() {
        let udp = Transport::Udp;
        // Two sockets share 41000 (SO_REUSEPORT): bound on purpose.
        assert_eq!(
            roles(&[listed(udp, 41000, 0, 1), listed(udp, 41000, 0, 2)]),
            vec![Some(Role::Listener); 2]
        );
        // A TCP listener on the same port.
        assert_eq!(
            roles(&[
                listed(udp, 41000, 0, 1),
                listed(Transport::Tcp, 41000, 0, 2)
            ]),
            vec![Some(Role::Listener); 2]
        );
        // WireGuard's port, in Linux's default ephemeral range.
        assert!(R.contains(51820));
        assert_eq!(
            roles(&[listed(udp, 51820, 0, 1)]),
            vec![Some(Role::Listener)]
        );
    }

    #[test]
    fn a_connected_udp_socket_is_a_client_unless_its_port_listens() {
        let udp = Transport::Udp;
        assert_eq!(
            roles(&[listed(udp, 41000, 53, 1)]),
            vec![Some(Role::Client)]
        );
        // A fixed port, still a client: nothing listens there.
        assert_eq!(roles(&[listed(udp, 5000, 53, 1)]), vec![Some(Role::Client)]);
        // A server's per-peer socket beside its listener.
        assert_eq!(
            roles(&[listed(udp, 4433, 0, 1), listed(udp, 4433, 50000, 2)]),
            vec![Some(Role::Listener), Some(Role::Server)]
        );
        // A TCP listener on the port says nothing of a connected UDP socket.
        assert_eq!(
            roles(&[
                listed(Transport::Tcp, 4433, 0, 1),
                listed(udp, 4433, 50000, 2)
            ]),
            vec![Some(Role::Listener), Some(Role::Client)]
        );
    }

    #[test]
    fn tcp_roles_are_unchanged() {
        let tcp = Transport::Tcp;
        assert_eq!(
            roles(&[
                listed(tcp, 80, 0, 1),
                listed(tcp, 80, 49902, 2),
                listed(tcp, 51031, 80, 3),
            ]),
            vec![Some(Role::Listener), Some(Role::Server), Some(Role::Client)]
        );
        // Not listening nor established: not shown.
        let mut waiting = listed(tcp, 51031, 80, 4);
        waiting.state = TcpState::TimeWait as u8;
        assert_eq!(roles(&[waiting]), vec![None]);
        // A UDP socket on a port says nothing of a TCP one.
        assert_eq!(
            roles(&[
                listed(Transport::Udp, 41000, 0, 1),
                listed(tcp, 41000, 80, 2)
            ]),
            vec![Some(Role::Client), Some(Role::Client)]
        );
    }

    #[test]
    fn udp_events_are_named_by_inode_and_classified_as_udp() {
        // Inodes no socket of this host has: no owner is found.
        let base = u32::MAX - 10;
        let mut tcp = listed(Transport::Tcp, 53, 0, base);
        tcp.cookie = 77;
        let sockets = [
            listed(Transport::Udp, 41000, 53, base + 1),
            listed(Transport::Udp, 0, 0, base + 2),
            listed(Transport::Udp, 53, 0, base + 3),
            tcp,
        ];
        let events = events(&sockets, R);
        let shown: Vec<_> = events
            .iter()
            .map(|e| (e.proto, e.role, e.local.port, e.sock_id, e.cookie_id))
            .collect();
        assert_eq!(
            shown,
            vec![
                // Listeners first, TCP before UDP on one port.
                (Transport::Tcp, Role::Listener, 53, 77, true),
                (Transport::Udp, Role::Listener, 53, base as u64 + 3, false),
                (Transport::Udp, Role::Client, 41000, base as u64 + 1, false),
            ]
        );
        assert!(events.iter().all(|e| e.kind == EventKind::Snapshot));
        let udp_listener = &events[1];
        assert_eq!(udp_listener.local.service, Some("domain"));
        // Unconnected: `ss`'s UNCONN.
        assert_eq!(udp_listener.state, TcpState::Close);
        assert_eq!(events[2].remote.service, Some("domain"));
        assert_eq!(events[2].state, TcpState::Established);
    }
}
