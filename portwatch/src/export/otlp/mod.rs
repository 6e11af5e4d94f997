//! OTLP log export (`--otlp-endpoint URL`): every event, `lost` report and drift
//! becomes one OpenTelemetry log record sent over OTLP/HTTP (protobuf) by
//! opentelemetry-otlp. The reader only appends to a bounded spool ([`spool`]);
//! a thread of its own ([`sender`]) batches, sends, and retries with backoff
//! while the collector is down. Every record carries the run's sequence number
//! (`portwatch.sequence`, from 1) and the run's `service.instance.id`, so a
//! receiver can see gaps; every record is, in the end, delivered or counted
//! dropped (spool full, refused by the collector, undelivered at exit).
mod record;
mod sender;
mod spool;

use std::{
    sync::{Arc, Mutex},
    thread::JoinHandle,
    time::{Duration, Instant},
};

use opentelemetry::KeyValue;
use opentelemetry_otlp::{Protocol, RetryPolicy, WithExportConfig, WithHttpConfig};
use opentelemetry_sdk::{logs::LogExporter as _, Resource};
use prometheus_client::registry::Registry;

pub use record::Item;
use spool::{Counters, Spool};

use crate::{baseline::check::Drift, event::model::ConnEvent, output::LossReport};

/// Records per OTLP request.
const BATCH: usize = 512;
/// At the end of a run, how long undelivered records may still be sent.
pub const EXIT_DEADLINE: Duration = Duration::from_secs(5);
/// How long past the deadline a request in flight may still finish.
const EXIT_GRACE: Duration = Duration::from_millis(500);

