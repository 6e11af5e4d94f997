//! Learning a baseline from what a host does: its TCP and UDP listeners (from the
//! snapshot and live `listen` events) and, when asked, each program's outbound
//! destinations (TCP connects, UDP flows it began); and the listeners a baseline
//! expects that are gone.
use std::collections::{BTreeMap, BTreeSet};

use super::{
    check::{bind_within, Drift, DriftKind},
    entry::{self, port_text, Bind, Expected, Listener, Outbound, PortSpec},
};
use crate::event::{
    classify::EphemeralRange,
    model::{ConnEvent, EventKind, Family, Role},
};

/// At least this many ports of the ephemeral range held by one program (same user,
/// family and bind) are learnt as the whole range: such a program (an RPC service)
/// gets new ones each time it starts.
const EPHEMERAL_RANGE_FROM: usize = 3;

/// A listener as learnt: everything but its port.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Holder {
    exe: Option<String>,
    user: Option<String>,
    /// `tcp` or `udp`.
    protocol: &'static str,
    family: &'static str,
    bind: Bind,
    cgroup: Option<String>,
    container: Option<String>,
}

/// What was seen so far.
#[derive(Default)]
pub struct Learnt {
    listeners: BTreeMap<Holder, BTreeSet<u16>>,
    /// Listeners (holder, port) present at the end of learning; None when
    /// learning was the snapshot alone (everything was present).
    at_end: Option<BTreeSet<(Holder, u16)>>,
    /// (exe, user, protocol) -> remote ports.
    outbound: BTreeMap<(String, Option<String>, &'static str), BTreeSet<u16>>,
}

fn family_name(family: Family) -> &'static str {
    match family {
        Family::Ipv4 => "ipv4",
        Family::Ipv6 => "ipv6",
    }
}

fn holder(e: &ConnEvent) -> Holder {
    let details = e.process.as_deref();
    Holder {
        exe: details.and_then(|d| d.exe.as_deref()).map(str::to_string),
        user: details.and_then(|d| d.user.clone()),
        protocol: e.proto.name(),
        // The socket's own family: a dual-stack listener is IPv6.
        family: if e.local.addr.is_ipv6() {
            "ipv6"
        } else {
            family_name(e.family)
        },
        bind: Bind::of(e.local.addr),
        cgroup: details.and_then(|d| d.cgroup.clone()),
        container: details.and_then(|d| d.container_id.clone()),
    }
}

impl Learnt {
    /// The listeners that exist at the end of learning (the snapshot events
    /// then): those learnt that are not among them come and go.
    pub fn finish(&mut self, now: &[ConnEvent]) {
        self.at_end = Some(
            now.iter()
                .filter(|e| e.role == Role::Listener)
                .map(|e| (holder(e), e.local.port))
                .collect(),
        );
    }

    fn transient(&self, h: &Holder, port: u16) -> bool {
        self.at_end
            .as_ref()
            .is_some_and(|end| !end.contains(&(h.clone(), port)))
    }

    pub fn see(&mut self, e: &ConnEvent) {
        let details = e.process.as_deref();
        match (e.role, e.kind) {
            (Role::Listener, EventKind::Listen | EventKind::Snapshot) => {
                self.listeners
                    .entry(holder(e))
                    .or_default()
                    .insert(e.local.port);
            }
            (Role::Client, EventKind::Connect) => {
                if let Some(exe) = details.and_then(|d| d.exe.as_deref()) {
                    let user = details.and_then(|d| d.user.clone());
                    self.outbound
                        .entry((exe.to_string(), user, e.proto.name()))
                        .or_default()
                        .insert(e.remote.port);
                }
            }
            _ => {}
        }
    }

