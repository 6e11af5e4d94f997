//! Turning the kernel's raw records into [`ConnEvent`]s. Pure: the clock offset and
//! the ephemeral range are passed in.
use std::{
    hash::{BuildHasher, RandomState},
    time::Duration,
};

use chrono::{DateTime, Utc};
use portwatch_common::{self as common, Event, Origin, OwnerFlag, UnknownValue, AF_INET, AF_INET6};

use super::{
    address,
    classify::{self, endpoint, EphemeralRange},
    model::{ConnEvent, ConnectError, EventKind, Owner, Role, Transport},
    notes,
};

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DecodeError {
    #[error("ring buffer record of {0} bytes, expected {expected}", expected = Event::SIZE)]
    Size(usize),
    #[error(transparent)]
    Value(#[from] UnknownValue),
    #[error("unknown address family {0}")]
    Family(u16),
    #[error("unknown protocol {0}")]
    Proto(u8),
}

/// Maps the kernel's CLOCK_MONOTONIC timestamps to wall-clock time.
#[derive(Clone, Copy, Debug)]
pub struct Clock {
    /// CLOCK_REALTIME minus CLOCK_MONOTONIC, in ns.
    pub realtime_minus_monotonic_ns: i128,
}

impl Clock {
    /// Read both clocks now.
    pub fn now() -> Clock {
        use nix::time::{clock_gettime, ClockId};
        let ns = |id| {
            clock_gettime(id)
                .map(|t| t.tv_sec() as i128 * 1_000_000_000 + t.tv_nsec() as i128)
                .unwrap_or(0)
        };
        let mono = ns(ClockId::CLOCK_MONOTONIC);
        let real = ns(ClockId::CLOCK_REALTIME);
        Clock {
            realtime_minus_monotonic_ns: real - mono,
        }
    }

    pub fn wall(self, monotonic_ns: u64) -> DateTime<Utc> {
        let ns = monotonic_ns as i128 + self.realtime_minus_monotonic_ns;
        DateTime::from_timestamp_nanos(ns.clamp(0, i64::MAX as i128) as i64)
    }
}

/// Read one ring-buffer record.
pub fn parse_record(bytes: &[u8]) -> Result<Event, DecodeError> {
    if bytes.len() < Event::SIZE {
        return Err(DecodeError::Size(bytes.len()));
    }
    // SAFETY: Event is plain old data and the length was checked; the ring buffer
    // gives 8-byte alignment but read_unaligned does not rely on it.
    Ok(unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast::<Event>()) })
}

/// A task name as text: up to the first NUL.
pub fn comm_text(comm: &[u8]) -> String {
    let end = comm.iter().position(|&b| b == 0).unwrap_or(comm.len());
    String::from_utf8_lossy(&comm[..end]).into_owned()
}

/// Decodes the kernel's records for one run.
pub struct Decoder {
    clock: Clock,
    range: EphemeralRange,
    /// The key of the socket ids: kernel addresses are never printed.
    ids: RandomState,
}

impl Decoder {
    /// The host's ephemeral port range the events are classified with.
    pub fn range(&self) -> EphemeralRange {
        self.range
    }

    pub fn new(clock: Clock, range: EphemeralRange) -> Decoder {
        Decoder {
            clock,
            range,
            ids: RandomState::new(),
        }
    }

    /// The id printed for a record's socket: the kernel's socket cookie where the
    /// kernel side got it (unique for the boot, the id sock_diag and `ss -e` show,
    /// so a snapshot and live events agree), else a keyed hash of the socket's
    /// kernel address and the time the kernel side first recorded it. The address
    /// alone is never printed, and is not enough: the kernel reuses a freed
    /// socket's memory for later sockets.
    pub fn sock_id(&self, raw: &Event) -> u64 {
        if raw.proto == common::IPPROTO_UDP as u8 {
            // A UDP socket's inode number: never reused within the boot, and what
            // sock_diag and /proc/PID/fd show.
            raw.sock_ino as u64
        } else if raw.sock_cookie != 0 {
            raw.sock_cookie
        } else {
            self.ids.hash_one((raw.sock_id, raw.sock_born_ns))
        }
    }

