//! What the test knows independently of portwatch: the host's ephemeral range,
//! IANA's port classes, what one endpoint must look like.
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

/// The family on the wire for connections to and from `addr`.
pub fn family(addr: IpAddr) -> &'static str {
    if addr.is_ipv4() {
        "ipv4"
    } else {
        "ipv6"
    }
}

/// What one endpoint must look like: address, port, class, ephemeral, service.
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
