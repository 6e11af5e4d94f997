//! The TCP sockets that exist now, as `ss -tanp` would list them: read through
//! sock_diag netlink (no other program run), owners found by their socket inodes in
//! /proc/PID/fd, classified like live events and marked `snapshot`.
use std::{
    collections::{HashMap, HashSet},
    fs, io,
    net::IpAddr,
    os::unix::fs::MetadataExt,
};

use chrono::Utc;
use netlink_packet_core::{
    NetlinkHeader, NetlinkMessage, NetlinkPayload, NLM_F_DUMP, NLM_F_REQUEST,
};
use netlink_packet_sock_diag::{
    constants::{AF_INET, AF_INET6, IPPROTO_TCP, TCP_ESTABLISHED, TCP_LISTEN},
    inet::{ExtensionFlags, InetRequest, SocketId, StateFlags},
    SockDiagMessage,
};
use netlink_sys::{protocols::NETLINK_SOCK_DIAG, Socket, SocketAddr};

use crate::{
    cgroups,
    classify::EphemeralRange,
    decode::endpoint,
    model::{ConnEvent, EventKind, Family, Owner, Role, TcpState},
    notes, procinfo,
};

/// One socket as sock_diag reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DiagSocket {
    pub state: u8,
    pub local: (IpAddr, u16),
    pub remote: (IpAddr, u16),
    pub inode: u32,
    pub uid: u32,
    pub cookie: u64,
}

fn dump(family: u8) -> io::Result<Vec<DiagSocket>> {
    let mut socket = Socket::new(NETLINK_SOCK_DIAG)?;
    socket.bind_auto()?;
    socket.connect(&SocketAddr::new(0, 0))?;
    let mut header = NetlinkHeader::default();
    header.flags = NLM_F_REQUEST | NLM_F_DUMP;
    let mut packet = NetlinkMessage::new(
        header,
        SockDiagMessage::InetRequest(InetRequest {
            family,
            protocol: IPPROTO_TCP,
            extensions: ExtensionFlags::empty(),
            states: StateFlags::LISTEN | StateFlags::ESTABLISHED,
            socket_id: if family == AF_INET {
                SocketId::new_v4()
            } else {
                SocketId::new_v6()
            },
        })
        .into(),
    );
    packet.finalize();
    let mut buf = vec![0; packet.header.length as usize];
    packet.serialize(&mut buf[..]);
    socket.send(&buf[..], 0)?;

    let mut sockets = Vec::new();
    let mut rx = vec![0u8; 64 * 1024];
    loop {
        let size = socket.recv(&mut &mut rx[..], 0)?;
        let mut offset = 0;
        while offset < size {
            let message = <NetlinkMessage<SockDiagMessage>>::deserialize(&rx[offset..size])
                .map_err(|e| {
                    io::Error::new(io::ErrorKind::InvalidData, format!("sock_diag: {e}"))
                })?;
            match message.payload {
                NetlinkPayload::InnerMessage(SockDiagMessage::InetResponse(r)) => {
                    let h = &r.header;
                    sockets.push(DiagSocket {
                        state: h.state,
                        local: (h.socket_id.source_address, h.socket_id.source_port),
                        remote: (
                            h.socket_id.destination_address,
                            h.socket_id.destination_port,
                        ),
                        inode: h.inode,
                        uid: h.uid,
                        cookie: u64::from_ne_bytes(h.socket_id.cookie),
                    });
                }
                NetlinkPayload::Done(_) => return Ok(sockets),
                NetlinkPayload::Error(e) => {
                    return Err(io::Error::other(format!("sock_diag error: {e:?}")));
                }
                _ => {}
            }
            if message.header.length == 0 {
                break;
            }
            offset += message.header.length as usize;
        }
    }
}

/// Every listening and established TCP socket, IPv4 and IPv6.
pub fn tcp_sockets() -> io::Result<Vec<DiagSocket>> {
    let mut all = dump(AF_INET)?;
    all.extend(dump(AF_INET6)?);
    Ok(all)
}

