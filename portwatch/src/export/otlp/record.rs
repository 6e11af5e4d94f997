//! One OTLP log record per event, `lost` report and drift: OpenTelemetry's
//! semantic conventions where one exists (`network.*`, `client.*`/`server.*` by
//! role, `process.*`, `thread.*`, `container.id`, `error.type`), `portwatch.*`
//! for the rest. The README's mapping table lists every attribute.
use std::time::SystemTime;

use opentelemetry::{
    logs::{AnyValue, LogRecord as _, Severity},
    StringValue,
};
use opentelemetry_sdk::logs::SdkLogRecord;

use crate::{
    baseline::check::Drift,
    event::model::{ConnEvent, Endpoint, Role},
    output::{sentence, LossReport},
};

/// What the exporter is given, with the run's sequence number it was given.
#[derive(Debug)]
pub enum Item {
    Event(ConnEvent),
    Drift(Drift),
    Lost(LossReport),
}

/// Fills `record` (new, from the exporter's logger) with `item`, numbered `seq`
/// in this run.
pub fn fill(record: &mut SdkLogRecord, item: &Item, seq: u64) {
    record.set_observed_timestamp(SystemTime::now());
    record.add_attribute("portwatch.sequence", seq as i64);
    match item {
        Item::Event(e) => {
            record.set_event_name(event_name(e));
            record.set_severity_number(Severity::Info);
            record.set_severity_text("INFO");
            record.set_timestamp(e.time.into());
            record.set_body(AnyValue::from(sentence(e)));
            event_attributes(record, e);
        }
        Item::Drift(d) => {
            record.set_event_name("portwatch.drift");
            record.set_severity_number(Severity::Warn);
            record.set_severity_text("WARN");
            record.set_timestamp(
                d.trigger
                    .as_ref()
                    .map_or_else(SystemTime::now, |e| e.time.into()),
            );
            record.set_body(AnyValue::from(d.reason.clone()));
            record.add_attribute("portwatch.drift.kind", d.kind.name());
            record.add_attribute("portwatch.drift.port", i64::from(d.port));
            if let Some(e) = &d.trigger {
                event_attributes(record, e);
            }
        }
        Item::Lost(r) => {
            record.set_event_name("portwatch.lost");
            record.set_severity_number(Severity::Warn);
            record.set_severity_text("WARN");
            record.set_timestamp(r.time.into());
            record.set_body(AnyValue::from(format!(
                "{} events lost (ring buffer full), {} in total",
                r.lost, r.lost_total
            )));
            record.add_attribute("portwatch.lost", r.lost as i64);
            record.add_attribute("portwatch.lost_total", r.lost_total as i64);
            record.add_attribute("portwatch.skipped_total", r.skipped_total as i64);
            record.add_attribute(
                "portwatch.lost_per_cpu",
                r.per_cpu.iter().map(|n| *n as i64).collect::<AnyValue>(),
            );
        }
    }
}

/// `portwatch.listen`, `portwatch.connect-failed`, ...
fn event_name(e: &ConnEvent) -> &'static str {
    use crate::event::model::EventKind::*;
    match e.kind {
        Listen => "portwatch.listen",
        Accept => "portwatch.accept",
        Connect => "portwatch.connect",
        ConnectFailed => "portwatch.connect-failed",
        Close => "portwatch.close",
        Snapshot => "portwatch.snapshot",
    }
}

