//! Closes the kernel never reported are inferred. The fault-injection hook drops
//! every 25th close record unseen, as a kernel that ran no program for that state
//! change would; over 2,000 loopback connections each socket must still be shown
//! closed exactly once, every dropped close inferred, each inferred close naming
//! the socket, role and process its opening named. And a socket of another
//! network namespace, which this namespace's listing never shows, is never
//! closed by inference.
use std::collections::HashMap;

use anyhow::Result;

use crate::{
    checks::Checks,
    harness::{helpers::LOOPBACK, launch::Launch},
    heavy::{self, Seen},
    sock,
};

const CONNECTIONS: u64 = 2_000;
/// Every how many close records the hook drops.
const EVERY: u64 = 25;

pub fn record(checks: &mut Checks, portwatch: &str, loadgen: &str, mode: &str) {
    checks.run(
        &format!("[{mode}] inferred closes: every {EVERY}th close dropped unseen, each socket still closed once, by its own owner"),
        || run(portwatch, loadgen, mode),
    );
    checks.run(
        &format!("[{mode}] inferred closes: a listener of another network namespace, alive at the end, is not closed"),
        || other_namespace(portwatch, mode),
    );
    checks.run(
        &format!("[{mode}] inferred closes: recorded in the history as closed, marked inferred"),
        || recorded(portwatch, loadgen, mode),
    );
}

/// `portwatch record` with the hook: every socket of the load is stored closed,
/// and as many are marked inferred as the closing line says were inferred.
fn recorded(portwatch: &str, loadgen: &str, mode: &str) -> Result<Vec<String>> {
    const SOCKETS: usize = 2 * 300 + 1;
    let db = crate::history::fresh_db("inferred")?;
    let port = sock::unused_port(LOOPBACK)?.to_string();
    let recording = Launch::trace(portwatch, mode)
        .env("PORTWATCH_FAULT_DROP_CLOSES", &EVERY.to_string())
        .args(["record", "--port", &port, "--db"])
        .arg(&db)
        .start(|_| ())?;
    heavy::load(loadgen, 300, port.parse()?)?;
    std::thread::sleep(std::time::Duration::from_secs(1));
    let stopped = recording.stop()?;
    let closing = stopped.stderr.closing()?;
    let stored = crate::history::query(portwatch, &db, &["--port", &port])?;
    if let Some(dir) = db.parent() {
        let _ = std::fs::remove_dir_all(dir);
    }
    let open = stored.iter().filter(|s| s["closed"].is_null()).count();
    let inferred = stored.iter().filter(|s| s["inferred"] == true).count() as u64;
    println!(
        "# inferred, recorded: {} sockets stored, {open} open, {inferred} marked inferred, {} inferred",
        stored.len(),
        closing.inferred
    );
    let mut failures = Vec::new();
    if stored.len() != SOCKETS || open != 0 {
        failures.push(format!(
            "{} sockets stored, {open} of them open; expected {SOCKETS}, all closed",
            stored.len()
        ));
    }
    if inferred != closing.inferred || inferred == 0 {
        failures.push(format!(
            "{inferred} sockets stored with an inferred close, the closing line says {} were inferred",
            closing.inferred
        ));
    }
    Ok(failures)
}

/// portwatch ends while a listener of another network namespace lives: its
/// listen event names that namespace, and no close is inferred for it.
fn other_namespace(portwatch: &str, mode: &str) -> Result<Vec<String>> {
    let port = sock::unused_port(LOOPBACK)?;
    let run = heavy::start_launch(Launch::json_on_port(portwatch, mode, port), port)?;
    let (helper, pid, netns) = crate::harness::helpers::netns_listener(port, 3_000)?;
    std::thread::sleep(std::time::Duration::from_millis(500));
    let (stream, closing) = heavy::stop(run)?;
    helper.finish()?;
    let mut failures = Vec::new();
    let listens: Vec<&Seen> = stream
        .events
        .iter()
        .filter(|e| e.event == "listen" && e.pid == u64::from(pid))
        .collect();
    match listens.as_slice() {
        [listen] if listen.netns == Some(u64::from(netns)) => {}
        other => failures.push(format!(
            "expected one listen of pid {pid} in network namespace {netns}, got {:?}",
            other.iter().map(|e| (&e.ends, e.netns)).collect::<Vec<_>>()
        )),
    }
    if closing.inferred != 0 || stream.events.iter().any(|e| e.inferred) {
        failures.push(format!(
            "{} closes inferred for a socket that is alive in another network namespace",
            closing.inferred
        ));
    }
    Ok(failures)
}

fn run(portwatch: &str, loadgen: &str, mode: &str) -> Result<Vec<String>> {
    let port = sock::unused_port(LOOPBACK)?;
    let launch = Launch::json_on_port(portwatch, mode, port)
        .env("PORTWATCH_FAULT_DROP_CLOSES", &EVERY.to_string());
    let run = heavy::start_launch(launch, port)?;
    heavy::load(loadgen, CONNECTIONS, port)?;
    let (stream, closing) = heavy::finish(run)?;
    let mut failures = Vec::new();
    let (unclosed, twice) = heavy::closes(&stream, closing.lost);
    if !unclosed.is_empty() || !twice.is_empty() {
        failures.push(format!(
            "sockets opened without a close: {unclosed:?}; closed twice: {twice:?}"
        ));
    }
    let is_close = |e: &&Seen| e.event == "close";
    let reported = stream
        .events
        .iter()
        .filter(is_close)
        .filter(|e| !e.inferred)
        .count() as u64;
    // The hook dropped every EVERY-th of the closes read: `dropped` such that
    // (reported + dropped) / EVERY == dropped.
    let dropped = (0..=reported)
        .find(|d| (reported + d) / EVERY == *d)
        .unwrap_or(0);
    println!(
        "# inferred: {reported} closes reported, {dropped} dropped unseen, {} inferred",
        closing.inferred
    );
    if dropped == 0 {
        failures.push("no close was dropped: the hook did not act".into());
    }
    if closing.inferred < dropped {
        failures.push(format!(
            "{dropped} closes dropped but only {} inferred",
            closing.inferred
        ));
    }
    failures.extend(owners(&stream.events));
    Ok(failures)
}

/// Each inferred close names the role and process of its socket's opening.
fn owners(events: &[Seen]) -> Vec<String> {
    let opened: HashMap<&str, &Seen> = events
        .iter()
        .filter(|e| e.event != "close")
        .map(|e| (e.sock_id.as_str(), e))
        .collect();
    let mut failures = Vec::new();
    for close in events.iter().filter(|e| e.inferred) {
        match opened.get(close.sock_id.as_str()) {
            None => failures.push(format!(
                "inferred close of a socket never opened: {}",
                close.ends
            )),
            Some(open)
                if (open.role.as_str(), open.pid, open.tid)
                    != (close.role.as_str(), close.pid, close.tid) =>
            {
                failures.push(format!(
                    "inferred close names {} pid {} tid {}, its opening {} pid {} tid {}",
                    close.role, close.pid, close.tid, open.role, open.pid, open.tid
                ))
            }
            Some(_) => {}
        }
    }
    failures.into_iter().take(10).collect()
}