    pub fn decode(&self, raw: &Event) -> Result<ConnEvent, DecodeError> {
        decode(raw, self)
    }
}

fn decode(raw: &Event, decoder: &Decoder) -> Result<ConnEvent, DecodeError> {
    let Decoder { clock, range, .. } = *decoder;
    let kind = match raw.kind()? {
        common::EventKind::Listen => EventKind::Listen,
        common::EventKind::Accept => EventKind::Accept,
        common::EventKind::Connect => EventKind::Connect,
        common::EventKind::ConnectFailed => EventKind::ConnectFailed,
        common::EventKind::Close => EventKind::Close,
    };
    if raw.family != AF_INET && raw.family != AF_INET6 {
        return Err(DecodeError::Family(raw.family));
    }
    let proto = match raw.proto as u16 {
        common::IPPROTO_TCP => Transport::Tcp,
        common::IPPROTO_UDP => Transport::Udp,
        _ => return Err(DecodeError::Proto(raw.proto)),
    };
    let local_addr = address::from_kernel(raw.family, &raw.saddr);
    let remote_addr = address::from_kernel(raw.family, &raw.daddr);
    // The family of what crosses the wire: a v4-mapped socket speaks IPv4.
    let family = address::family(local_addr);
    let origin = match raw.origin()? {
        Origin::Listener => Some(Role::Listener),
        Origin::Server => Some(Role::Server),
        Origin::Client => Some(Role::Client),
        Origin::Unknown => None,
    };
    let (state, old_state) = (raw.new_state()?, raw.old_state()?);
    let owner = raw.has(OwnerFlag::Known).then(|| Owner {
        pid: raw.pid,
        tid: raw.tid,
        uid: raw.uid,
        comm: comm_text(&raw.comm),
        ppid: (raw.ppid != 0).then_some(raw.ppid),
        cgroup_id: (raw.cgroup_id != 0).then_some(raw.cgroup_id),
        start_ns: (raw.task_start_ns != 0).then_some(raw.task_start_ns),
    });
    let duration = match kind {
        // A UDP connect sends nothing: no handshake to time.
        EventKind::Connect if proto == Transport::Udp => None,
        EventKind::Connect | EventKind::ConnectFailed => Some(raw.duration_ns),
        EventKind::Close if raw.duration_ns > 0 => Some(raw.duration_ns),
        _ => None,
    }
    .map(Duration::from_nanos);
    let error = (kind == EventKind::ConnectFailed).then(|| ConnectError {
        errno: raw.error,
        reason: classify::connect_failure_reason(raw.error),
    });
    let mut event = ConnEvent {
        time: clock.wall(raw.ts_ns),
        kind,
        role: classify::role(kind, origin, raw.sport, raw.dport, range),
        proto,
        family,
        pid_exact: owner.is_some() && raw.has(OwnerFlag::PidExact),
        owner,
        local: endpoint(local_addr, raw.sport, range, proto),
        remote: endpoint(remote_addr, raw.dport, range, proto),
        state,
        old_state,
        sock_id: decoder.sock_id(raw),
        cookie_id: raw.sock_cookie != 0 && proto == Transport::Tcp,
        netns: (raw.netns != 0).then_some(raw.netns),
        duration,
        error,
        process: None,
        notes: Vec::new(),
        lifetime: None,
        inferred: false,
    };
    event.notes = notes::notes(&event, range);
    Ok(event)
}

#[cfg(test)]
pub(crate) mod tests {
    use std::net::{IpAddr, Ipv6Addr};

    use portwatch_common::TcpState;

    use super::*;
    use crate::event::model::{Family, PortClass};

