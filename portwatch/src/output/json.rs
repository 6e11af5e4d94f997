//! JSON Lines: one object per event. The schema is documented in the README.
use std::{
    io::{self, Write},
    num::NonZeroUsize,
    sync::Arc,
};

use lru::LruCache;
use serde::Serialize;

use super::{
    append,
    json_object::Object,
    printer::{LossReport, Printer, RunInfo, StatsReport},
    time_text::Rfc3339Utc,
};
use crate::{
    baseline::check::Drift,
    event::model::{ConnEvent, Endpoint, ProcessDetails, ProcessMissing},
};

pub struct JsonPrinter<W: Write> {
    out: W,
    info: RunInfo,
    /// The line being built, reused from event to event.
    line: Vec<u8>,
    time: Rfc3339Utc,
    /// The process fields of recent events' processes, already in JSON: one process
    /// makes many connections, and its command line need not be escaped every time.
    /// Each entry keeps its details alive, so the address it is keyed by is not
    /// reused while the entry exists.
    process_json: LruCache<usize, (Arc<ProcessDetails>, Vec<u8>)>,
}

/// Processes whose JSON fields are kept.
const PROCESS_JSON_CACHE: usize = 64;

impl<W: Write> JsonPrinter<W> {
    pub fn new(out: W, info: RunInfo) -> Self {
        JsonPrinter {
            out,
            info,
            line: Vec::with_capacity(1024),
            time: Rfc3339Utc::new(),
            process_json: LruCache::new(NonZeroUsize::new(PROCESS_JSON_CACHE).unwrap()),
        }
    }

    /// One event as a JSON line. The fields, in order, are documented in the README.
    fn write_event(&mut self, e: &ConnEvent, line: &mut Vec<u8>) -> io::Result<()> {
        let owner = e.owner.as_ref();
        let mut o = Object::open(line);
        o.key("time");
        o.out.push(b'"');
        self.time.write(&e.time, o.out);
        o.out.push(b'"');
        o.name("event", e.kind.name());
        o.name("role", e.role.name());
        o.name("proto", e.proto.name());
        o.name("family", e.family.name());
        o.field("pid", &owner.map(|o| o.pid));
        o.field("tid", &owner.map(|o| o.tid));
        o.field("comm", &owner.map(|o| o.comm.as_str()));
        o.field("uid", &owner.map(|o| o.uid));
        o.field("pid_exact", &e.pid_exact);
        o.key("local");
        endpoint(o.out, &e.local)?;
        o.key("remote");
        endpoint(o.out, &e.remote)?;
        o.name("state", e.state_text());
        o.name("old_state", e.old_state_text());
        o.key("sock_id");
        o.out.push(b'"');
        append::hex16(o.out, e.sock_id);
        o.out.push(b'"');
        if let Some(netns) = e.netns {
            o.field("netns", &netns);
        }
        if let Some(d) = e.duration {
            o.field("duration_ms", &(d.as_nanos() as f64 / 1e6));
        }
        if e.inferred {
            o.field("inferred", &true);
        }
        if let Some(err) = &e.error {
            o.key("error");
            let mut inner = Object::open(o.out);
            inner.field("errno", &err.errno);
            inner.field("reason", err.reason);
            inner.close()?;
        }
        o.field("ppid", &owner.and_then(|o| o.ppid));
        o.key("exe");
        match &e.process {
            Some(p) => o.out.extend_from_slice(self.process_fields(p)?),
            None => o.out.extend_from_slice(NO_PROCESS.as_bytes()),
        }
        o.key("notes");
        o.out.push(b'[');
        for (i, n) in e.notes.iter().enumerate() {
            if i > 0 {
                o.out.push(b',');
            }
            o.value(n.code());
        }
        o.out.push(b']');
        if let Some(l) = &e.lifetime {
            for (key, t) in [("opened", &l.opened), ("closed", &l.closed)] {
                o.key(key);
                match t {
                    Some(t) => {
                        o.out.push(b'"');
                        self.time.write(t, o.out);
                        o.out.push(b'"');
                    }
                    None => o.out.extend_from_slice(b"null"),
                }
            }
        }
        o.field(
            "attach",
            &(!self.info.attach_mode.is_empty()).then_some(self.info.attach_mode.as_str()),
        );
        o.close()?;
        line.push(b'\n');
        Ok(())
    }

