//! The receiver stopped during a burst and started again on the same port.
use std::{
    collections::HashMap,
    net::{TcpListener, TcpStream},
    thread,
    time::{Duration, Instant},
};

use anyhow::{bail, Result};

use super::{
    on_port,
    receiver::{delivery_line, records, seq, wait_records, Receiver},
};
use crate::harness::{helpers::LOOPBACK, scratch::fresh_dir, tracer::Tracer};

/// `n` connections to `listener` from this process, each accepted and closed.
fn burst(listener: &TcpListener, n: usize) -> Result<()> {
    let addr = listener.local_addr()?;
    for _ in 0..n {
        let c = TcpStream::connect(addr)?;
        let (a, _) = listener.accept()?;
        drop(c);
        drop(a);
    }
    Ok(())
}

/// The spool's size in the outage run: the burst overflows it.
const SPOOL: usize = 3000;

pub fn outage(portwatch: &str, mode: &str) -> Result<Vec<String>> {
    let dir = fresh_dir("otlp-outage")?;
    let out = dir.join("records.jsonl");
    let receiver = Receiver::start(&out, 0)?;
    let receiver_port = receiver.port;
    let listener = TcpListener::bind((LOOPBACK, 0))?;
    let port = listener.local_addr()?.port();
    let tracer = Tracer::start(
        on_port(portwatch, mode, port)
            .args(["--otlp-endpoint", &receiver.url()])
            .args(["--otlp-buffer", &SPOOL.to_string()])
            .args(["--ringbuf-size", "16777216"]),
    )?;
    let mut failures = Vec::new();
    // Before: delivered as it comes.
    burst(&listener, 100)?;
    let before = wait_records(&out, Duration::from_secs(10), |r| r.len() >= 400);
    let delivered_before = before.iter().map(seq).max().unwrap_or(0);
    receiver.stop()?;
    // During: more than the spool holds.
    burst(&listener, 2 * SPOOL)?;
    let start = Instant::now();
    while !tracer.stderr().mentions("spool full") && start.elapsed() < Duration::from_secs(20) {
        thread::sleep(Duration::from_millis(100));
    }
    thread::sleep(Duration::from_millis(500));
    // After: the same port again; what was spooled arrives.
    let receiver = Receiver::start(&out, receiver_port)?;
    let after = wait_records(&out, Duration::from_secs(30), |r| {
        r.iter().filter(|x| seq(x) > delivered_before).count() >= SPOOL
    });
    let (stopped, json_events) = tracer.stop_with_events()?;
    receiver.stop()?;
    if !stopped.status.success() {
        failures.push(format!("portwatch exited {} after SIGINT", stopped.status));
    }
    let all = records(&out)?;
    let spooled = after.iter().filter(|x| seq(x) > delivered_before).count();
    if spooled < SPOOL {
        failures.push(format!(
            "{spooled} records numbered after the outage began arrived once the receiver was back, expected at least the spool's {SPOOL}"
        ));
    }
    let mut seen: HashMap<u64, usize> = HashMap::new();
    for r in &all {
        *seen.entry(seq(r)).or_default() += 1;
    }
    let duplicates: Vec<u64> = seen
        .iter()
        .filter(|(_, n)| **n > 1)
        .map(|(s, _)| *s)
        .collect();
    if !duplicates.is_empty() {
        failures.push(format!(
            "{} sequence numbers delivered more than once",
            duplicates.len()
        ));
    }
    let produced = json_events.len() as u64;
    let counts = delivery_line(&stopped.stderr)?;
    let [delivered, dropped, full, rejected, at_exit] = counts.as_slice() else {
        bail!("delivery line counts {counts:?}");
    };
    let missing = (1..=produced).filter(|s| !seen.contains_key(s)).count() as u64;
    if *delivered != seen.len() as u64 || delivered + dropped != produced || missing != *dropped {
        failures.push(format!(
            "{produced} records produced (events printed), {} received, {missing} numbers missing; portwatch says {delivered} delivered and {dropped} dropped",
            seen.len()
        ));
    }
    if *full == 0 || *rejected != 0 || *at_exit != 0 {
        failures.push(format!(
            "dropped: {full} spool full (expected some), {rejected} refused and {at_exit} at exit (expected none)"
        ));
    }
    for said in ["cannot deliver", "spool full", "takes records again"] {
        if !stopped.stderr.mentions(said) {
            failures.push(format!("stderr never said `{said}`: {}", stopped.stderr));
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
    Ok(failures)
}
