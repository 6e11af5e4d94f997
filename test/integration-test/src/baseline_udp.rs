//! Baselines cover UDP: a bound UDP server is learnt as a `protocol = "udp"`
//! listener; the host then checks clean; a TCP listener on the same port number
//! does not stand in for it once it stops (the UDP one is missing, the TCP one
//! unexpected), and a new UDP server on another port is unexpected.
use std::net::{IpAddr, Ipv4Addr, TcpListener};

use anyhow::{Context, Result};
use serde_json::Value;

use crate::harness::{helpers::Hold, launch::Launch, udp_helpers::UdpServer};

pub fn udp_listeners(portwatch: &str) -> Result<Vec<String>> {
    let dir = crate::harness::scratch::fresh_dir("baseline-udp")?;
    let file = dir.join("udp.toml");
    let file_text = file.display().to_string();
    let addr: IpAddr = Ipv4Addr::LOCALHOST.into();
    let server = UdpServer::spawn(
        addr,
        "24860,24861,24862,24863,0",
        "pw-bl-udp",
        "pw-bl-udp-w",
        1,
        Hold::UntilKilled,
    )?;
    let port = server.listener.port;
    // Outside the ephemeral range: a socket bound there is a server's.
    let spare_ports = "24870,24871,24872,24873";
    let ports = [port.to_string(), spare_ports.to_string()];
    let mut filter = vec!["--port", &ports[0]];
    for p in spare_ports.split(',') {
        filter.extend(["--port", p]);
    }
    let mut failures = Vec::new();
    let learnt = Launch::new(portwatch)
        .args(["baseline", "learn", "--out", &file_text])
        .args(&filter)
        .run()?;
    if !learnt.status.success() {
        failures.push(format!(
            "baseline learn: {} {}",
            learnt.status, learnt.stderr
        ));
    }
    let text = std::fs::read_to_string(&file).context("the learnt baseline")?;
    let me = std::env::current_exe()?.display().to_string();
    let entry = format!(
        "exe = \"{me}\"\nuser = \"root\"\nprotocol = \"udp\"\nfamily = \"ipv4\"\nbind = \"loopback\"\nport = {port}\n"
    );
    if !text.contains(&entry) {
        failures.push(format!("the learnt baseline lacks {entry:?}:\n{text}"));
    }
    let check = |extra: &[&str]| -> Result<(Option<i32>, Vec<Value>)> {
        let out = Launch::new(portwatch)
            .args(["--format", "json", "baseline", "check", &file_text])
            .args(&filter)
            .args(extra)
            .run()?;
        let drifts = String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter(|v| v["event"] == "drift")
            .collect();
        Ok((out.status.code(), drifts))
    };
    let (code, drifts) = check(&[])?;
    if code != Some(0) || !drifts.is_empty() {
        failures.push(format!(
            "check right after learning: exit {code:?}, {drifts:?}"
        ));
    }
    // The UDP server stops; a TCP listener takes its port number; another UDP
    // server binds the spare port.
    server.kill();
    let tcp = TcpListener::bind((addr, port))?;
    let other = UdpServer::spawn(
        addr,
        spare_ports,
        "pw-bl-udp2",
        "pw-bl-udp2-w",
        1,
        Hold::UntilKilled,
    )?;
    let (code, drifts) = check(&[])?;
    if code != Some(1) {
        failures.push(format!(
            "check after the departures: exit {code:?}, expected 1"
        ));
    }
    let spare = other.listener.port;
    // The reason names a UDP port `PORT/udp`, a TCP one by its number alone.
    for (kind, on, udp) in [
        ("missing-listener", port, true),
        ("unexpected-listener", port, false),
        ("unexpected-listener", spare, true),
    ] {
        let found = drifts
            .iter()
            .filter(|d| d["drift"]["kind"] == kind && d["drift"]["port"] == on)
            .filter(|d| {
                d["drift"]["reason"]
                    .as_str()
                    .is_some_and(|r| r.contains(&format!("{on}/udp")) == udp)
            })
            .count();
        if found != 1 {
            let proto = if udp { "udp" } else { "tcp" };
            failures.push(format!(
                "{found} `{kind}` drifts on {proto} port {on}, expected 1: {drifts:?}"
            ));
        }
    }
    if drifts.len() != 3 {
        failures.push(format!("{} drifts, expected 3: {drifts:?}", drifts.len()));
    }
    other.kill();
    drop(tcp);
    let _ = std::fs::remove_dir_all(&dir);
    Ok(failures)
}
