//! The ground-truth suite of one attach mode: each scenario runs helper processes,
//! takes their own account of what they did as ground truth, and checks that
//! portwatch reported exactly that.
mod accept_hook;
pub mod connections;
mod failed_connects;
mod inexact_accept;
mod udp;

use anyhow::Result;

use crate::{
    checks::Checks,
    harness::{
        helpers::{LOOPBACK, LOOPBACK6},
        launch::Launch,
        tracer::Tracer,
    },
    investigate,
};

/// How long the helpers hold their connections: the least lifetime expected.
const HOLD_MS: u64 = 300;

type Scenario<'a> = (&'a str, Box<dyn Fn(&Tracer) -> Result<Vec<String>> + 'a>);

/// The scenarios, in order; all but the last few trace with the shared tracer,
/// those start portwatch with the options they are about.
fn scenarios<'a>(portwatch: &'a str, mode: &'a str) -> Vec<Scenario<'a>> {
    use connections::listener_acceptor_clients as clients;
    use failed_connects::{refused, timed_out};
    let any = std::net::IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED);
    vec![
        (
            "the accept hook (fexit, kretprobe, BPF LSM where doctor allows it, else the syscalls) and UDP's hooks",
            Box::new(move |t| accept_hook::accept_hook(t, portwatch, mode)),
        ),
        (
            "ipv4: listener, forked acceptor, 3 client processes",
            Box::new(|t| clients(t, LOOPBACK, "21,0", LOOPBACK, 3)),
        ),
        (
            "ipv6: listener, forked acceptor, 2 client processes",
            Box::new(|t| clients(t, LOOPBACK6, "0", LOOPBACK6, 2)),
        ),
        (
            "dual-stack listener, ipv4 client: v4-mapped addresses shown as ipv4",
            Box::new(move |t| clients(t, any, "0", LOOPBACK, 1)),
        ),
        ("ipv4: refused connect", Box::new(|t| refused(t, LOOPBACK))),
        ("ipv6: refused connect", Box::new(|t| refused(t, LOOPBACK6))),
        (
            "ipv4: timed-out connect (SYNs dropped)",
            Box::new(|t| timed_out(t, LOOPBACK)),
        ),
        (
            "udp ipv4: a bound server answering from a forked worker; connected, sendto and sendmsg clients; closes",
            Box::new(|t| udp::server_and_clients(t, LOOPBACK, udp::SERVER_PORTS_V4)),
        ),
        (
            "udp ipv6: the same over ::1",
            Box::new(|t| udp::server_and_clients(t, LOOPBACK6, udp::SERVER_PORTS_V6)),
        ),
        (
            "udp: one socket sending to 20 peers, 3 rounds (sendto, sendmmsg), then a TCP send in the same thread: one flow event per peer, none from the TCP send",
            Box::new(udp::spray),
        ),
        (
            "udp: DNS-like exchange on 127.0.0.2:53, classified as domain",
            Box::new(udp::dns),
        ),
        (
            "udp: a server bound before tracing is in the snapshot, and its answers are server replies",
            Box::new(move |_| udp::bound_before_tracing(portwatch, mode)),
        ),
        (
            "--proto tcp, --proto udp: the other protocol's programs not attached, its events absent",
            Box::new(move |_| udp::proto_filter(portwatch, mode)),
        ),
        (
            "process details: exe, cmdline, user, parent, cgroup, container",
            Box::new(investigate::process_details),
        ),
        (
            "a hostile process name is escaped in the table and exact in JSON",
            Box::new(|t| investigate::hostile_name(t, portwatch, mode)),
        ),
        (
            "kernel filters (--port, -6, --pid): only matching events cross the ring buffer",
            Box::new(|_| investigate::kernel_filters(portwatch, mode)),
        ),
        (
            "userspace filters (--comm, --role)",
            Box::new(|_| investigate::userspace_filters(portwatch, mode)),
        ),
        (
            "--inexact-accept: no accept syscall hooked, accept attributed to the listener",
            Box::new(|_| inexact_accept::inexact_accept(portwatch, mode)),
        ),
        (
            "existing sockets: portwatch snapshot, and first in live mode",
            Box::new(|_| investigate::snapshot(portwatch, mode)),
        ),
    ]
}

/// SIGINT ends the run: exit 0, the closing line, nothing undecodable, nothing
/// printed that is not JSON.
fn stop(tracer: Tracer) -> Result<Vec<String>> {
    let stopped = tracer.stop()?;
    let closing = stopped.stderr.closing()?;
    let mut failures = Vec::new();
    if !stopped.status.success() {
        failures.push(format!(
            "exit {}, stderr: {}",
            stopped.status, stopped.stderr
        ));
    }
    if closing.undecodable != 0 {
        failures.push(format!("{} records undecodable", closing.undecodable));
    }
    Ok(failures)
}

/// The whole ground-truth suite with portwatch attached in `mode`.
pub fn run_mode(portwatch: &str, mode: &str) -> Checks {
    let mut checks = Checks::default();
    let tracer = match Tracer::start(Launch::trace(portwatch, mode)) {
        Ok(t) => t,
        Err(e) => {
            checks.record(&format!("[{mode}] portwatch starts"), Err(e));
            return checks;
        }
    };
    // PW_ONLY=WORDS runs only the scenarios whose names contain WORDS (debugging).
    let only = std::env::var("PW_ONLY").unwrap_or_default();
    for (name, scenario) in scenarios(portwatch, mode)
        .iter()
        .filter(|(n, _)| n.contains(only.as_str()))
    {
        checks.record(&format!("[{mode}] {name}"), scenario(&tracer));
    }
    checks.record(
        &format!("[{mode}] SIGINT detaches and exits 0"),
        stop(tracer),
    );
    checks
}
