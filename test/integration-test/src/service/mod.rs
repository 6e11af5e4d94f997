//! portwatch as a service, as deploy/ installs it. The systemd unit
//! (deploy/systemd/portwatch.service) is checked by systemd's own parser
//! (`systemd-analyze verify`), and its capability list is proven enough and
//! minimal with its own ExecStart command line: run through util-linux
//! `setpriv` as uid 65534 and as uid 0 (as the unit runs), holding exactly the
//! unit's capabilities (ambient, inheritable and bounding set, no new
//! privileges), portwatch attaches, traces a helper's connection (pid, comm,
//! ports, executable), names the owner of a listener that was there before it,
//! records into a directory that uid owns, serves metrics and stops cleanly on
//! SIGTERM; without any one of them it does not, and what each one's loss costs
//! is checked against what it is known to cost. Also: every system call
//! portwatch makes (strace) is allowed by the unit's SystemCallFilter, and the
//! unit's reload signal leaves it running. Not checked (no systemd as pid 1
//! here): systemd applying the unit's sandbox.
use std::{
    cell::OnceCell,
    collections::BTreeSet,
    io::{BufRead, BufReader, Read, Write},
    net::{SocketAddr, TcpStream},
    os::unix::fs::{MetadataExt, PermissionsExt},
    path::{Path, PathBuf},
    process::Command,
    sync::{
        atomic::{AtomicBool, AtomicUsize, Ordering},
        Arc, Mutex,
    },
    thread,
    time::Duration,
};

use anyhow::{anyhow, bail, Context, Result};
use nix::sys::signal::Signal;
use serde_json::{json, Value};

use crate::{
    checks::Checks,
    expect::{self, Expected},
    harness::{
        helpers::{failing_connect, As, Client, End, Hold, Server, ServerSpec, LOOPBACK},
        launch::{self, Launch},
        programs,
        stderr::{Line, Stderr},
        tracer::Tracer,
    },
    sock,
};

mod caps;
mod setup;
mod syscalls;
mod unit;

use caps::*;
use setup::*;
use syscalls::*;
use unit::*;

/// The unit under test, found from this crate's directory.
pub(super) const UNIT: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../deploy/systemd/portwatch.service"
);
pub(super) const NOBODY: u32 = 65534;
/// Longer than the history writer's batch (0.5 s).
pub(super) const COMMITTED: Duration = Duration::from_millis(1500);
/// How long the traced events may take to come.
pub(super) const EVENTS: Duration = Duration::from_secs(10);

pub fn record_all(checks: &mut Checks, portwatch: &str, mode: &str) {
    checks.run(
        &format!("[{mode}] service: systemd-analyze verify accepts deploy/systemd/portwatch.service without a word"),
        || verify(portwatch),
    );
    let unit = match Unit::read() {
        Ok(unit) => unit,
        Err(e) => {
            checks.run(
                &format!("[{mode}] service: the unit's ExecStart, capabilities and system call filter are readable"),
                || Err(e),
            );
            return;
        }
    };
    // Copies of the binaries, made once, only when a check below runs.
    let setup: OnceCell<Result<Setup>> = OnceCell::new();
    let get = || -> Result<&Setup> {
        setup
            .get_or_init(|| Setup::new(portwatch, mode))
            .as_ref()
            .map_err(|e| anyhow!("{e:#}"))
    };
    let list = unit.caps.join(" ");
    for uid in [NOBODY, 0] {
        checks.run(
            &format!("[{mode}] service: as uid {uid} with only the unit's capabilities ({list}), its ExecStart attaches, traces a helper's connection (pid, comm, ports, exe), names the owner of a listener from before, records into a directory uid {uid} owns, serves metrics, stops cleanly on SIGTERM"),
            || enough(get()?, &unit, uid),
        );
        for cap in &unit.caps {
            checks.run(
                &format!(
                    "[{mode}] service: as uid {uid} without {cap}: {}",
                    known_loss(cap, uid).map_or("portwatch does not fully work", Loss::what)
                ),
                || needed(get()?, &unit, uid, cap),
            );
        }
    }
    checks.run(
        &format!("[{mode}] service: every system call ExecStart's portwatch makes (strace) is allowed by the unit's SystemCallFilter"),
        || syscalls(get()?, &unit),
    );
    checks.run(
        &format!("[{mode}] service: ExecReload's signal leaves portwatch running and tracing"),
        || reload(get()?, &unit),
    );
    if let Some(Ok(s)) = setup.get() {
        let _ = std::fs::remove_dir_all(&s.dir);
    }
}

/// `name` on PATH.
pub(super) fn which(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|p| {
            p.metadata()
                .is_ok_and(|m| m.is_file() && m.mode() & 0o111 != 0)
        })
}

/// util-linux `setpriv`, which runs portwatch holding exactly the unit's
/// capabilities.
pub(super) fn setpriv() -> Result<PathBuf> {
    which("setpriv").context(
        "setpriv (util-linux) is not installed: it runs portwatch with the unit's capabilities",
    )
}
