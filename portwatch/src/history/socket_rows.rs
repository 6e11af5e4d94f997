//! Which row of which socket an event is about. A TCP socket is one row. A UDP
//! socket is one row per peer it exchanged datagrams with (a flow: `connect` or
//! `accept`), and one more while it is bound as a listener; its close closes
//! them all.
use std::{collections::HashMap, net::IpAddr};

use crate::event::{
    address::plain,
    model::{ConnEvent, Role, Transport},
};

/// A UDP flow's peer; None for the socket's own row (a TCP socket, a UDP
/// listener).
pub type Peer = Option<(IpAddr, u16)>;

/// One socket row's identity. TCP and UDP sockets are told apart: their ids come
/// from different counters (TCP: the socket cookie or an id portwatch makes; UDP:
/// the inode number) and may meet.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct RowKey {
    pub proto: Transport,
    pub sock_id: u64,
    pub peer: Peer,
}

impl RowKey {
    pub fn of(e: &ConnEvent) -> RowKey {
        let peer = match (e.proto, e.role) {
            (Transport::Udp, Role::Server | Role::Client) => {
                Some((plain(e.remote.addr), e.remote.port))
            }
            _ => None,
        };
        RowKey {
            proto: e.proto,
            sock_id: e.sock_id,
            peer,
        }
    }
}

/// Something per socket row, found by [`RowKey`], and all of a UDP socket's at
/// once. TCP rows are kept apart, one per socket, in a plain map: no map per
/// socket for the common case.
pub struct BySocket<T> {
    tcp: HashMap<u64, T>,
    /// UDP socket (inode) -> its rows by peer.
    udp: HashMap<u64, HashMap<Peer, T>>,
}

impl<T> Default for BySocket<T> {
    fn default() -> Self {
        BySocket {
            tcp: HashMap::new(),
            udp: HashMap::new(),
        }
    }
}

impl<T> BySocket<T> {
    pub fn get_mut(&mut self, key: &RowKey) -> Option<&mut T> {
        match key.proto {
            Transport::Tcp => self.tcp.get_mut(&key.sock_id),
            Transport::Udp => self.udp.get_mut(&key.sock_id)?.get_mut(&key.peer),
        }
    }

    pub fn contains(&self, key: &RowKey) -> bool {
        match key.proto {
            Transport::Tcp => self.tcp.contains_key(&key.sock_id),
            Transport::Udp => self
                .udp
                .get(&key.sock_id)
                .is_some_and(|rows| rows.contains_key(&key.peer)),
        }
    }

    /// Set the row's value; the one it had, if any.
    pub fn insert(&mut self, key: RowKey, value: T) -> Option<T> {
        match key.proto {
            Transport::Tcp => self.tcp.insert(key.sock_id, value),
            Transport::Udp => self
                .udp
                .entry(key.sock_id)
                .or_default()
                .insert(key.peer, value),
        }
    }

    pub fn remove(&mut self, key: &RowKey) -> Option<T> {
        match key.proto {
            Transport::Tcp => self.tcp.remove(&key.sock_id),
            Transport::Udp => {
                let rows = self.udp.get_mut(&key.sock_id)?;
                let value = rows.remove(&key.peer);
                if rows.is_empty() {
                    self.udp.remove(&key.sock_id);
                }
                value
            }
        }
    }

    /// Every row of the UDP socket `sock_id`, taken out.
    pub fn remove_udp_socket(&mut self, sock_id: u64) -> impl Iterator<Item = T> {
        self.udp
            .remove(&sock_id)
            .into_iter()
            .flat_map(HashMap::into_values)
    }

    /// Every row, taken out.
    pub fn drain(&mut self) -> impl Iterator<Item = (RowKey, T)> + '_ {
        let tcp = self.tcp.drain().map(|(sock_id, value)| {
            let key = RowKey {
                proto: Transport::Tcp,
                sock_id,
                peer: None,
            };
            (key, value)
        });
        let udp = self.udp.drain().flat_map(|(sock_id, rows)| {
            rows.into_iter().map(move |(peer, value)| {
                let key = RowKey {
                    proto: Transport::Udp,
                    sock_id,
                    peer,
                };
                (key, value)
            })
        });
        tcp.chain(udp)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn udp(sock_id: u64, peer: Peer) -> RowKey {
        RowKey {
            proto: Transport::Udp,
            sock_id,
            peer,
        }
    }

    #[test]
    fn a_udp_socket_has_a_row_per_peer_and_loses_them_together() {
        let a = Some((IpAddr::from([10, 0, 0, 1]), 53));
        let b = Some((IpAddr::from([10, 0, 0, 2]), 53));
        let mut rows = BySocket::default();
        rows.insert(udp(7, None), "listener");
        rows.insert(udp(7, a), "flow a");
        rows.insert(udp(7, b), "flow b");
        rows.insert(udp(8, a), "other socket");
        let tcp = RowKey {
            proto: Transport::Tcp,
            sock_id: 7,
            peer: None,
        };
        rows.insert(tcp, "tcp socket 7");
        let mut gone: Vec<&str> = rows.remove_udp_socket(7).collect();
        gone.sort_unstable();
        assert_eq!(gone, ["flow a", "flow b", "listener"]);
        assert!(rows.contains(&udp(8, a)));
        assert!(rows.contains(&tcp));
        assert_eq!(rows.remove(&udp(8, a)), Some("other socket"));
        assert_eq!(rows.drain().count(), 1);
    }
}
