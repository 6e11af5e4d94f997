//! Events against a baseline: what departs from it, as drift, once per (kind,
//! process, transport, port) per run. A TCP entry is met only by a TCP socket, a
//! UDP entry only by a UDP one.
use std::{collections::HashSet, net::IpAddr};

use super::entry::{port_text, Bind, Expected, ExpectedListener, Ports};
use crate::event::model::{ConnEvent, EventKind, Family, Role, Transport};

/// How an event departs from the baseline.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DriftKind {
    UnexpectedListener,
    UnexpectedOwner,
    WiderBind,
    UnexpectedOutbound,
    MissingListener,
}

impl DriftKind {
    pub fn name(self) -> &'static str {
        match self {
            DriftKind::UnexpectedListener => "unexpected-listener",
            DriftKind::UnexpectedOwner => "unexpected-owner",
            DriftKind::WiderBind => "wider-bind",
            DriftKind::UnexpectedOutbound => "unexpected-outbound",
            DriftKind::MissingListener => "missing-listener",
        }
    }
}

/// One departure: its kind, why in words, and the event that showed it (none for
/// a missing listener).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Drift {
    pub kind: DriftKind,
    pub reason: String,
    pub port: u16,
    pub trigger: Option<ConnEvent>,
}

/// The executable an event's process runs, if known.
fn exe_of(e: &ConnEvent) -> Option<&str> {
    e.process.as_ref()?.exe.as_deref()
}

/// The kernel's name for a program: its file name, cut to 15 bytes.
fn comm_of_exe(exe: &str) -> &str {
    let name = exe.rsplit('/').next().unwrap_or(exe);
    let mut end = name.len().min(15);
    while !name.is_char_boundary(end) {
        end -= 1;
    }
    &name[..end]
}

/// Whether `e`'s process runs `exe`: by its executable, or where that could not
/// be read (the process exited first), by its name; None when neither is known.
fn runs(exe: &str, e: &ConnEvent) -> Option<bool> {
    match (exe_of(e), &e.owner) {
        (Some(actual), _) => Some(actual == exe),
        (None, Some(owner)) => Some(owner.comm == comm_of_exe(exe)),
        (None, None) => None,
    }
}

/// The program `e` names, for reasons: its executable, else `[comm]`.
fn program(e: &ConnEvent) -> String {
    match (exe_of(e), &e.owner) {
        (Some(exe), _) => exe.to_string(),
        (None, Some(o)) => format!("[{}]", o.comm),
        (None, None) => "an unknown process".into(),
    }
}

fn user_of(e: &ConnEvent) -> Option<String> {
    e.process
        .as_ref()
        .and_then(|d| d.user.clone())
        .or_else(|| e.owner.as_ref().map(|o| o.uid.to_string()))
}

fn user_matches(expected: &Option<String>, e: &ConnEvent) -> bool {
    match expected {
        None => true,
        Some(u) => {
            user_of(e).as_deref() == Some(u.as_str())
                || e.owner.as_ref().is_some_and(|o| o.uid.to_string() == *u)
        }
    }
}

/// Whether a listener on `addr` (of `family`) is one `l` allows by family.
fn family_matches(l: &ExpectedListener, family: Family, addr: IpAddr) -> bool {
    match family {
        Family::Ipv6 => l.ipv6,
        // An IPv6 dual-stack listener serves IPv4 too.
        Family::Ipv4 => !l.ipv6 || addr.is_ipv6() || l.bind == Bind::Any,
    }
}

/// Whether a listener bound to `actual` is within what `expected` allows.
pub fn bind_within(expected: &Bind, actual: &Bind) -> bool {
    match (expected, actual) {
        (Bind::Any, _) => true,
        (Bind::Loopback, Bind::Loopback) => true,
        (Bind::Exact(a), Bind::Exact(b)) => a == b,
        _ => false,
    }
}

/// The drift of one event, if any, before deduplication.
pub fn drift_of(expected: &Expected, e: &ConnEvent) -> Option<Drift> {
    match (e.role, e.kind) {
        (Role::Listener, EventKind::Listen | EventKind::Snapshot) => listener_drift(expected, e),
        (Role::Client, EventKind::Connect) if !expected.outbound.is_empty() => {
            outbound_drift(expected, e)
        }
        _ => None,
    }
}

fn drift(kind: DriftKind, reason: String, e: &ConnEvent) -> Option<Drift> {
    Some(Drift {
        kind,
        reason,
        port: e.local.port,
        trigger: Some(e.clone()),
    })
}