/// The processes holding each socket inode, from /proc/PID/fd (lowest pid first).
fn socket_owners() -> HashMap<u32, Vec<u32>> {
    let mut owners: HashMap<u32, Vec<u32>> = HashMap::new();
    let Ok(procs) = fs::read_dir("/proc") else {
        return owners;
    };
    let mut pids: Vec<u32> = procs
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect();
    pids.sort_unstable();
    for pid in pids {
        let Ok(fds) = fs::read_dir(format!("/proc/{pid}/fd")) else {
            continue;
        };
        for fd in fds.filter_map(Result::ok) {
            let Ok(target) = fs::read_link(fd.path()) else {
                continue;
            };
            let target = target.to_string_lossy();
            if let Some(inode) = target
                .strip_prefix("socket:[")
                .and_then(|t| t.strip_suffix(']'))
                .and_then(|t| t.parse().ok())
            {
                let list = owners.entry(inode).or_default();
                if !list.contains(&pid) {
                    list.push(pid);
                }
            }
        }
    }
    owners
}

/// The owner of a process as live events describe it, read from /proc.
fn owner_of(
    pid: u32,
    uid: u32,
    ns_per_tick: u64,
    cgroup_root: Option<&std::path::Path>,
) -> Option<Owner> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (ticks, comm) = procinfo::parse_stat(&stat)?;
    let ppid = stat
        .rfind(')')
        .and_then(|i| stat[i + 1..].split_whitespace().nth(1)?.parse().ok());
    let cgroup_id = fs::read_to_string(format!("/proc/{pid}/cgroup"))
        .ok()
        .and_then(|text| {
            text.lines()
                .find_map(|l| l.strip_prefix("0::").map(str::to_string))
        })
        .and_then(|path| {
            let root = cgroup_root?;
            fs::metadata(root.join(path.trim_start_matches('/')))
                .ok()
                .map(|m| m.ino())
        });
    Some(Owner {
        pid,
        tid: pid,
        uid,
        comm: comm.to_string(),
        ppid,
        cgroup_id,
        start_ns: Some(ticks * ns_per_tick),
    })
}

/// Snapshot events for `sockets`: listeners first, then established connections,
/// each with the role the seed would give it (an established socket on a port this
/// host listens on is the server side).
pub fn events(sockets: &[DiagSocket], range: EphemeralRange) -> Vec<ConnEvent> {
    let owners = socket_owners();
    let ticks = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .filter(|t| *t > 0)
        .unwrap_or(100) as u64;
    let cgroup_root = fs::read_to_string("/proc/self/mounts")
        .ok()
        .and_then(|m| cgroups::cgroup2_mount(&m));
    let listening: HashSet<u16> = sockets
        .iter()
        .filter(|s| s.state == TCP_LISTEN)
        .map(|s| s.local.1)
        .collect();
    let mut ordered: Vec<&DiagSocket> = sockets.iter().collect();
    ordered.sort_by_key(|s| (s.state != TCP_LISTEN, s.local.1, s.remote.1));
    let now = Utc::now();
    ordered
        .into_iter()
        .filter(|s| s.state == TCP_LISTEN || s.state == TCP_ESTABLISHED)
        .map(|s| {
            let holders = owners.get(&s.inode);
            let owner = holders.and_then(|p| p.first()).and_then(|pid| {
                owner_of(*pid, s.uid, 1_000_000_000 / ticks, cgroup_root.as_deref())
            });
            let local = endpoint(plain(s.local.0), s.local.1, range);
            let remote = endpoint(plain(s.remote.0), s.remote.1, range);
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
                family: if local.addr.is_ipv4() {
                    Family::Ipv4
                } else {
                    Family::Ipv6
                },
                // Exact when one process holds the socket; when several do (a
                // forked server), the lowest pid is named and marked inexact.
                pid_exact: owner.is_some() && holders.is_some_and(|h| h.len() == 1),
                owner,
                local,
                remote,
                state: TcpState(s.state),
                old_state: TcpState(s.state),
                sock_id: s.cookie,
                duration: None,
                error: None,
                process: None,
                notes: Vec::new(),
            };
            event.notes = notes::notes(&event, range);
            event
        })
        .collect()
}

/// IPv4-mapped IPv6 shown as the IPv4 address it is.
fn plain(addr: IpAddr) -> IpAddr {
    match addr {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(addr),
        v4 => v4,
    }
}