    pub fn raw_event() -> Event {
        let mut comm = [0u8; 16];
        comm[..4].copy_from_slice(b"curl");
        let mut saddr = [0u8; 16];
        saddr[..4].copy_from_slice(&[127, 0, 0, 1]);
        let mut daddr = [0u8; 16];
        daddr[..4].copy_from_slice(&[222, 222, 222, 222]);
        Event {
            ts_ns: 1_000_000_000,
            sock_id: 0xffff_8880_0000_1000,
            sock_born_ns: 900_000_000,
            sock_cookie: 0,
            duration_ns: 1_500_000,
            pid: 4242,
            tid: 4243,
            uid: 1000,
            error: 0,
            sport: 51031,
            dport: 80,
            family: AF_INET,
            kind: common::EventKind::Connect.into(),
            origin: Origin::Client.into(),
            old_state: TcpState::SynSent.into(),
            new_state: TcpState::Established.into(),
            flags: OwnerFlag::Known.bit() | OwnerFlag::PidExact.bit(),
            proto: common::IPPROTO_TCP as u8,
            saddr,
            daddr,
            comm,
            ppid: 4000,
            netns: 4026531840,
            sock_ino: 0,
            cgroup_id: 1234,
            task_start_ns: 5_000_000_000,
        }
    }

    /// The seed's case 2: 127.0.0.1:51031 -> 222.222.222.222:80, by pid 4242 `curl`.
    pub fn sample_event() -> ConnEvent {
        let clock = Clock {
            realtime_minus_monotonic_ns: 0,
        };
        let e = Decoder::new(clock, EphemeralRange::LINUX_DEFAULT)
            .decode(&raw_event())
            .unwrap();
        assert_eq!(e.duration, Some(Duration::from_micros(1500)));
        e
    }

    /// [`sample_event`] as another kind and role, between other ports.
    pub fn with_ports(kind: EventKind, role: Role, local: u16, remote: u16) -> ConnEvent {
        let range = EphemeralRange::LINUX_DEFAULT;
        let mut e = sample_event();
        e.kind = kind;
        e.role = role;
        e.local = endpoint(e.local.addr, local, range, Transport::Tcp);
        e.remote = endpoint(e.remote.addr, remote, range, Transport::Tcp);
        e
    }

    const CLOCK: Clock = Clock {
        realtime_minus_monotonic_ns: 1_700_000_000_000_000_000,
    };

    fn decoder() -> Decoder {
        Decoder::new(CLOCK, EphemeralRange::LINUX_DEFAULT)
    }

    #[test]
    fn a_reused_socket_address_gets_a_new_id() {
        let d = decoder();
        let raw = raw_event();
        let first = d.decode(&raw).unwrap().sock_id;
        assert_eq!(d.decode(&raw).unwrap().sock_id, first);
        let mut reused = raw;
        reused.sock_born_ns += 1;
        assert_ne!(d.decode(&reused).unwrap().sock_id, first);
        // Never the kernel address itself.
        assert_ne!(first, raw.sock_id);
        // The kernel's cookie, where it came, names the socket by itself.
        let mut cookie = raw;
        cookie.sock_cookie = 4242;
        assert_eq!(d.decode(&cookie).unwrap().sock_id, 4242);
        cookie.sock_born_ns += 7;
        assert_eq!(d.decode(&cookie).unwrap().sock_id, 4242);
    }

    fn as_bytes(e: &Event) -> Vec<u8> {
        let p = (e as *const Event).cast::<u8>();
        unsafe { std::slice::from_raw_parts(p, Event::SIZE) }.to_vec()
    }

    #[test]
    fn connect_record_decodes_field_by_field() {
        let raw = parse_record(&as_bytes(&raw_event())).unwrap();
        let e = decoder().decode(&raw).unwrap();
        assert_eq!(e.kind, EventKind::Connect);
        assert_eq!(e.role, Role::Client);
        assert_eq!(e.family, Family::Ipv4);
        assert_eq!(
            e.owner,
            Some(Owner {
                pid: 4242,
                tid: 4243,
                uid: 1000,
                comm: "curl".into(),
                ppid: Some(4000),
                cgroup_id: Some(1234),
                start_ns: Some(5_000_000_000),
            })
        );
        assert!(e.pid_exact);
        assert_eq!(e.local.addr, "127.0.0.1".parse::<IpAddr>().unwrap());
        assert_eq!(e.local.port, 51031);
        assert_eq!(e.local.class, PortClass::Dynamic);
        assert!(e.local.ephemeral);
        assert_eq!(e.local.service, None);
        assert_eq!(e.remote.addr, "222.222.222.222".parse::<IpAddr>().unwrap());
        assert_eq!(e.remote.port, 80);
        assert_eq!(e.remote.class, PortClass::WellKnown);
        assert!(!e.remote.ephemeral);
        assert_eq!(e.remote.service, Some("http"));
        assert_eq!(e.state.name(), "ESTABLISHED");
        assert_eq!(e.old_state.name(), "SYN_SENT");
        assert_eq!(e.duration, Some(Duration::from_micros(1500)));
        assert_eq!(e.error, None);
        assert_eq!(
            e.time,
            DateTime::from_timestamp_nanos(1_700_000_001_000_000_000)
        );
    }