fn listener_drift(expected: &Expected, e: &ConnEvent) -> Option<Drift> {
    let port = e.local.port;
    let on_port: Vec<&ExpectedListener> = expected
        .listeners
        .iter()
        .filter(|l| {
            l.proto == e.proto
                && l.ports.contains(port)
                && family_matches(l, e.family, e.local.addr)
        })
        .collect();
    let who = program(e);
    let port_text = port_text(Ports::one(port), e.proto);
    if on_port.is_empty() {
        return drift(
            DriftKind::UnexpectedListener,
            format!("{who} listens on {port_text}, where no listener is expected"),
            e,
        );
    }
    // Without a process the owner cannot be judged.
    e.owner.as_ref()?;
    let owned: Vec<&&ExpectedListener> = on_port
        .iter()
        .filter(|l| runs(&l.exe, e) == Some(true) && user_matches(&l.user, e))
        .collect();
    let exe = program(e);
    if owned.is_empty() {
        let wanted: Vec<String> = on_port
            .iter()
            .map(|l| match &l.user {
                Some(u) => format!("{} as {u}", l.exe),
                None => l.exe.clone(),
            })
            .collect();
        let user = user_of(e).unwrap_or_else(|| "?".into());
        return drift(
            DriftKind::UnexpectedOwner,
            format!(
                "{exe} as {user} listens on {port_text}, expected {}",
                wanted.join(" or ")
            ),
            e,
        );
    }
    let bound = Bind::of(e.local.addr);
    if owned.iter().any(|l| bind_within(&l.bind, &bound)) {
        return None;
    }
    let allowed: Vec<String> = owned.iter().map(|l| l.bind.text()).collect();
    drift(
        DriftKind::WiderBind,
        format!(
            "{exe} listens on {port_text} ({}), expected {}",
            bound.text(),
            allowed.join(" or ")
        ),
        e,
    )
}

fn outbound_drift(expected: &Expected, e: &ConnEvent) -> Option<Drift> {
    e.owner.as_ref()?;
    let exe = program(e);
    let allowed = expected.outbound.iter().any(|o| {
        o.proto == e.proto
            && runs(&o.exe, e) == Some(true)
            && user_matches(&o.user, e)
            && o.ports.contains(e.remote.port)
            && o.remote.is_none_or(|p| p.contains(e.remote.addr))
    });
    if allowed {
        return None;
    }
    Some(Drift {
        kind: DriftKind::UnexpectedOutbound,
        reason: format!(
            "{exe} connects to {}:{}, not among its expected destinations",
            e.remote.addr,
            port_text(Ports::one(e.remote.port), e.proto)
        ),
        port: e.remote.port,
        trigger: Some(e.clone()),
    })
}

/// What a drift is reported once per run by: its kind, port, transport and
/// program; a missing listener (no event shows it) by its reason, which names
/// its entry.
type OnceKey = (DriftKind, u16, Option<Transport>, String);

fn once_key(d: &Drift) -> OnceKey {
    match &d.trigger {
        Some(e) => (d.kind, d.port, Some(e.proto), program(e)),
        None => (d.kind, d.port, None, d.reason.clone()),
    }
}

/// Drift of a run's events, each reported once (`once_key`).
pub struct Checker {
    expected: Expected,
    seen: HashSet<OnceKey>,
    /// Expected listeners found missing at the last look (by reason and port).
    missing_before: HashSet<(String, u16)>,
}

impl Checker {
    pub fn new(expected: Expected) -> Checker {
        Checker {
            expected,
            seen: HashSet::new(),
            missing_before: HashSet::new(),
        }
    }

    /// Of the listeners missing now, those that were missing at the last look
    /// too (a service restarting between two looks is not missing), each once.
    pub fn confirm_missing(&mut self, now: Vec<Drift>) -> Vec<Drift> {
        let keys: HashSet<(String, u16)> = now.iter().map(|d| (d.reason.clone(), d.port)).collect();
        let before = std::mem::replace(&mut self.missing_before, keys);
        now.into_iter()
            .filter(|d| before.contains(&(d.reason.clone(), d.port)))
            .filter_map(|d| self.first(d))
            .collect()
    }

    pub fn expected(&self) -> &Expected {
        &self.expected
    }

    /// The drift `e` shows that was not reported yet in this run.
    pub fn check(&mut self, e: &ConnEvent) -> Option<Drift> {
        let d = drift_of(&self.expected, e)?;
        self.first(d)
    }

