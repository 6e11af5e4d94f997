//! Ground truth and field-by-field comparison with portwatch's JSON events.
use std::net::IpAddr;

use serde_json::{json, Value};

/// The host's ephemeral range, read independently of portwatch.
pub fn ephemeral_range() -> (u16, u16) {
    let text = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range").unwrap();
    let mut it = text.split_whitespace().map(|n| n.parse().unwrap());
    (it.next().unwrap(), it.next().unwrap())
}

/// IANA's class of a port, written out again here as the test's own truth.
pub fn iana_class(port: u16) -> &'static str {
    if port <= 1023 {
        "well-known"
    } else if port <= 49151 {
        "registered"
    } else {
        "dynamic"
    }
}

/// What one endpoint must look like.
pub fn endpoint(addr: IpAddr, port: u16) -> Value {
    let (lo, hi) = ephemeral_range();
    let mut v = json!({
        "addr": addr.to_string(),
        "port": port,
        "class": iana_class(port),
        "ephemeral": (lo..=hi).contains(&port),
    });
    // The service the test knows for sure. Kernel-chosen ports may happen to be
    // registered with IANA (the unit tests check the built-in registry).
    if port == 21 {
        v["service"] = json!("ftp");
    }
    v
}

/// One expected event: every field listed must match exactly.
pub struct Expected {
    pub what: String,
    pub fields: Value,
}

/// The fields of `fields` (recursively) that differ in `event`.
pub fn mismatches(event: &Value, fields: &Value, path: &str, out: &mut Vec<String>) {
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