    #[test]
    fn short_record_and_bad_fields_are_errors() {
        assert_eq!(parse_record(&[0u8; 10]), Err(DecodeError::Size(10)));
        let mut raw = raw_event();
        raw.kind = 99;
        assert_eq!(
            decoder().decode(&raw),
            Err(DecodeError::Value(UnknownValue {
                what: "event kind",
                value: 99
            }))
        );
        let mut raw = raw_event();
        raw.new_state = 0;
        assert!(matches!(
            decoder().decode(&raw),
            Err(DecodeError::Value(UnknownValue { value: 0, .. }))
        ));
        let mut raw = raw_event();
        raw.family = 1;
        assert_eq!(decoder().decode(&raw), Err(DecodeError::Family(1)));
    }

    #[test]
    fn ipv6_and_v4_mapped_addresses() {
        let mut raw = raw_event();
        raw.family = AF_INET6;
        raw.saddr = "::1".parse::<Ipv6Addr>().unwrap().octets();
        raw.daddr = "::ffff:10.1.2.3".parse::<Ipv6Addr>().unwrap().octets();
        let e = decoder().decode(&raw).unwrap();
        assert_eq!(e.family, Family::Ipv6);
        assert_eq!(e.local.addr, "::1".parse::<IpAddr>().unwrap());
        raw.saddr = "::ffff:127.0.0.1".parse::<Ipv6Addr>().unwrap().octets();
        let e = decoder().decode(&raw).unwrap();
        assert_eq!(e.family, Family::Ipv4);
        assert_eq!(e.local.addr, "127.0.0.1".parse::<IpAddr>().unwrap());
        assert_eq!(e.remote.addr, "10.1.2.3".parse::<IpAddr>().unwrap());
    }

    #[test]
    fn unknown_owner_and_inexact_pid() {
        let mut raw = raw_event();
        raw.kind = common::EventKind::Close.into();
        raw.origin = Origin::Unknown.into();
        raw.flags = 0;
        let e = decoder().decode(&raw).unwrap();
        assert_eq!(e.owner, None);
        assert!(!e.pid_exact);
        // Inferred from the ports: temporary 51031 facing 80.
        assert_eq!(e.role, Role::Client);
        raw.flags = OwnerFlag::Known.bit();
        raw.origin = Origin::Server.into();
        let e = decoder().decode(&raw).unwrap();
        assert!(e.owner.is_some());
        assert!(!e.pid_exact);
        assert_eq!(e.role, Role::Server);
    }

    #[test]
    fn connect_failure_carries_reason() {
        let mut raw = raw_event();
        raw.kind = common::EventKind::ConnectFailed.into();
        raw.error = libc::ECONNREFUSED;
        raw.new_state = TcpState::Close.into();
        let e = decoder().decode(&raw).unwrap();
        assert_eq!(
            e.error,
            Some(ConnectError {
                errno: libc::ECONNREFUSED,
                reason: "refused"
            })
        );
        assert_eq!(e.role, Role::Client);
    }

    #[test]
    fn comm_stops_at_nul_and_keeps_other_bytes() {
        assert_eq!(comm_text(b"nginx\0\0\0"), "nginx");
        assert_eq!(comm_text(b"a\x1b[31mb"), "a\x1b[31mb");
        assert_eq!(comm_text(b"full-sixteen-ch!"), "full-sixteen-ch!");
    }
}
