//! What portwatch reports, in userspace terms: one [`ConnEvent`] per kernel event,
//! with both endpoints classified.
use std::{fmt, net::IpAddr, time::Duration};

use chrono::{DateTime, Utc};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventKind {
    Listen,
    Accept,
    Connect,
    ConnectFailed,
    Close,
    /// A socket that already existed when portwatch looked (sock_diag).
    Snapshot,
}

impl EventKind {
    pub fn name(self) -> &'static str {
        match self {
            EventKind::Listen => "listen",
            EventKind::Accept => "accept",
            EventKind::Connect => "connect",
            EventKind::ConnectFailed => "connect-failed",
            EventKind::Close => "close",
            EventKind::Snapshot => "snapshot",
        }
    }
}

/// IANA's three ranges.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, clap::ValueEnum)]
pub enum PortClass {
    /// 0-1023: system or well-known ports.
    WellKnown,
    /// 1024-49151: user or registered ports.
    Registered,
    /// 49152-65535: dynamic or private ports.
    Dynamic,
}

impl PortClass {
    pub fn of(port: u16) -> PortClass {
        match port {
            0..=1023 => PortClass::WellKnown,
            1024..=49151 => PortClass::Registered,
            _ => PortClass::Dynamic,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            PortClass::WellKnown => "well-known",
            PortClass::Registered => "registered",
            PortClass::Dynamic => "dynamic",
        }
    }
}

impl fmt::Display for PortClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// What is unusual about an event (see `notes`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Note {
    /// A listener on a port the kernel may also hand to clients as a temporary port.
    ListenerInEphemeralRange,
    /// A listener on an IANA dynamic (private, temporary) port.
    ListenerOnDynamicPort,
    /// A connection served on an IANA dynamic port.
    ServerOnDynamicPort,
    /// A client whose own port is a well-known (system) port.
    ClientFromWellKnownPort,
    /// A client whose own port is outside the host's ephemeral range: bound on purpose.
    ClientFromFixedPort,
    /// A client connecting to a dynamic (temporary) port on the other side.
    ClientToDynamicPort,
}

impl Note {
    /// Stable identifier (JSON `notes`).
    pub fn code(self) -> &'static str {
        match self {
            Note::ListenerInEphemeralRange => "listener-in-ephemeral-range",
            Note::ListenerOnDynamicPort => "listener-on-dynamic-port",
            Note::ServerOnDynamicPort => "server-on-dynamic-port",
            Note::ClientFromWellKnownPort => "client-from-well-known-port",
            Note::ClientFromFixedPort => "client-from-fixed-port",
            Note::ClientToDynamicPort => "client-to-dynamic-port",
        }
    }

    /// Short human text (table DETAIL).
    pub fn text(self) -> &'static str {
        match self {
            Note::ListenerInEphemeralRange => "listener in the ephemeral range",
            Note::ListenerOnDynamicPort => "listener on a dynamic port",
            Note::ServerOnDynamicPort => "server on a dynamic port",
            Note::ClientFromWellKnownPort => "client from a well-known port",
            Note::ClientFromFixedPort => "client from a non-ephemeral port",
            Note::ClientToDynamicPort => "client to a dynamic port",
        }
    }
}

/// The local machine's part in a connection, in the seed document's words.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, clap::ValueEnum)]
pub enum Role {
    /// Local machine as a listening server.
    Listener,
    /// Local machine handling a client as a server.
    Server,
    /// Local machine as a client connecting to a server.
    Client,
}

impl Role {
    pub fn name(self) -> &'static str {
        match self {
            Role::Listener => "listener",
            Role::Server => "server",
            Role::Client => "client",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Family {
    Ipv4,
    Ipv6,
}

impl Family {
    pub fn name(self) -> &'static str {
        match self {
            Family::Ipv4 => "ipv4",
            Family::Ipv6 => "ipv6",
        }
    }
}

/// A TCP state, as the kernel numbers and names them.
pub use portwatch_common::TcpState;

pub use super::services::Transport;

impl ConnEvent {
    /// The socket's state after the event, as `ss` names it: TCP's states; a
    /// UDP socket is `UNCONN` while it has no peer (the kernel keeps it in CLOSE
    /// meanwhile) and `CLOSE` only once it is closed.
    pub fn state_text(&self) -> &'static str {
        match (self.proto, self.state) {
            (Transport::Udp, TcpState::Close) if self.kind != EventKind::Close => "UNCONN",
            (_, state) => state.name(),
        }
    }

