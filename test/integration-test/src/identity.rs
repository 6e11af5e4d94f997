//! Socket ids: thousands of short loopback connections, whose sockets the kernel
//! places at the addresses of ones just freed, must each keep one `sock_id` for
//! their whole life and share it with no other socket of the run.
use std::{collections::HashMap, process::Command, time::Duration};

use anyhow::{bail, Result};
use serde_json::Value;

use crate::{
    checks::Checks,
    harness::{helpers::LOOPBACK, launch::Launch, tracer::Tracer},
    sock,
};

/// Short connections made by the load generator (each a client and a server socket).
const CONNECTIONS: u64 = 3_000;

pub fn record(checks: &mut Checks, portwatch: &str, loadgen: &str, mode: &str, extra: &[&str]) {
    let store = extra.last().copied().unwrap_or("default store");
    checks.run(
        &format!("[{mode}] sock_id: {CONNECTIONS} short connections ({store}), one id per socket, none shared"),
        || one_id_per_socket(portwatch, loadgen, mode, extra),
    );
}

fn one_id_per_socket(
    portwatch: &str,
    loadgen: &str,
    mode: &str,
    extra: &[&str],
) -> Result<Vec<String>> {
    let port = sock::unused_port(LOOPBACK)?;
    // Room for every event of the run (12,002 of 136 bytes): the check needs
    // them all, however slowly this reader keeps up.
    let tracer = Tracer::start(
        Launch::trace(portwatch, mode)
            .args(["--no-snapshot", "--port", &port.to_string()])
            .args(["--ringbuf-size", "16777216"])
            .args(extra),
    )?;
    let out = Command::new(loadgen)
        .args(["--connections", &CONNECTIONS.to_string()])
        .args(["--port", &port.to_string(), "--no-pin"])
        .output()?;
    if !out.status.success() {
        bail!("loadgen failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    let expected = 4 * CONNECTIONS as usize + 2;
    let events = tracer.wait_for(Duration::from_secs(30), |e| e.len() >= expected);
    let stopped = tracer.stop()?;
    let closing = stopped.stderr.closing()?;
    if closing.lost + closing.skipped > 0 {
        bail!(
            "{} lost and {} skipped: the run is not complete enough to judge ids",
            closing.lost,
            closing.skipped
        );
    }
    Ok(check_ids(&events, expected))
}

/// One socket's life as the events show it: its role and its two ends. A life
/// begins with listen, connect or accept and ends with its close.
type Life = (String, String, String);

fn life(e: &Value) -> Life {
    let end = |side: &str| format!("{}:{}", e[side]["addr"], e[side]["port"]);
    (e["role"].to_string(), end("local"), end("remote"))
}

/// Ground truth from the order of events (a socket's events come in order, and a
/// life ends with its close before the same ends can begin another): every life
/// has one id, and no id names two lives.
fn check_ids(events: &[Value], expected: usize) -> Vec<String> {
    let mut failures = Vec::new();
    if events.len() != expected {
        failures.push(format!("{} events, expected {expected}", events.len()));
    }
    let mut open: HashMap<Life, String> = HashMap::new();
    let mut owner_of_id: HashMap<String, usize> = HashMap::new();
    let mut lives = 0;
    for e in events {
        let id = e["sock_id"].as_str().unwrap_or("").to_string();
        let key = life(e);
        let life_no = match open.get(&key) {
            Some(known) if *known != id => {
                failures.push(format!("a socket's id changed from {known} to {id}: {e}"));
                continue;
            }
            Some(_) => *owner_of_id.get(&id).unwrap_or(&0),
            None => {
                lives += 1;
                open.insert(key.clone(), id.clone());
                lives
            }
        };
        match owner_of_id.insert(id.clone(), life_no) {
            Some(earlier) if earlier != life_no => {
                failures.push(format!("id {id} names two sockets: {e}"));
            }
            _ => {}
        }
        if e["event"] == "close" {
            open.remove(&key);
        }
    }
    println!(
        "# sock_id: {lives} socket lives, {} distinct ids",
        owner_of_id.len()
    );
    if owner_of_id.len() != lives {
        failures.push(format!("{lives} sockets but {} ids", owner_of_id.len()));
    }
    failures.truncate(5);
    failures
}