fn event_attributes(record: &mut SdkLogRecord, e: &ConnEvent) {
    record.add_attribute("portwatch.event", e.kind.name());
    record.add_attribute("portwatch.role", e.role.name());
    record.add_attribute("network.transport", e.proto.name());
    record.add_attribute("network.type", e.family.name());
    endpoints(record, e);
    record.add_attribute("portwatch.tcp.state", e.state.name());
    record.add_attribute("portwatch.tcp.old_state", e.old_state.name());
    record.add_attribute("portwatch.sock_id", format!("{:016x}", e.sock_id));
    record.add_attribute("portwatch.pid_exact", e.pid_exact);
    if let Some(netns) = e.netns {
        record.add_attribute("portwatch.netns", i64::from(netns));
    }
    if let Some(d) = e.duration {
        record.add_attribute("portwatch.duration_ms", d.as_nanos() as f64 / 1e6);
    }
    if e.inferred {
        record.add_attribute("portwatch.inferred", true);
    }
    if let Some(err) = &e.error {
        record.add_attribute("error.type", err.reason);
        record.add_attribute("portwatch.errno", i64::from(err.errno));
    }
    if !e.notes.is_empty() {
        record.add_attribute(
            "portwatch.notes",
            e.notes.iter().map(|n| n.code()).collect::<AnyValue>(),
        );
    }
    process(record, e);
}

/// Both ends, by the conventions' roles: the server end is `server.*`, the client
/// end `client.*` (a listener has only a server end); which is local follows from
/// `portwatch.role`. (`network.local.*` and `network.peer.*` would repeat them:
/// every attribute costs the exporter an encoding.)
fn endpoints(record: &mut SdkLogRecord, e: &ConnEvent) {
    let (server, client) = match e.role {
        Role::Listener => (&e.local, None),
        Role::Server => (&e.local, Some(&e.remote)),
        Role::Client => (&e.remote, Some(&e.local)),
    };
    address(record, ["server.address", "server.port"], server);
    if let Some(c) = client {
        address(record, ["client.address", "client.port"], c);
    }
    classes(record, LOCAL, &e.local);
    if e.role != Role::Listener {
        classes(record, REMOTE, &e.remote);
    }
}

/// The keys of one end's classification (static: no key is built per record).
const LOCAL: [&str; 3] = [
    "portwatch.local.port_class",
    "portwatch.local.ephemeral",
    "portwatch.local.service",
];
const REMOTE: [&str; 3] = [
    "portwatch.remote.port_class",
    "portwatch.remote.ephemeral",
    "portwatch.remote.service",
];

fn classes(
    record: &mut SdkLogRecord,
    [class, ephemeral, service]: [&'static str; 3],
    end: &Endpoint,
) {
    record.add_attribute(class, end.class.name());
    record.add_attribute(ephemeral, end.ephemeral);
    if let Some(name) = end.service {
        record.add_attribute(service, name);
    }
}

fn address(record: &mut SdkLogRecord, [address, port]: [&'static str; 2], end: &Endpoint) {
    record.add_attribute(address, end.addr.to_string());
    record.add_attribute(port, i64::from(end.port));
}

/// The owner as the kernel saw it, and what userspace read of it.
fn process(record: &mut SdkLogRecord, e: &ConnEvent) {
    let Some(o) = &e.owner else {
        return;
    };
    record.add_attribute("process.pid", i64::from(o.pid));
    record.add_attribute("thread.id", i64::from(o.tid));
    record.add_attribute("thread.name", o.comm.clone());
    record.add_attribute("process.user.id", i64::from(o.uid));
    if let Some(ppid) = o.ppid {
        record.add_attribute("process.parent_pid", i64::from(ppid));
    }
    let Some(p) = &e.process else {
        return;
    };
    if let Some(exe) = &p.exe {
        record.add_attribute("process.executable.path", StringValue::from(exe.clone()));
    }
    if let Some(args) = &p.cmdline {
        record.add_attribute(
            "process.command_args",
            args.iter().cloned().collect::<AnyValue>(),
        );
    }
    if let Some(user) = &p.user {
        record.add_attribute("process.owner", user.clone());
    }
    if let Some(cgroup) = &p.cgroup {
        record.add_attribute("process.linux.cgroup", cgroup.clone());
    }
    if let Some(id) = &p.container_id {
        record.add_attribute("container.id", id.clone());
    }
    if let Some(missing) = p.missing {
        record.add_attribute("portwatch.process_missing", missing.text());
    }
}