    /// The state before the event, named the same way.
    pub fn old_state_text(&self) -> &'static str {
        match (self.proto, self.old_state) {
            (Transport::Udp, TcpState::Close) => "UNCONN",
            (_, state) => state.name(),
        }
    }
}

/// The process a socket belongs to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Owner {
    pub pid: u32,
    pub tid: u32,
    pub uid: u32,
    /// The task name exactly as the kernel has it (it may hold any byte but NUL;
    /// printers escape it).
    pub comm: String,
    /// Parent process id, read by the kernel side at the event.
    pub ppid: Option<u32>,
    /// cgroup v2 id, read by the kernel side at the event.
    pub cgroup_id: Option<u64>,
    /// Process start time, ns since boot: with `pid`, names exactly one process.
    pub start_ns: Option<u64>,
}

/// What userspace adds about the owning process, checked to be the same process
/// the kernel saw (same pid and start time).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ProcessDetails {
    /// Shared with the cache: events of one process do not copy its command line.
    pub exe: Option<std::sync::Arc<str>>,
    pub cmdline: Option<std::sync::Arc<[String]>>,
    pub user: Option<String>,
    /// cgroup v2 path, from the kernel's cgroup id.
    pub cgroup: Option<String>,
    pub container_id: Option<String>,
    /// Why exe/cmdline are missing: the process had exited, or its pid already
    /// belonged to another process, before userspace could look.
    pub missing: Option<ProcessMissing>,
}

/// Why a process's executable and command line could not be read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProcessMissing {
    /// It had exited before userspace looked.
    Exited,
    /// Its pid already belonged to another process.
    PidReused,
}

impl ProcessMissing {
    /// What users read (JSON `process_missing`).
    pub fn text(self) -> &'static str {
        match self {
            ProcessMissing::Exited => "process exited",
            ProcessMissing::PidReused => "pid reused by another process",
        }
    }
}

/// One end of a connection, classified.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Endpoint {
    pub addr: IpAddr,
    pub port: u16,
    pub class: PortClass,
    /// Inside this host's ephemeral port range (ip_local_port_range).
    pub ephemeral: bool,
    pub service: Option<&'static str>,
}

/// Why a connect failed, from the socket's error.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConnectError {
    /// Positive errno, 0 when the kernel left none (the process gave up first).
    pub errno: i32,
    pub reason: &'static str,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConnEvent {
    pub time: DateTime<Utc>,
    pub kind: EventKind,
    pub role: Role,
    pub proto: Transport,
    pub family: Family,
    /// None when the socket's process is not known (it began before tracing).
    pub owner: Option<Owner>,
    /// The owner was read in the process's own context, not inferred.
    pub pid_exact: bool,
    pub local: Endpoint,
    pub remote: Endpoint,
    pub state: TcpState,
    pub old_state: TcpState,
    pub sock_id: u64,
    /// `sock_id` is the kernel's socket cookie (the same in every event of the
    /// socket), not an id portwatch made.
    pub cookie_id: bool,
    /// The socket's network namespace (the inode number `ls -l /proc/PID/ns/net`
    /// shows); None where the kernel side could not read it.
    pub netns: Option<u32>,
    /// Connect: the handshake. Close: the connection's lifetime.
    pub duration: Option<Duration>,
    pub error: Option<ConnectError>,
    /// Filled in by enrichment; None when the owner is unknown.
    /// Shared by the events of one process.
    pub process: Option<std::sync::Arc<ProcessDetails>>,
    /// What is unusual about this event, per the seed's port semantics.
    pub notes: Vec<Note>,
    /// A socket read back from the history (`portwatch query`): its lifetime.
    pub lifetime: Option<Lifetime>,
    /// A close the kernel side never reported, inferred because the kernel no
    /// longer has the socket (see `pipeline::reconcile`).
    pub inferred: bool,
}

/// When a recorded socket opened and closed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Lifetime {
    /// None: it existed before recording began (first seen in the snapshot).
    pub opened: Option<DateTime<Utc>>,
    /// None: still open when the recording last wrote.
    pub closed: Option<DateTime<Utc>>,
}
