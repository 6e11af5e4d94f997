//! JSON Lines: one object per event. The schema is documented in the README.
use std::io::{self, Write};

use serde::Serialize;

use super::{LossReport, Printer, RunInfo, StatsReport};
use crate::model::{ConnEvent, Endpoint};

pub struct JsonPrinter<W: Write> {
    out: W,
    info: RunInfo,
}

impl<W: Write> JsonPrinter<W> {
    pub fn new(out: W, info: RunInfo) -> Self {
        JsonPrinter { out, info }
    }
}

#[derive(Serialize)]
struct EndpointJson<'a> {
    addr: String,
    port: u16,
    class: &'a str,
    ephemeral: bool,
    service: Option<&'a str>,
}

impl<'a> From<&'a Endpoint> for EndpointJson<'a> {
    fn from(e: &'a Endpoint) -> Self {
        EndpointJson {
            addr: e.addr.to_string(),
            port: e.port,
            class: e.class.name(),
            ephemeral: e.ephemeral,
            service: e.service,
        }
    }
}

#[derive(Serialize)]
struct ErrorJson<'a> {
    errno: i32,
    reason: &'a str,
}

#[derive(Serialize)]
struct EventJson<'a> {
    time: String,
    event: &'a str,
    role: &'a str,
    proto: &'a str,
    family: &'a str,
    pid: Option<u32>,
    tid: Option<u32>,
    comm: Option<&'a str>,
    uid: Option<u32>,
    pid_exact: bool,
    local: EndpointJson<'a>,
    remote: EndpointJson<'a>,
    state: &'a str,
    old_state: &'a str,
    sock_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    duration_ms: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<ErrorJson<'a>>,
    ppid: Option<u32>,
    exe: Option<&'a str>,
    cmdline: Option<&'a [String]>,
    user: Option<&'a str>,
    cgroup: Option<&'a str>,
    container_id: Option<&'a str>,
    /// Why exe and cmdline are null.
    process_missing: Option<&'a str>,
    notes: Vec<&'static str>,
    /// Null for `portwatch snapshot`, which attaches nothing.
    attach: Option<&'a str>,
}

#[derive(Serialize)]
struct LostJson<'a> {
    time: String,
    event: &'static str,
    lost: u64,
    lost_total: u64,
    per_cpu: &'a [u64],
    skipped_total: u64,
}

#[derive(Serialize)]
struct StatsJson<'a> {
    event: &'static str,
    #[serde(flatten)]
    stats: &'a StatsReport,
}

/// One JSON line, flushed.
fn line<W: Write, T: Serialize>(out: &mut W, value: &T) -> io::Result<()> {
    serde_json::to_writer(&mut *out, value)?;
    out.write_all(b"\n")?;
    out.flush()
}

impl<W: Write> Printer for JsonPrinter<W> {
    fn lost(&mut self, r: &LossReport) -> io::Result<()> {
        line(
            &mut self.out,
            &LostJson {
                time: r.time.to_rfc3339_opts(chrono::SecondsFormat::Nanos, true),
                event: "lost",
                lost: r.lost,
                lost_total: r.lost_total,
                per_cpu: &r.per_cpu,
                skipped_total: r.skipped_total,
            },
        )
    }

    fn stats(&mut self, r: &StatsReport) -> io::Result<()> {
        line(
            &mut self.out,
            &StatsJson {
                event: "stats",
                stats: r,
            },
        )
    }

