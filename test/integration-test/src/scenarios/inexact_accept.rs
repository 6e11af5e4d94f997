//! `--inexact-accept`: in tracepoint mode, no accept syscall is hooked (the attached
//! line names none) and a forked acceptor's connection is attributed to the
//! listener's owner, inexactly; in the other modes nothing changes.
use anyhow::Result;

use super::HOLD_MS;
use crate::{
    expect,
    harness::{
        helpers::{Client, Hold, Server, ServerSpec, LOOPBACK},
        launch::Launch,
        tracer::Tracer,
    },
};

pub fn inexact_accept(portwatch: &str, mode: &str) -> Result<Vec<String>> {
    let launch = Launch::trace(portwatch, mode).args(["--no-snapshot", "--inexact-accept"]);
    let tracer = Tracer::start(launch)?;
    let hold = Hold::Ms(HOLD_MS);
    let mut server = Server::spawn(&ServerSpec {
        hold,
        ..ServerSpec::new(LOOPBACK)
    })?;
    let listener = server.listener.clone();
    let mut client = Client::spawn(listener.socket_addr(), "pw-client", hold)?;
    let client_end = client.connected()?;
    let (acceptor, _) = server.accepted()?;
    server.finish()?;
    client.finish()?;
    let expected = if mode == "tracepoint" {
        expect::accept(&listener, &client_end).inferred()
    } else {
        expect::accept(&listener.held_by(&acceptor), &client_end)
    };
    let mut failures = expect::check(&tracer, &[expected.named("accept under --inexact-accept")]);
    if mode == "tracepoint" && tracer.attached().hooks_accept_in_tracepoint_mode() {
        failures.push(format!(
            "--inexact-accept still hooks accept: {:?}",
            tracer.attached().hooks
        ));
    }
    let stopped = tracer.stop()?;
    if !stopped.status.success() {
        failures.push(format!(
            "portwatch --inexact-accept exited {}",
            stopped.status
        ));
    }
    Ok(failures)
}