    /// `exe`'s value and the process fields after it, from the cache when the same
    /// details were printed recently.
    fn process_fields(&mut self, p: &Arc<ProcessDetails>) -> io::Result<&[u8]> {
        let key = Arc::as_ptr(p) as usize;
        let fresh = || -> io::Result<Vec<u8>> {
            let mut text = Vec::with_capacity(256);
            let mut o = Object::continued(&mut text);
            o.value(&p.exe.as_deref());
            o.field("cmdline", &p.cmdline.as_deref());
            o.field("user", &p.user.as_deref());
            o.field("cgroup", &p.cgroup.as_deref());
            o.field("container_id", &p.container_id.as_deref());
            o.field("process_missing", &p.missing.map(ProcessMissing::text));
            o.done()?;
            Ok(text)
        };
        let (_, text) = self
            .process_json
            .try_get_or_insert(key, || fresh().map(|t| (p.clone(), t)))?;
        Ok(text)
    }
}

/// `exe` and the process fields when the owner is unknown.
const NO_PROCESS: &str =
    r#"null,"cmdline":null,"user":null,"cgroup":null,"container_id":null,"process_missing":null"#;

fn endpoint(out: &mut Vec<u8>, e: &Endpoint) -> io::Result<()> {
    let mut o = Object::open(out);
    o.key("addr");
    o.out.push(b'"');
    append::ip(o.out, e.addr);
    o.out.push(b'"');
    o.key("port");
    append::decimal(o.out, e.port);
    o.name("class", e.class.name());
    o.field("ephemeral", &e.ephemeral);
    o.field("service", &e.service);
    o.close()
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

/// One JSON line.
fn line<W: Write, T: Serialize>(out: &mut W, value: &T) -> io::Result<()> {
    serde_json::to_writer(&mut *out, value)?;
    out.write_all(b"\n")
}

impl<W: Write> Printer for JsonPrinter<W> {
    fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }

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

    fn drift(&mut self, d: &Drift) -> io::Result<()> {
        let mut line = std::mem::take(&mut self.line);
        line.clear();
        let mut written = Ok(());
        if let Some(e) = &d.trigger {
            written = self.write_event(e, &mut line);
            line.pop(); // its newline
        }
        let event = d.trigger.as_ref().map(|_| line.as_slice());
        let written = written.and_then(|()| super::drift::json_line(&mut self.out, d, event));
        self.line = line;
        written
    }

    fn event(&mut self, e: &ConnEvent) -> io::Result<()> {
        let mut line = std::mem::take(&mut self.line);
        line.clear();
        let written = self
            .write_event(e, &mut line)
            .and_then(|()| self.out.write_all(&line));
        self.line = line;
        written
    }
}

#[cfg(test)]
mod tests {
    use serde_json::Value;

    use super::*;
    use crate::event::decode::tests::sample_event;

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
            skipped_total: 4,
            nested_caught: 3,
            socket_store: "socket storage",
            socket_map_entries: 2,
            socket_map_cap: Some(262_144),
            listener_map_entries: 1,
            process_cache_entries: 3,
            open_sockets: 5,
            inferred_closes: 1,
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
        assert_eq!(lines[1]["skipped_total"], 4);
        assert_eq!(lines[1]["nested_caught"], 3);
        assert_eq!(lines[1]["socket_store"], "socket storage");
        assert_eq!(lines[1]["socket_map_cap"], 262_144);
        assert_eq!(lines[1]["rss_kb"], 4000);
        assert_eq!(lines[1]["inferred_closes"], 1);
        assert_eq!(lines[1]["time"], "1970-01-01T00:00:00.000000000Z");
    }

    #[test]
    fn process_details_and_notes() {
        let mut e = sample_event();
        e.process = Some(std::sync::Arc::new(crate::event::model::ProcessDetails {
            exe: Some("/usr/bin/curl".into()),
            cmdline: Some(vec!["curl".to_string(), "http://x/\u{1b}".to_string()].into()),
            user: Some("alice".into()),
            cgroup: Some("/system.slice/docker-ab.scope".into()),
            container_id: Some("ab".into()),
            missing: None,
        }));
        e.notes = vec![crate::event::model::Note::ClientToDynamicPort];
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
