//! Where the kernel side keeps each socket's owner between its state changes, and
//! what that store's limits mean for users (`doctor`, the startup warning,
//! `--stats`).
use portwatch_common::{ConfigFlag, ACCEPTED_MAX_ENTRIES, SOCKS_MAX_ENTRIES};

use super::{error::ModeError, inspect::KernelInfo};

/// The owner store.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum SocketStore {
    /// Socket storage, through the BTF tracepoint (Linux 5.12+ with BTF): no cap,
    /// nothing evicted.
    Storage,
    /// An LRU map of `--max-sockets` entries, through the classic tracepoint: the
    /// fallback.
    Lru,
}

/// `--socket-store`: a store, or socket storage where the kernel allows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum StoreChoice {
    Auto,
    Storage,
    Lru,
}

impl StoreChoice {
    /// The stores to try, in order.
    pub fn stores(self) -> &'static [SocketStore] {
        match self {
            StoreChoice::Auto => &[SocketStore::Storage, SocketStore::Lru],
            StoreChoice::Storage => &[SocketStore::Storage],
            StoreChoice::Lru => &[SocketStore::Lru],
        }
    }
}

impl SocketStore {
    pub fn name(self) -> &'static str {
        match self {
            SocketStore::Storage => "socket storage",
            SocketStore::Lru => "LRU map",
        }
    }

    /// Whether this kernel can have it at all (the BTF tracepoint, and the
    /// endpoints and protocol read from the sock).
    pub fn possible(self, kernel: &KernelInfo) -> Result<(), ModeError> {
        if self == SocketStore::Lru {
            return Ok(());
        }
        if !kernel.has_btf || kernel.state_btf_id.is_none() {
            return Err(ModeError::NoBtfTracepoint);
        }
        let needed = ConfigFlag::SockFields.bit() | ConfigFlag::SkProtocol.bit();
        if kernel.config.flags & needed != needed {
            return Err(ModeError::NoSockFields);
        }
        Ok(())
    }
}

/// The store a run uses, and its caps.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StoreInfo {
    pub store: SocketStore,
    /// Entries of the map in use: the LRU map, or (socket storage with an accept
    /// hook that cannot write it) the accepted sockets not yet moved into storage;
    /// None when no map is used (socket storage with fexit).
    pub map_cap: Option<u32>,
}

impl StoreInfo {
    /// The caps `--max-sockets` sets, or their defaults.
    pub fn new(store: SocketStore, accepts_pending: bool, max_sockets: Option<u32>) -> StoreInfo {
        let map_cap = match store {
            SocketStore::Lru => Some(max_sockets.unwrap_or(SOCKS_MAX_ENTRIES)),
            SocketStore::Storage if accepts_pending => {
                Some(max_sockets.unwrap_or(ACCEPTED_MAX_ENTRIES))
            }
            SocketStore::Storage => None,
        };
        StoreInfo { store, map_cap }
    }

    /// One line for `doctor`, the startup warning and the README: what is kept
    /// where, and what the cap means.
    pub fn describe(&self) -> String {
        match (self.store, self.map_cap) {
            (SocketStore::Storage, None) => {
                "owners in socket storage: no cap on open connections".into()
            }
            (SocketStore::Storage, Some(cap)) => format!(
                "owners in socket storage: no cap on open connections; accepted connections wait in a map of {cap} (--max-sockets) until their next state change: beyond that, accepts are counted and attributed to the listener"
            ),
            (SocketStore::Lru, cap) => format!(
                "owners in an LRU map of {} sockets (--max-sockets): beyond that many open sockets the least recently used owners are evicted and their events name no process",
                cap.unwrap_or(SOCKS_MAX_ENTRIES)
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caps_follow_the_store_and_the_flag() {
        assert_eq!(
            StoreInfo::new(SocketStore::Lru, false, None).map_cap,
            Some(SOCKS_MAX_ENTRIES)
        );
        assert_eq!(
            StoreInfo::new(SocketStore::Lru, true, Some(1000)).map_cap,
            Some(1000)
        );
        assert_eq!(
            StoreInfo::new(SocketStore::Storage, false, Some(1000)).map_cap,
            None
        );
        assert_eq!(
            StoreInfo::new(SocketStore::Storage, true, None).map_cap,
            Some(ACCEPTED_MAX_ENTRIES)
        );
        assert_eq!(
            StoreChoice::Auto.stores(),
            &[SocketStore::Storage, SocketStore::Lru]
        );
    }
}
