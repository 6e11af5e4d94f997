//! Expected events, built from the helpers' ground truth ([`events`]), and their
//! field-by-field comparison with portwatch's JSON events.
mod events;
mod truth;
mod udp;

use std::time::Duration;

use serde_json::{json, Value};

pub use events::*;
pub use truth::{endpoint, family};
pub use udp::*;

use crate::harness::tracer::Tracer;

/// How long the tracer may take to show the expected events.
const EVENT_TIMEOUT: Duration = Duration::from_secs(10);

/// One expected event: exactly one event of kind `event` between ports `local`
/// and `remote`, with every field of `fields` (recursively) as given.
#[derive(Debug, Clone)]
pub struct Expected {
    /// What the event is, for failure messages.
    pub what: String,
    pub event: &'static str,
    pub local: u16,
    pub remote: u16,
    pub fields: Value,
    /// The least `duration_ms` (a lifetime the test held the connection for).
    pub lasting_at_least_ms: Option<f64>,
}

impl Expected {
    pub fn new(what: String, event: &'static str, local: u16, remote: u16, fields: Value) -> Self {
        Expected {
            what,
            event,
            local,
            remote,
            fields: merge(json!({ "event": event }), fields),
            lasting_at_least_ms: None,
        }
    }

    /// These fields too (replacing any of the same name).
    pub fn with(mut self, fields: Value) -> Self {
        self.fields = merge(self.fields, fields);
        self
    }

    /// Another description.
    pub fn named(mut self, what: impl Into<String>) -> Self {
        self.what = what.into();
        self
    }

    /// Its `duration_ms` is at least `ms`, and under a minute.
    pub fn lasting_at_least(mut self, ms: f64) -> Self {
        self.lasting_at_least_ms = Some(ms);
        self
    }

    /// The failures of `event`, the one event found for this expectation.
    fn differences(&self, event: &Value) -> Vec<String> {
        let mut diffs = Vec::new();
        mismatches(event, &self.fields, "", &mut diffs);
        if let Some(min_ms) = self.lasting_at_least_ms {
            match event["duration_ms"].as_f64() {
                Some(ms) if ms >= min_ms && ms < 60_000.0 => {}
                other => diffs.push(format!("duration_ms {other:?}, expected at least {min_ms}")),
            }
        }
        diffs
    }
}

/// `b`'s fields over `a`'s (both objects).
pub fn merge(mut a: Value, b: Value) -> Value {
    if let Value::Object(fields) = b {
        for (k, v) in fields {
            a[k] = v;
        }
    }
    a
}

/// The fields of `fields` (recursively) that differ in `event`.
fn mismatches(event: &Value, fields: &Value, path: &str, out: &mut Vec<String>) {
    match fields {
        Value::Object(map) => {
            for (k, v) in map {
                let p = if path.is_empty() {
                    k.clone()
                } else {
                    format!("{path}.{k}")
                };
                mismatches(&event[k], v, &p, out);
            }
        }
        want => {
            if event != want {
                out.push(format!("{path}: expected {want}, got {event}"));
            }
        }
    }
}

/// Port on one side of an event.
pub fn port(event: &Value, side: &str) -> u16 {
    event[side]["port"].as_u64().unwrap_or(0) as u16
}

/// Events of `kind` between local port `local` and remote port `remote`.
pub fn find<'a>(events: &'a [Value], kind: &str, local: u16, remote: u16) -> Vec<&'a Value> {
    events
        .iter()
        .filter(|e| e["event"] == kind && port(e, "local") == local && port(e, "remote") == remote)
        .collect()
}

/// The events between ports `a` and `b`, either way round: what came instead.
fn between(events: &[Value], a: u16, b: u16) -> Vec<&Value> {
    events
        .iter()
        .filter(|e| {
            let ports = (port(e, "local"), port(e, "remote"));
            ports == (a, b) || ports == (b, a)
        })
        .collect()
}

/// The events an expectation may be: its kind and ports, and its protocol where
/// it names one (TCP and UDP sockets may share port numbers).
fn candidates<'a>(events: &'a [Value], x: &Expected) -> Vec<&'a Value> {
    let proto = &x.fields["proto"];
    find(events, x.event, x.local, x.remote)
        .into_iter()
        .filter(|e| proto.is_null() || e["proto"] == *proto)
        .collect()
}

/// Whether every expected event has come, right or wrong.
fn all_present(events: &[Value], expected: &[Expected]) -> bool {
    expected.iter().all(|x| !candidates(events, x).is_empty())
}

/// Each expected event is in `events` exactly once, with every field as expected.
pub fn compare(events: &[Value], expected: &[Expected]) -> Vec<String> {
    let mut failures = Vec::new();
    for x in expected {
        let (kind, l, r) = (x.event, x.local, x.remote);
        match candidates(events, x).as_slice() {
            [] => failures.push(format!(
                "{}: no `{kind}` event {l} -> {r}; the events between these ports: {:?}",
                x.what,
                between(events, l, r)
            )),
            [event] => {
                let diffs = x.differences(event);
                if !diffs.is_empty() {
                    failures.push(format!("{}: {} (event: {event})", x.what, diffs.join("; ")));
                }
            }
            many => failures.push(format!(
                "{}: {} `{kind}` events {l} -> {r}, expected one",
                x.what,
                many.len()
            )),
        }
    }
    failures
}

/// Compare every expected event, each also naming the tracer's attach mode, once
/// the tracer has shown them all (or timed out).
pub fn check(tracer: &Tracer, expected: &[Expected]) -> Vec<String> {
    check_within(tracer, expected, EVENT_TIMEOUT)
}

/// The same, waiting up to `timeout` (for closes portwatch infers at its second
/// look at the kernel's sockets, 5 s apart).
pub fn check_within(tracer: &Tracer, expected: &[Expected], timeout: Duration) -> Vec<String> {
    let mode = json!({ "attach": tracer.mode() });
    let expected: Vec<Expected> = expected
        .iter()
        .cloned()
        .map(|x| x.with(mode.clone()))
        .collect();
    let events = tracer.wait_for(timeout, |events| all_present(events, &expected));
    compare(&events, &expected)
}
