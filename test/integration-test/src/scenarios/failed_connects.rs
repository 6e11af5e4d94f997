//! Connects that fail: refused (nothing listens) and timed out (the SYNs are
//! dropped), each reported as connect-failed with the reason.
use std::net::{IpAddr, SocketAddr};

use anyhow::{bail, Result};

use super::connections::no_wrong_pids;
use crate::{
    expect::{self, Expected},
    harness::{
        helpers::{failing_connect, Blackhole, End},
        tracer::Tracer,
    },
    sock,
};

/// A connect to a port nobody listens on.
pub fn refused(tracer: &Tracer, addr: IpAddr) -> Result<Vec<String>> {
    let since = tracer.events().len();
    let target = SocketAddr::new(addr, sock::unused_port(addr)?);
    let (client, errno) = failing_connect("refused", target, "pw-refused")?;
    failed_connect(
        (tracer, since),
        &client,
        target,
        errno,
        libc::ECONNREFUSED,
        "refused",
    )
}

/// A connect whose SYNs the kernel drops (a listener with a full backlog): it
/// times out. The connection filling the backlog was never accepted: its server
/// side closes with the listener's owner, marked as inferred.
pub fn timed_out(tracer: &Tracer, addr: IpAddr) -> Result<Vec<String>> {
    let since = tracer.events().len();
    let hole = Blackhole::spawn(addr, "pw-blackhole")?;
    let (listener, filler_port) = (hole.listener.clone(), hole.filler_port);
    let (client, errno) = failing_connect("timeout", listener.socket_addr(), "pw-timeout")?;
    hole.finish()?;
    let filler = End {
        port: filler_port,
        ..listener.clone()
    };
    let unaccepted = expect::server_close(&listener, &filler)
        .inferred()
        .named("close of a never-accepted connection (owner inferred)");
    let mut failures = expect::check(tracer, &[unaccepted]);
    failures.extend(failed_connect(
        (tracer, since),
        &client,
        listener.socket_addr(),
        errno,
        libc::ETIMEDOUT,
        "timed out",
    )?);
    Ok(failures)
}

/// Check the connect-failed event of a client whose connect() to `target`
/// returned `errno`, which must be `want_errno`.
/// `(tracer, since)`: the tracer, and how many events it had when the scenario
/// began.
fn failed_connect(
    (tracer, since): (&Tracer, usize),
    client: &End,
    target: SocketAddr,
    errno: i32,
    want_errno: i32,
    reason: &str,
) -> Result<Vec<String>> {
    if errno != want_errno {
        bail!(
            "the connect failed with errno {errno}, not {want_errno}: the scenario did not happen"
        );
    }
    let expected: Expected = expect::connect_failed(client, target, want_errno, reason);
    let mut failures = expect::check(tracer, &[expected]);
    failures.extend(no_wrong_pids(
        tracer,
        since,
        &[client.port],
        &[client.proc.pid],
    ));
    Ok(failures)
}