    /// The listener entries, sorted, with their notes: (entry, note, commented).
    pub fn listeners(&self, range: EphemeralRange) -> Vec<(Listener, Option<String>, bool)> {
        let mut out = Vec::new();
        for (h, ports) in &self.listeners {
            let ephemeral: Vec<u16> = ports
                .iter()
                .copied()
                .filter(|p| range.contains(*p))
                .collect();
            let mut specs: Vec<PortSpec> = Vec::new();
            let mut note = None;
            if ephemeral.len() >= EPHEMERAL_RANGE_FROM {
                specs.push(PortSpec::Range(format!("{}-{}", range.low, range.high)));
                note =
                    Some(format!(
                    "listened on {} ports of the ephemeral range ({}): learnt as the whole range",
                    ephemeral.len(),
                    ephemeral.iter().map(u16::to_string).collect::<Vec<_>>().join(", ")
                ));
                specs.extend(
                    ports
                        .iter()
                        .filter(|p| !range.contains(**p))
                        .map(|p| PortSpec::One(i64::from(*p))),
                );
            } else {
                specs.extend(ports.iter().map(|p| PortSpec::One(i64::from(*p))));
            }
            let commented = h.exe.is_none();
            if commented {
                note = Some(
                    "owner unknown (its process could not be read): review, then uncomment with its executable"
                        .into(),
                );
            }
            for port in specs {
                // Gone at the end of learning: every port it stands for was.
                let transient = match &port {
                    PortSpec::One(p) => self.transient(h, *p as u16),
                    PortSpec::Range(_) => ephemeral.iter().all(|p| self.transient(h, *p)),
                };
                let note = match (&note, transient) {
                    (None, true) => Some(
                        "seen listening while learning, gone at its end: allowed, not reported when missing"
                            .to_string(),
                    ),
                    _ => note.clone(),
                };
                out.push((
                    Listener {
                        exe: h.exe.clone().unwrap_or_else(|| "?".into()),
                        user: h.user.clone(),
                        protocol: h.protocol.into(),
                        family: h.family.into(),
                        bind: h.bind.text(),
                        port,
                        cgroup: h.cgroup.clone(),
                        container: h.container.clone(),
                        transient,
                    },
                    note,
                    commented,
                ));
            }
        }
        out
    }

    pub fn outbound(&self) -> Vec<Outbound> {
        let mut out = Vec::new();
        for ((exe, user, protocol), ports) in &self.outbound {
            for port in ports {
                out.push(Outbound {
                    exe: exe.clone(),
                    user: user.clone(),
                    protocol: (*protocol).into(),
                    port: PortSpec::One(i64::from(*port)),
                    remote: None,
                });
            }
        }
        out
    }
}

/// The listeners `expected` names that none of the listeners now (`now`, snapshot
/// events) fills: by transport, port, family and executable. With `ports`
/// (`--port`), only the entries on those ports.
pub fn missing(expected: &Expected, now: &[ConnEvent], ports: &[u16]) -> Vec<Drift> {
    let listening: Vec<&ConnEvent> = now.iter().filter(|e| e.role == Role::Listener).collect();
    expected
        .listeners
        .iter()
        .filter(|l| !l.transient)
        .filter(|l| ports.is_empty() || ports.iter().any(|p| l.ports.contains(*p)))
        .filter(|l| {
            !listening.iter().any(|e| {
                e.proto == l.proto
                    && l.ports.contains(e.local.port)
                    && (e.local.addr.is_ipv6() == l.ipv6 || !l.ipv6)
                    && e.process
                        .as_ref()
                        .and_then(|p| p.exe.as_deref())
                        .is_none_or(|exe| exe == l.exe)
            })
        })
        .map(|l| Drift {
            kind: DriftKind::MissingListener,
            reason: format!(
                "{} is expected to listen on {} ({}, {}), and does not",
                l.exe,
                port_text(l.ports, l.proto),
                if l.ipv6 { "ipv6" } else { "ipv4" },
                l.bind.text()
            ),
            port: l.ports.low,
            trigger: None,
        })
        .collect()
}

/// Whether `expected` already allows the learnt listener `l`.
pub fn covered_listener(expected: &Expected, l: &Listener) -> bool {
    let Ok(new) = entry::check_listener(l) else {
        return false;
    };
    expected.listeners.iter().any(|e| {
        e.proto == new.proto
            && e.exe == new.exe
            && (e.user.is_none() || e.user == new.user)
            && e.ipv6 == new.ipv6
            && bind_within(&e.bind, &new.bind)
            && e.ports.contains(new.ports.low)
            && e.ports.contains(new.ports.high)
    })
}

