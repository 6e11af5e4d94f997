//! The TCP sockets that exist now, as `ss -tan` would list them: read through
//! sock_diag netlink (no other program run), or from /proc/net/tcp{,6} where the
//! kernel has no TCP sock_diag.
use std::{fs, io, net::IpAddr};

use netlink_packet_core::{
    NetlinkHeader, NetlinkMessage, NetlinkPayload, NLM_F_DUMP, NLM_F_REQUEST,
};
pub use netlink_packet_sock_diag::constants::{TCP_ESTABLISHED, TCP_LISTEN};
use netlink_packet_sock_diag::{
    constants::{AF_INET, AF_INET6, IPPROTO_TCP},
    inet::{ExtensionFlags, InetRequest, SocketId, StateFlags},
    SockDiagMessage,
};
use netlink_sys::{protocols::NETLINK_SOCK_DIAG, Socket, SocketAddr};

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
    pub state: u8,
    pub local: (IpAddr, u16),
    pub remote: (IpAddr, u16),
    pub inode: u32,
    pub uid: u32,
    pub cookie: u64,
}

fn dump(
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
            protocol: IPPROTO_TCP,
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
    sockets_in(StateFlags::LISTEN | StateFlags::ESTABLISHED, &mut |s| {
        all.push(s)
    })?;
    Ok(all)
}

/// Each TCP socket that is still a socket, handed to `each` as it is read (a
/// host may have hundreds of thousands): every state but TIME_WAIT (a timewait
/// entry stands in for a closed socket) and CLOSE.
pub fn each_open_tcp_socket(each: &mut dyn FnMut(DiagSocket)) -> Result<(), SockDiagError> {
    sockets_in(
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

fn sockets_in(states: StateFlags, each: &mut dyn FnMut(DiagSocket)) -> Result<(), SockDiagError> {
    let diag =
        dump(AF_INET, states.clone(), each).and_then(|()| dump(AF_INET6, states.clone(), each));
    let Err(diag_error) = diag else {
        return Ok(());
    };
    for (path, v6) in [("/proc/net/tcp", false), ("/proc/net/tcp6", true)] {
        match fs::read_to_string(path) {
            Ok(text) => parse_proc_net_tcp(&text, v6)
                .into_iter()
                .filter(|s| states.bits() & (1 << s.state) != 0)
                .for_each(&mut *each),
            // No IPv6 in this kernel: nothing to list there.
            Err(_) if v6 => {}
            Err(source) => {
                return Err(SockDiagError::Fallback {
                    diag: Box::new(diag_error),
                    path,
                    source,
                })
            }
        }
    }
    Ok(())
}

/// An address as /proc/net/tcp prints it: 32-bit words in the kernel's byte order.
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

/// The sockets of a /proc/net/tcp{,6} table.
pub fn parse_proc_net_tcp(text: &str, v6: bool) -> Vec<DiagSocket> {
    text.lines()
        .skip(1)
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            Some(DiagSocket {
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
        let got = parse_proc_net_tcp(v4, false);
        assert_eq!(
            got,
            vec![
                DiagSocket {
                    state: TCP_LISTEN,
                    local: ("127.0.0.1".parse().unwrap(), 21),
                    remote: ("0.0.0.0".parse().unwrap(), 0),
                    inode: 31337,
                    uid: 0,
                    cookie: 0,
                },
                DiagSocket {
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
        let got = parse_proc_net_tcp(v6, true);
        assert_eq!(got[0].local, ("::1".parse().unwrap(), 8080));
        assert_eq!(got[1].local, ("::ffff:127.0.0.1".parse().unwrap(), 8080));
        assert_eq!(got[1].remote.1, 54321);
        assert_eq!(
            plain(got[1].local.0),
            "127.0.0.1".parse::<IpAddr>().unwrap()
        );
    }
}