    fn event(&mut self, e: &ConnEvent) -> io::Result<()> {
        let owner = e.owner.as_ref();
        let process = e.process.as_ref();
        let record = EventJson {
            time: e.time.to_rfc3339_opts(chrono::SecondsFormat::Nanos, true),
            event: e.kind.name(),
            role: e.role.name(),
            proto: "tcp",
            family: e.family.name(),
            pid: owner.map(|o| o.pid),
            tid: owner.map(|o| o.tid),
            comm: owner.map(|o| o.comm.as_str()),
            uid: owner.map(|o| o.uid),
            pid_exact: e.pid_exact,
            local: (&e.local).into(),
            remote: (&e.remote).into(),
            state: e.state.name(),
            old_state: e.old_state.name(),
            sock_id: format!("{:016x}", e.sock_id),
            duration_ms: e.duration.map(|d| d.as_nanos() as f64 / 1e6),
            error: e.error.as_ref().map(|err| ErrorJson {
                errno: err.errno,
                reason: err.reason,
            }),
            ppid: owner.and_then(|o| o.ppid),
            exe: process.and_then(|p| p.exe.as_deref()),
            cmdline: process.and_then(|p| p.cmdline.as_deref()),
            user: process.and_then(|p| p.user.as_deref()),
            cgroup: process.and_then(|p| p.cgroup.as_deref()),
            container_id: process.and_then(|p| p.container_id.as_deref()),
            process_missing: process.and_then(|p| p.missing),
            notes: e.notes.iter().map(|n| n.code()).collect(),
            attach: (!self.info.attach_mode.is_empty()).then_some(self.info.attach_mode.as_str()),
        };
        line(&mut self.out, &record)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::Value;

    use super::*;
    use crate::output::tests::sample_event;

    fn print(e: &ConnEvent) -> Value {
        let mut buf = Vec::new();
        JsonPrinter::new(
            &mut buf,
            RunInfo {
                attach_mode: "tracepoint".into(),
                ..RunInfo::default()
            },
        )
        .event(e)
        .unwrap();
        let text = String::from_utf8(buf).unwrap();
        assert_eq!(text.matches('\n').count(), 1);
        serde_json::from_str(&text).unwrap()
    }

    #[test]
    fn documented_fields_are_present() {
        let v = print(&sample_event());
        assert_eq!(v["event"], "connect");
        assert_eq!(v["role"], "client");
        assert_eq!(v["proto"], "tcp");
        assert_eq!(v["family"], "ipv4");
        assert_eq!(v["pid"], 4242);
        assert_eq!(v["tid"], 4243);
        assert_eq!(v["comm"], "curl");
        assert_eq!(v["uid"], 1000);
        assert_eq!(v["pid_exact"], true);
        assert_eq!(v["state"], "ESTABLISHED");
        assert_eq!(v["attach"], "tracepoint");
        assert_eq!(v["local"]["addr"], "127.0.0.1");
        assert_eq!(v["local"]["port"], 51031);
        assert_eq!(v["local"]["class"], "dynamic");
        assert_eq!(v["local"]["ephemeral"], true);
        assert_eq!(v["local"]["service"], Value::Null);
        assert_eq!(v["remote"]["service"], "http");
        assert_eq!(v["remote"]["class"], "well-known");
        assert_eq!(v["duration_ms"], 1.5);
        assert_eq!(v["ppid"], 4000);
        assert_eq!(v["notes"], serde_json::json!([]));
        assert_eq!(v["exe"], Value::Null);
        assert!(v["time"].as_str().unwrap().ends_with('Z'));
        assert!(chrono::DateTime::parse_from_rfc3339(v["time"].as_str().unwrap()).is_ok());
    }

    #[test]
    fn loss_and_stats_records() {
        let mut buf = Vec::new();
        let mut p = JsonPrinter::new(&mut buf, RunInfo::default());
        let time = chrono::DateTime::from_timestamp_nanos(0);
        p.lost(&LossReport {
            time,
            lost: 5,
            lost_total: 7,
            per_cpu: vec![3, 4],
            skipped_total: 1,
        })
        .unwrap();
        p.stats(&StatsReport {
            time,
            received: 10,
            printed: 9,
            lost_total: 7,
            socket_map_entries: 2,
            listener_map_entries: 1,
            process_cache_entries: 3,
            rss_kb: 4000,
        })
        .unwrap();
        let text = String::from_utf8(buf).unwrap();
        let lines: Vec<Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines[0]["event"], "lost");
        assert_eq!(lines[0]["lost"], 5);
        assert_eq!(lines[0]["lost_total"], 7);
        assert_eq!(lines[0]["per_cpu"], serde_json::json!([3, 4]));
        assert_eq!(lines[0]["skipped_total"], 1);
        assert_eq!(lines[1]["event"], "stats");
        assert_eq!(lines[1]["received"], 10);
        assert_eq!(lines[1]["socket_map_entries"], 2);
        assert_eq!(lines[1]["rss_kb"], 4000);
        assert_eq!(lines[1]["time"], "1970-01-01T00:00:00.000000000Z");
    }

    #[test]
    fn process_details_and_notes() {
        let mut e = sample_event();
        e.process = Some(crate::model::ProcessDetails {
            exe: Some("/usr/bin/curl".into()),
            cmdline: Some(vec!["curl".to_string(), "http://x/\u{1b}".to_string()].into()),
            user: Some("alice".into()),
            cgroup: Some("/system.slice/docker-ab.scope".into()),
            container_id: Some("ab".into()),
            missing: None,
        });
        e.notes = vec![crate::notes::Note::ClientToDynamicPort];
        let v = print(&e);
        assert_eq!(v["exe"], "/usr/bin/curl");
        assert_eq!(v["cmdline"], serde_json::json!(["curl", "http://x/\u{1b}"]));
        assert_eq!(v["user"], "alice");
        assert_eq!(v["cgroup"], "/system.slice/docker-ab.scope");
        assert_eq!(v["container_id"], "ab");
        assert_eq!(v["process_missing"], Value::Null);
        assert_eq!(v["notes"], serde_json::json!(["client-to-dynamic-port"]));
    }

    #[test]
    fn unknown_owner_is_null_and_hostile_names_stay_valid_json() {
        let mut e = sample_event();
        e.owner.as_mut().unwrap().comm = "x\"\n\x1b\u{7f}".into();
        let v = print(&e);
        assert_eq!(v["comm"], "x\"\n\x1b\u{7f}");
        e.owner = None;
        e.pid_exact = false;
        let v = print(&e);
        assert_eq!(v["pid"], Value::Null);
        assert_eq!(v["comm"], Value::Null);
        assert_eq!(v["pid_exact"], false);
    }
}