/// Why OTLP export cannot start: a usage error (exit 2).
#[derive(Debug, thiserror::Error)]
pub enum OtlpError {
    #[error("{var}={value}: portwatch sends OTLP over HTTP with protobuf only (http/protobuf)")]
    Protocol { var: &'static str, value: String },
    #[error("--otlp-endpoint: {0}")]
    Exporter(#[from] opentelemetry_otlp::ExporterBuildError),
    #[error("starting the OTLP sender thread")]
    Thread(#[source] std::io::Error),
}

/// Where to send and how much to hold.
pub struct OtlpConfig {
    /// `--otlp-endpoint` (or OTEL_EXPORTER_OTLP_ENDPOINT): the collector's base
    /// URL, `/v1/logs` appended as the specification says; None: the exporter's
    /// own reading of OTEL_EXPORTER_OTLP_LOGS_ENDPOINT.
    pub endpoint: Option<String>,
    /// `--otlp-buffer`: records spooled (and in flight) at most.
    pub capacity: usize,
    pub attach_mode: &'static str,
}

/// The logs endpoint for a base URL: `http://collector:4318` →
/// `http://collector:4318/v1/logs` (a URL already ending so is kept).
pub fn logs_url(base: &str) -> String {
    let base = base.trim_end_matches('/');
    if base.ends_with("/v1/logs") {
        base.to_string()
    } else {
        format!("{base}/v1/logs")
    }
}

/// What a run's export came to.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Delivery {
    pub produced: u64,
    pub delivered: u64,
    pub dropped_full: u64,
    pub dropped_rejected: u64,
    pub dropped_at_exit: u64,
}

impl Delivery {
    pub fn dropped(&self) -> u64 {
        self.dropped_full + self.dropped_rejected + self.dropped_at_exit
    }
}

/// The exporter: cheap to clone; every clone feeds the same spool.
#[derive(Clone)]
pub struct Otlp {
    spool: Arc<Spool>,
    thread: Arc<Mutex<Option<JoinHandle<()>>>>,
}

impl Otlp {
    /// Build the exporter and start its thread. Its counters are registered in
    /// `registry` when metrics are served.
    pub fn start(config: OtlpConfig, registry: Option<&mut Registry>) -> Result<Otlp, OtlpError> {
        // The signal's own variable wins over the generic one, as the
        // specification says.
        let protocol = [
            "OTEL_EXPORTER_OTLP_LOGS_PROTOCOL",
            "OTEL_EXPORTER_OTLP_PROTOCOL",
        ]
        .into_iter()
        .find_map(|var| Some((var, std::env::var(var).ok()?)));
        if let Some((var, value)) = protocol {
            if value != "http/protobuf" {
                return Err(OtlpError::Protocol { var, value });
            }
        }
        let mut builder = opentelemetry_otlp::LogExporter::builder()
            .with_http()
            .with_protocol(Protocol::HttpBinary)
            .with_retry_policy(RetryPolicy::disabled());
        if let Some(base) = &config.endpoint {
            builder = builder.with_endpoint(logs_url(base));
        }
        let mut exporter = builder.build()?;
        exporter.set_resource(&resource(config.attach_mode));
        let spool = Arc::new(Spool::new(config.capacity, BATCH));
        if let Some(registry) = registry {
            register(registry, &spool.counters);
        }
        let sender = sender::Sender {
            exporter,
            spool: spool.clone(),
        };
        let thread = std::thread::Builder::new()
            .name("otlp-sender".into())
            .spawn(move || sender.run())
            .map_err(OtlpError::Thread)?;
        Ok(Otlp {
            spool,
            thread: Arc::new(Mutex::new(Some(thread))),
        })
    }

    fn push(&self, item: Item) {
        if self.spool.push(item) {
            eprintln!(
                "portwatch: warning: otlp: spool full; records are dropped (and counted) until the collector catches up"
            );
        }
    }

    pub fn event(&self, e: &ConnEvent) {
        self.push(Item::Event(e.clone()));
    }

    pub fn drift(&self, d: &Drift) {
        self.push(Item::Drift(d.clone()));
    }

    pub fn lost(&self, r: &LossReport) {
        self.push(Item::Lost(r.clone()));
    }

    /// The counts so far.
    pub fn delivery(&self) -> Delivery {
        let c: &Counters = &self.spool.counters;
        Delivery {
            produced: c.produced.get(),
            delivered: c.delivered.get(),
            dropped_full: c.dropped_full.get(),
            dropped_rejected: c.dropped_rejected.get(),
            dropped_at_exit: c.dropped_at_exit.get(),
        }
    }

    /// End of the run: deliver what is left within `deadline`, stop the thread,
    /// and say on stderr what became of every record.
    pub fn finish(&self, deadline: Duration) -> Delivery {
        let end = Instant::now() + deadline;
        self.spool.close(end);
        let thread = self.thread.lock().ok().and_then(|mut t| t.take());
        if let Some(t) = thread {
            // A request in flight may hang past the deadline (the exporter's own
            // timeout is longer): past it, the rest is counted dropped and the
            // thread is left to the process's exit.
            while !t.is_finished() && Instant::now() < end + EXIT_GRACE {
                std::thread::sleep(Duration::from_millis(10));
            }
            if t.is_finished() {
                let _ = t.join();
            } else {
                self.spool.abandon_all();
            }
        }
        let d = self.delivery();
        eprintln!(
            "portwatch: otlp: {} records delivered, {} dropped ({} spool full, {} refused by the collector, {} undelivered at exit)",
            d.delivered, d.dropped(), d.dropped_full, d.dropped_rejected, d.dropped_at_exit
        );
        d
    }
}

/// service.name, host and kernel, this run's instance id and attach mode; the user's
/// OTEL_RESOURCE_ATTRIBUTES and OTEL_SERVICE_NAME win over these.
fn resource(attach_mode: &'static str) -> Resource {
    let uts = nix::sys::utsname::uname().ok();
    let field = |f: fn(&nix::sys::utsname::UtsName) -> &std::ffi::OsStr| {
        uts.as_ref()
            .map(|u| f(u).to_string_lossy().into_owned())
            .unwrap_or_default()
    };
    let ours = [
        KeyValue::new("service.name", "portwatch"),
        KeyValue::new("service.version", env!("CARGO_PKG_VERSION")),
        KeyValue::new("service.instance.id", instance_id()),
        KeyValue::new("host.name", field(|u| u.nodename())),
        KeyValue::new("os.type", "linux"),
        KeyValue::new("os.version", field(|u| u.release())),
        KeyValue::new("portwatch.attach_mode", attach_mode),
    ];
    let from_env = Resource::builder().build();
    Resource::builder_empty()
        .with_attributes(ours)
        .with_attributes(
            from_env
                .iter()
                .filter(|(k, _)| {
                    // The SDK's default service name is not the user's choice.
                    !(k.as_str() == "service.name"
                        && std::env::var_os("OTEL_SERVICE_NAME").is_none()
                        && !std::env::var("OTEL_RESOURCE_ATTRIBUTES")
                            .unwrap_or_default()
                            .contains("service.name="))
                })
                .map(|(k, v)| KeyValue::new(k.clone(), v.clone())),
        )
        .build()
}

/// A random id for this run (service.instance.id), from the kernel's UUID source.
fn instance_id() -> String {
    std::fs::read_to_string("/proc/sys/kernel/random/uuid")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| {
            format!(
                "{}-{}",
                std::process::id(),
                chrono::Utc::now().timestamp_nanos_opt().unwrap_or(0)
            )
        })
}

/// The exporter's counters as Prometheus metrics, labelled `exporter="otlp"`.
fn register(registry: &mut Registry, c: &Counters) {
    let r = registry.sub_registry_with_label(("exporter".into(), "otlp".into()));
    r.register(
        "export_records",
        "Records given to the exporter",
        c.produced.clone(),
    );
    r.register(
        "export_records_delivered",
        "Records the collector accepted",
        c.delivered.clone(),
    );
    r.register(
        "export_records_dropped_spool_full",
        "Records dropped because the exporter's spool was full",
        c.dropped_full.clone(),
    );
    r.register(
        "export_records_dropped_rejected",
        "Records the collector refused for good",
        c.dropped_rejected.clone(),
    );
    r.register(
        "export_records_dropped_at_exit",
        "Records still undelivered when the run ended",
        c.dropped_at_exit.clone(),
    );
    r.register(
        "export_spool_records",
        "Records spooled or in flight now",
        c.spooled.clone(),
    );
}
