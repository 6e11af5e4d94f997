//! The TCP and UDP sockets that exist now, as `ss -tuan` would list them: read
//! through sock_diag netlink (no other program run), or from /proc/net/tcp{,6} and
//! /proc/net/udp{,6} where the kernel has no sock_diag for the protocol.
use std::{fs, io, net::IpAddr};

use netlink_packet_core::{
    NetlinkHeader, NetlinkMessage, NetlinkPayload, NLM_F_DUMP, NLM_F_REQUEST,
};
pub use netlink_packet_sock_diag::constants::{TCP_ESTABLISHED, TCP_LISTEN};
use netlink_packet_sock_diag::{
    constants::{AF_INET, AF_INET6, IPPROTO_TCP, IPPROTO_UDP},
    inet::{ExtensionFlags, InetRequest, SocketId, StateFlags},
    SockDiagMessage,
};
use netlink_sys::{protocols::NETLINK_SOCK_DIAG, Socket, SocketAddr};

use crate::event::services::Transport;

/// Why the existing sockets could not be read.
#[derive(Debug, thiserror::Error)]
pub enum SockDiagError {
    #[error("sock_diag netlink socket")]
    Socket(#[source] io::Error),
    #[error("sock_diag: malformed reply")]
    Malformed(#[source] netlink_packet_core::DecodeError),
    #[error("sock_diag: the kernel answered {0:?}")]
    Kernel(netlink_packet_core::ErrorMessage),
    #[error("{diag}, and {path} cannot be read either")]
    Fallback {
        diag: Box<SockDiagError>,
        path: &'static str,
        #[source]
        source: io::Error,
    },
}

/// One socket as sock_diag reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DiagSocket {
    pub proto: Transport,
    /// TCP's state numbers; a UDP socket is ESTABLISHED when connected, CLOSE
    /// (`ss`: UNCONN) else.
    pub state: u8,
    pub local: (IpAddr, u16),
    pub remote: (IpAddr, u16),
    pub inode: u32,
    pub uid: u32,
    pub cookie: u64,
}

/// The sockets of `proto` and `family` in one of `states`, through sock_diag.
fn dump(
    proto: Transport,
    family: u8,
    states: StateFlags,
    each: &mut dyn FnMut(DiagSocket),
) -> Result<(), SockDiagError> {
    let mut socket = Socket::new(NETLINK_SOCK_DIAG).map_err(SockDiagError::Socket)?;
    socket.bind_auto().map_err(SockDiagError::Socket)?;
    socket
        .connect(&SocketAddr::new(0, 0))
        .map_err(SockDiagError::Socket)?;
    let mut header = NetlinkHeader::default();
    header.flags = NLM_F_REQUEST | NLM_F_DUMP;
    let mut packet = NetlinkMessage::new(
        header,
        SockDiagMessage::InetRequest(InetRequest {
            family,
            protocol: match proto {
                Transport::Tcp => IPPROTO_TCP,
                Transport::Udp => IPPROTO_UDP,
            },
            extensions: ExtensionFlags::empty(),
            states,
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
    socket.send(&buf[..], 0).map_err(SockDiagError::Socket)?;

    let mut rx = vec![0u8; 64 * 1024];
    loop {
        let size = socket
            .recv(&mut &mut rx[..], 0)
            .map_err(SockDiagError::Socket)?;
        let mut offset = 0;
        while offset < size {
            let message = <NetlinkMessage<SockDiagMessage>>::deserialize(&rx[offset..size])
                .map_err(SockDiagError::Malformed)?;
            match message.payload {
                NetlinkPayload::InnerMessage(SockDiagMessage::InetResponse(r)) => {
                    let h = &r.header;
                    each(DiagSocket {
                        proto,
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
                NetlinkPayload::Done(_) => return Ok(()),
                NetlinkPayload::Error(e) => return Err(SockDiagError::Kernel(e)),
                _ => {}
            }
            if message.header.length == 0 {
                break;
            }
            offset += message.header.length as usize;
        }
    }
}

/// Every listening and established TCP socket, IPv4 and IPv6: through sock_diag,
/// or, where the kernel has no TCP sock_diag (the `tcp_diag` module not loaded:
/// the dump fails with ENOENT), from /proc/net/tcp and /proc/net/tcp6 as netstat
/// reads them.
pub fn tcp_sockets() -> Result<Vec<DiagSocket>, SockDiagError> {
    let mut all = Vec::new();
    sockets_in(
        Transport::Tcp,
        StateFlags::LISTEN | StateFlags::ESTABLISHED,
        &mut |s| all.push(s),
    )?;
    Ok(all)
}

/// Every UDP socket the kernel has a port for (bound, by the program or by the
/// kernel on its first datagram or connect; connected or not), IPv4 and IPv6:
/// through sock_diag, or from /proc/net/udp and /proc/net/udp6 where the kernel
/// has no UDP sock_diag (`udp_diag`). A socket without a port is in neither.
pub fn udp_sockets() -> Result<Vec<DiagSocket>, SockDiagError> {
    let mut all = Vec::new();
    each_udp_socket(&mut |s| all.push(s))?;
    Ok(all)
}

/// The sockets of [`tcp_sockets`], then those of [`udp_sockets`]: what
/// `portwatch snapshot` shows.
pub fn tcp_and_udp_sockets() -> Result<Vec<DiagSocket>, SockDiagError> {
    let mut all = tcp_sockets()?;
    each_udp_socket(&mut |s| all.push(s))?;
    Ok(all)
}

/// Each TCP socket that is still a socket, handed to `each` as it is read (a
/// host may have hundreds of thousands): every state but TIME_WAIT (a timewait
/// entry stands in for a closed socket) and CLOSE.
pub fn each_open_tcp_socket(each: &mut dyn FnMut(DiagSocket)) -> Result<(), SockDiagError> {
    sockets_in(
        Transport::Tcp,
        StateFlags::ESTABLISHED
            | StateFlags::SYN_SENT
            | StateFlags::SYN_RECV
            | StateFlags::FIN_WAIT1
            | StateFlags::FIN_WAIT2
            | StateFlags::CLOSE_WAIT
            | StateFlags::LAST_ACK
            | StateFlags::LISTEN
            | StateFlags::CLOSING,
        each,
    )
}

/// Each UDP socket of [`udp_sockets`], handed to `each` as it is read: a closed
/// UDP socket leaves the kernel's tables at once, so every one listed is open.
pub fn each_udp_socket(each: &mut dyn FnMut(DiagSocket)) -> Result<(), SockDiagError> {
    sockets_in(Transport::Udp, StateFlags::all(), each)
}

/// The sockets of `proto` in one of `states`, one family after the other: each
/// through sock_diag, or from its /proc/net table where the dump fails. A kernel
/// without IPv6 has no IPv6 table: nothing to list there.
fn sockets_in(
    proto: Transport,
    states: StateFlags,
    each: &mut dyn FnMut(DiagSocket),
) -> Result<(), SockDiagError> {
    for (family, v6) in [(AF_INET, false), (AF_INET6, true)] {
        let Err(diag) = dump(proto, family, states.clone(), each) else {
            continue;
        };
        let path = proc_net_path(proto, v6);
        match fs::read_to_string(path) {
            Ok(text) => parse_proc_net(&text, v6, proto)
                .into_iter()
                .filter(|s| {
                    1u32.checked_shl(u32::from(s.state))
                        .is_some_and(|bit| states.bits() & bit != 0)
                })
                .for_each(&mut *each),
            Err(_) if v6 => {}
            Err(source) => {
                return Err(SockDiagError::Fallback {
                    diag: Box::new(diag),
                    path,
                    source,
                })
            }
        }
    }
    Ok(())
}

/// The /proc/net table of `proto` sockets, IPv6 ones if `v6`.
fn proc_net_path(proto: Transport, v6: bool) -> &'static str {
    match (proto, v6) {
        (Transport::Tcp, false) => "/proc/net/tcp",
        (Transport::Tcp, true) => "/proc/net/tcp6",
        (Transport::Udp, false) => "/proc/net/udp",
        (Transport::Udp, true) => "/proc/net/udp6",
    }
}

/// An address as /proc/net/{tcp,udp} print it: 32-bit words in the kernel's byte
/// order.
fn proc_addr(hex: &str, v6: bool) -> Option<IpAddr> {
    let word = |i: usize| -> Option<[u8; 4]> {
        Some(
            u32::from_str_radix(hex.get(i * 8..i * 8 + 8)?, 16)
                .ok()?
                .to_ne_bytes(),
        )
    };
    if v6 {
        let mut bytes = [0u8; 16];
        for i in 0..4 {
            bytes[i * 4..i * 4 + 4].copy_from_slice(&word(i)?);
        }
        Some(IpAddr::from(bytes))
    } else {
        Some(IpAddr::from(word(0)?))
    }
}

fn proc_endpoint(text: &str, v6: bool) -> Option<(IpAddr, u16)> {
    let (addr, port) = text.split_once(':')?;
    Some((proc_addr(addr, v6)?, u16::from_str_radix(port, 16).ok()?))
}

/// The `proto` sockets of a /proc/net/{tcp,udp}{,6} table (the same columns in
/// both); a line that cannot be read is skipped.
pub fn parse_proc_net(text: &str, v6: bool, proto: Transport) -> Vec<DiagSocket> {
    text.lines()
        .skip(1)
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            Some(DiagSocket {
                proto,
                local: proc_endpoint(f.get(1)?, v6)?,
                remote: proc_endpoint(f.get(2)?, v6)?,
                state: u8::from_str_radix(f.get(3)?, 16).ok()?,
                uid: f.get(7)?.parse().ok()?,
                inode: f.get(9)?.parse().ok()?,
                cookie: 0,
            })
        })
        .collect()
}

#[cfg(all(test, target_endian = "little"))]
mod tests {
    use super::*;
    use crate::event::address::plain;

    #[test]
    fn proc_net_tcp_lines() {
        let v4 = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:0015 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 31337 1 0000000000000000 100 0 0 10 0
   1: 0100007F:C74F 0100007F:0050 01 00000000:00000000 00:00000000 00000000  1000        0 4242 1 0000000000000000 20 4 30 10 -1
";
        let got = parse_proc_net(v4, false, Transport::Tcp);
        assert_eq!(
            got,
            vec![
                DiagSocket {
                    proto: Transport::Tcp,
                    state: TCP_LISTEN,
                    local: ("127.0.0.1".parse().unwrap(), 21),
                    remote: ("0.0.0.0".parse().unwrap(), 0),
                    inode: 31337,
                    uid: 0,
                    cookie: 0,
                },
                DiagSocket {
                    proto: Transport::Tcp,
                    state: TCP_ESTABLISHED,
                    local: ("127.0.0.1".parse().unwrap(), 51023),
                    remote: ("127.0.0.1".parse().unwrap(), 80),
                    inode: 4242,
                    uid: 1000,
                    cookie: 0,
                },
            ]
        );
        let v6 = "  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000000000000000000001000000:1F90 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 777 1 0000000000000000 100 0 0 10 0
   1: 0000000000000000FFFF00000100007F:1F90 0000000000000000FFFF00000100007F:D431 01 00000000:00000000 00:00000000 00000000     0        0 778 1 0000000000000000 20 4 30 10 -1
";
        let got = parse_proc_net(v6, true, Transport::Tcp);
        assert_eq!(got[0].local, ("::1".parse().unwrap(), 8080));
        assert_eq!(got[1].local, ("::ffff:127.0.0.1".parse().unwrap(), 8080));
        assert_eq!(got[1].remote.1, 54321);
        assert_eq!(
            plain(got[1].local.0),
            "127.0.0.1".parse::<IpAddr>().unwrap()
        );
    }

    #[test]
    fn proc_net_udp_lines() {
        // A socket bound to 127.0.0.1:5353 (UNCONN), one connected from the
        // kernel's port 40000 to 8.8.8.8:53, then lines the kernel never writes.
        let v4 = "   sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode ref pointer drops
 4165: 0100007F:14E9 00000000:0000 07 00000000:00000000 00:00000000 00000000   101        0 116227258 2 0000000064d0e3b0 0
 9070: 0100007F:9C40 08080808:0035 01 00000000:00000000 00:00000000 00000000  1000        0 116228224 2 00000000ee5befae 0
 9071: 0100007F:9C40 08080808:0035 01 00000000:00000000 00:00000000 00000000  1000
 9072: 0100007F:ZZZZ 08080808:0035 01 00000000:00000000 00:00000000 00000000  1000        0 1 2 0 0
 9073: 0100007F:0035 08080808:0035 FF 00000000:00000000 00:00000000 00000000  1000        0 -1 2 0 0

";
        let got = parse_proc_net(v4, false, Transport::Udp);
        assert_eq!(
            got,
            vec![
                DiagSocket {
                    proto: Transport::Udp,
                    state: 7,
                    local: ("127.0.0.1".parse().unwrap(), 5353),
                    remote: ("0.0.0.0".parse().unwrap(), 0),
                    inode: 116227258,
                    uid: 101,
                    cookie: 0,
                },
                DiagSocket {
                    proto: Transport::Udp,
                    state: TCP_ESTABLISHED,
                    local: ("127.0.0.1".parse().unwrap(), 40000),
                    remote: ("8.8.8.8".parse().unwrap(), 53),
                    inode: 116228224,
                    uid: 1000,
                    cookie: 0,
                },
            ]
        );
        let v6 = "  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode ref pointer drops
  123: 00000000000000000000000000000000:14E9 00000000000000000000000000000000:0000 07 00000000:00000000 00:00000000 00000000   101        0 4343 2 0000000000000000 0
";
        let got = parse_proc_net(v6, true, Transport::Udp);
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].local, ("::".parse().unwrap(), 5353));
        assert_eq!((got[0].proto, got[0].inode), (Transport::Udp, 4343));
        assert!(parse_proc_net("", true, Transport::Udp).is_empty());
    }
}