    /// `d`, unless it was reported already (`once_key`).
    pub fn first(&mut self, d: Drift) -> Option<Drift> {
        self.seen.insert(once_key(&d)).then_some(d)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use std::{net::IpAddr, sync::Arc};

    use super::*;
    use crate::{
        baseline::file::parse,
        event::{
            classify::{endpoint, EphemeralRange},
            decode::tests::sample_event,
            model::ProcessDetails,
        },
    };

    pub const NAMED: &str = "/usr/sbin/named";

    /// `kind` by NAMED (as root) over `proto`: local `port` on any address, to
    /// `remote` 10.0.0.1:`remote` (0: none).
    pub fn event(
        proto: Transport,
        kind: EventKind,
        role: Role,
        port: u16,
        remote: u16,
    ) -> ConnEvent {
        let range = EphemeralRange::LINUX_DEFAULT;
        let mut e = sample_event();
        e.proto = proto;
        e.kind = kind;
        e.role = role;
        e.local = endpoint(IpAddr::from([0, 0, 0, 0]), port, range, proto);
        let peer = if remote == 0 {
            [0, 0, 0, 0]
        } else {
            [10, 0, 0, 1]
        };
        e.remote = endpoint(IpAddr::from(peer), remote, range, proto);
        e.owner.as_mut().unwrap().comm = "named".into();
        e.process = Some(Arc::new(ProcessDetails {
            exe: Some(Arc::from(NAMED)),
            user: Some("root".into()),
            ..ProcessDetails::default()
        }));
        e
    }

    pub fn listen(proto: Transport, port: u16) -> ConnEvent {
        event(proto, EventKind::Listen, Role::Listener, port, 0)
    }

    fn expected(protocol: &str) -> Expected {
        let text = format!(
            "version = 1\n[[listener]]\nexe = \"{NAMED}\"\nprotocol = \"{protocol}\"\nfamily = \"ipv4\"\nbind = \"any\"\nport = 53\n\
             [[outbound]]\nexe = \"{NAMED}\"\nprotocol = \"{protocol}\"\nport = 53\n"
        );
        parse(&text).unwrap().1
    }

    fn kind(expected: &Expected, e: &ConnEvent) -> Option<DriftKind> {
        drift_of(expected, e).map(|d| d.kind)
    }

    #[test]
    fn a_listener_is_met_only_by_an_entry_of_its_transport() {
        let (udp, tcp) = (expected("udp"), expected("tcp"));
        assert_eq!(kind(&udp, &listen(Transport::Udp, 53)), None);
        assert_eq!(kind(&tcp, &listen(Transport::Tcp, 53)), None);
        let unexpected = Some(DriftKind::UnexpectedListener);
        assert_eq!(kind(&udp, &listen(Transport::Tcp, 53)), unexpected);
        assert_eq!(kind(&tcp, &listen(Transport::Udp, 53)), unexpected);
        let mut snapshot = listen(Transport::Udp, 53);
        snapshot.kind = EventKind::Snapshot;
        assert_eq!(kind(&tcp, &snapshot), unexpected);
        assert_eq!(kind(&udp, &snapshot), None);
        // A UDP listener's drift says which transport.
        let d = drift_of(&tcp, &snapshot).unwrap();
        assert!(d.reason.contains("53/udp"), "{}", d.reason);
    }

    #[test]
    fn an_outbound_flow_is_met_only_by_an_entry_of_its_transport() {
        let flow = |proto| event(proto, EventKind::Connect, Role::Client, 41000, 53);
        let (udp, tcp) = (expected("udp"), expected("tcp"));
        assert_eq!(kind(&udp, &flow(Transport::Udp)), None);
        assert_eq!(kind(&tcp, &flow(Transport::Tcp)), None);
        let unexpected = Some(DriftKind::UnexpectedOutbound);
        assert_eq!(kind(&tcp, &flow(Transport::Udp)), unexpected);
        assert_eq!(kind(&udp, &flow(Transport::Tcp)), unexpected);
        // A UDP server's reply to a peer is no outbound destination.
        let reply = event(Transport::Udp, EventKind::Accept, Role::Server, 53, 41000);
        assert_eq!(kind(&tcp, &reply), None);
    }

    #[test]
    fn drift_over_each_transport_is_reported_once() {
        let mut checker = Checker::new(Expected::default());
        let mut reported = Vec::new();
        for _ in 0..3 {
            for proto in [Transport::Tcp, Transport::Udp] {
                if let Some(d) = checker.check(&listen(proto, 53)) {
                    reported.push(d.trigger.map(|e| e.proto));
                }
            }
        }
        assert_eq!(reported, [Some(Transport::Tcp), Some(Transport::Udp)]);
    }
}