/// Whether `expected` already allows the learnt destination `o`.
pub fn covered_outbound(expected: &Expected, o: &Outbound) -> bool {
    let Ok(new) = entry::check_outbound(o) else {
        return false;
    };
    expected.outbound.iter().any(|e| {
        e.proto == new.proto
            && e.exe == new.exe
            && (e.user.is_none() || e.user == new.user)
            && e.ports.contains(new.ports.low)
            && e.remote.is_none()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        baseline::{
            check::tests::{event, listen, NAMED},
            file::parse,
        },
        event::model::Transport,
    };

    const RANGE: EphemeralRange = EphemeralRange::LINUX_DEFAULT;

    /// (protocol, port) of each learnt listener entry.
    fn listeners(learnt: &Learnt) -> Vec<(String, PortSpec)> {
        learnt
            .listeners(RANGE)
            .into_iter()
            .map(|(l, _, _)| (l.protocol, l.port))
            .collect()
    }

    #[test]
    fn udp_listeners_are_learnt_as_udp() {
        let mut learnt = Learnt::default();
        let mut snapshot = listen(Transport::Udp, 123);
        snapshot.kind = EventKind::Snapshot;
        learnt.see(&snapshot);
        learnt.see(&listen(Transport::Udp, 53));
        learnt.see(&listen(Transport::Tcp, 53));
        assert_eq!(
            listeners(&learnt),
            [
                ("tcp".to_string(), PortSpec::One(53)),
                ("udp".to_string(), PortSpec::One(53)),
                ("udp".to_string(), PortSpec::One(123)),
            ]
        );
        for (l, _, commented) in learnt.listeners(RANGE) {
            assert!(!commented);
            let checked = entry::check_listener(&l).unwrap();
            assert_eq!(checked.proto.name(), l.protocol);
        }
    }

    #[test]
    fn a_udp_listener_gone_at_the_end_is_transient_apart_from_its_tcp_twin() {
        let mut learnt = Learnt::default();
        learnt.see(&listen(Transport::Udp, 53));
        learnt.see(&listen(Transport::Tcp, 53));
        learnt.finish(&[listen(Transport::Tcp, 53)]);
        let transient: Vec<(String, bool)> = learnt
            .listeners(RANGE)
            .into_iter()
            .map(|(l, _, _)| (l.protocol, l.transient))
            .collect();
        assert_eq!(
            transient,
            [("tcp".to_string(), false), ("udp".to_string(), true)]
        );
    }

    #[test]
    fn outbound_flows_are_learnt_with_their_transport() {
        let mut learnt = Learnt::default();
        learnt.see(&event(
            Transport::Udp,
            EventKind::Connect,
            Role::Client,
            41000,
            53,
        ));
        learnt.see(&event(
            Transport::Tcp,
            EventKind::Connect,
            Role::Client,
            41001,
            53,
        ));
        // A UDP server answering a peer is not an outbound destination.
        learnt.see(&event(
            Transport::Udp,
            EventKind::Accept,
            Role::Server,
            53,
            41000,
        ));
        let outbound = learnt.outbound();
        let protocols: Vec<&str> = outbound.iter().map(|o| o.protocol.as_str()).collect();
        assert_eq!(protocols, ["tcp", "udp"]);
        let (_, tcp_only) = parse(&format!(
            "version = 1\n[[outbound]]\nexe = \"{NAMED}\"\nport = 53\n"
        ))
        .unwrap();
        let covered: Vec<bool> = outbound
            .iter()
            .map(|o| covered_outbound(&tcp_only, o))
            .collect();
        assert_eq!(covered, [true, false]);
    }

    fn expects(protocol: &str) -> Expected {
        let text = format!(
            "version = 1\n[[listener]]\nexe = \"{NAMED}\"\nprotocol = \"{protocol}\"\nfamily = \"ipv4\"\nbind = \"any\"\nport = 53\n"
        );
        parse(&text).unwrap().1
    }

    #[test]
    fn an_expected_udp_listener_is_missing_while_only_tcp_listens() {
        let udp = expects("udp");
        let tcp_now = [listen(Transport::Tcp, 53)];
        let missing_udp = missing(&udp, &tcp_now, &[]);
        assert_eq!(missing_udp.len(), 1);
        assert_eq!(missing_udp[0].kind, DriftKind::MissingListener);
        assert!(missing(&udp, &[listen(Transport::Udp, 53)], &[]).is_empty());
        assert_eq!(
            missing(&expects("tcp"), &[listen(Transport::Udp, 53)], &[]).len(),
            1
        );
    }

    #[test]
    fn a_tcp_entry_does_not_cover_a_learnt_udp_listener() {
        let mut learnt = Learnt::default();
        learnt.see(&listen(Transport::Udp, 53));
        let (udp_listener, _, _) = learnt.listeners(RANGE).remove(0);
        assert!(!covered_listener(&expects("tcp"), &udp_listener));
        assert!(covered_listener(&expects("udp"), &udp_listener));
    }
}
