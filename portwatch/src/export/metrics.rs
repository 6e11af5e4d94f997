//! Prometheus metrics (`--metrics ADDR:PORT`): the event stream and the kernel
//! side's counters as Prometheus counters and gauges, served in the text format
//! on `/metrics` from a thread of their own, so that a slow scraper never touches
//! the ring-buffer reader. Names follow Prometheus' conventions (`_total`
//! counters, base units); label values are bounded (event kinds, roles, families,
//! connect-failure reasons, CPUs), and listeners are capped at
//! [`LISTENER_SERIES`] series.
use std::{
    collections::HashMap,
    net::SocketAddr,
    sync::{atomic::AtomicU64, Arc},
    thread,
};

use prometheus_client::{
    encoding::text::encode,
    metrics::{counter::Counter, family::Family, gauge::Gauge},
    registry::Registry,
};

use crate::event::model::{ConnEvent, EventKind};

/// The most listener series `portwatch_listeners` keeps (port, family,
/// executable); listeners beyond are counted in `portwatch_listeners_unlabelled`.
pub const LISTENER_SERIES: usize = 1000;

type Labels = Vec<(&'static str, String)>;

/// The metrics, updated by the reader and read by the server thread.
#[derive(Clone)]
pub struct Metrics {
    events: Family<Labels, Counter>,
    connect_failures: Family<Labels, Counter>,
    inferred: Counter,
    lost: Family<Labels, Counter<u64, AtomicU64>>,
    skipped: Family<Labels, Counter<u64, AtomicU64>>,
    listeners: Family<Labels, Gauge>,
    listeners_unlabelled: Gauge,
    /// Open listeners by socket id: the label set each counts in.
    open_listeners: Arc<std::sync::Mutex<HashMap<u64, Option<Labels>>>>,
    open_sockets: Gauge,
    process_cache: Gauge,
    socket_map: Gauge,
    ringbuf_used: Gauge<f64, AtomicU64>,
}

impl Metrics {
    /// The metrics, registered in a new registry with the run's attach mode and
    /// portwatch's version as an info metric.
    pub fn new(attach_mode: &str) -> (Metrics, Registry) {
        let mut registry = Registry::with_prefix("portwatch");
        let m = Metrics {
            events: Family::default(),
            connect_failures: Family::default(),
            inferred: Counter::default(),
            lost: Family::default(),
            skipped: Family::default(),
            listeners: Family::default(),
            listeners_unlabelled: Gauge::default(),
            open_listeners: Arc::default(),
            open_sockets: Gauge::default(),
            process_cache: Gauge::default(),
            socket_map: Gauge::default(),
            ringbuf_used: Gauge::default(),
        };
        registry.register(
            "events",
            "Events shown, by kind, role, protocol and family",
            m.events.clone(),
        );
        registry.register(
            "connect_failures",
            "Connects that failed, by the kernel's reason",
            m.connect_failures.clone(),
        );
        registry.register(
            "closes_inferred",
            "Closes the kernel never reported, inferred from its socket listings",
            m.inferred.clone(),
        );
        registry.register(
            "events_lost",
            "Events the kernel side could not put in the full ring buffer, by CPU",
            m.lost.clone(),
        );
        registry.register(
            "program_runs_skipped",
            "Program runs the kernel skipped (its recursion guard), each possibly an event, by program",
            m.skipped.clone(),
        );
        registry.register(
            "listeners",
            "Listening sockets now, by port, protocol, family and executable",
            m.listeners.clone(),
        );
        registry.register(
            "listeners_unlabelled",
            "Listening sockets now beyond the labelled series' cap",
            m.listeners_unlabelled.clone(),
        );
        registry.register(
            "open_sockets",
            "Sockets shown open and followed until their close",
            m.open_sockets.clone(),
        );
        registry.register(
            "process_cache_entries",
            "Processes described in the cache",
            m.process_cache.clone(),
        );
        registry.register(
            "socket_map_entries",
            "Entries of the kernel's owner map in use",
            m.socket_map.clone(),
        );
        registry.register(
            "ringbuf_used_ratio",
            "Share of the ring buffer holding records not read yet (0 to 1), at the scrape",
            m.ringbuf_used.clone(),
        );
        let info = prometheus_client::metrics::info::Info::new(vec![
            ("version", env!("CARGO_PKG_VERSION").to_string()),
            ("attach_mode", attach_mode.to_string()),
        ]);
        registry.register("build", "portwatch's version and attach mode", info);
        (m, registry)
    }

    /// Count one event shown.
    pub fn observe(&self, e: &ConnEvent) {
        self.events
            .get_or_create(&vec![
                ("event", e.kind.name().to_string()),
                ("role", e.role.name().to_string()),
                ("proto", e.proto.name().to_string()),
                ("family", e.family.name().to_string()),
            ])
            .inc();
        if e.inferred {
            self.inferred.inc();
        }
        match e.kind {
            EventKind::ConnectFailed => {
                let reason = e.error.as_ref().map_or("unknown", |err| err.reason);
                self.connect_failures
                    .get_or_create(&vec![("reason", reason.to_string())])
                    .inc();
            }
            EventKind::Listen | EventKind::Snapshot
                if e.role == crate::event::model::Role::Listener =>
            {
                self.listener_opened(e)
            }
            EventKind::Close if e.role == crate::event::model::Role::Listener => {
                self.listener_closed(e.sock_id)
            }
            _ => {}
        }
    }

    fn listener_opened(&self, e: &ConnEvent) {
        let mut open = self.open_listeners.lock().unwrap();
        if open.contains_key(&e.sock_id) {
            return;
        }
        let labels: Labels = vec![
            ("port", e.local.port.to_string()),
            ("proto", e.proto.name().to_string()),
            ("family", e.family.name().to_string()),
            (
                "exe",
                e.process
                    .as_ref()
                    .and_then(|p| p.exe.as_deref())
                    .unwrap_or("")
                    .to_string(),
            ),
        ];
        let labelled = open.values().flatten().count();
        let known = open.values().flatten().any(|l| *l == labels);
        if known || labelled < LISTENER_SERIES {
            self.listeners.get_or_create(&labels).inc();
            open.insert(e.sock_id, Some(labels));
        } else {
            self.listeners_unlabelled.inc();
            open.insert(e.sock_id, None);
        }
    }

    fn listener_closed(&self, sock_id: u64) {
        let mut open = self.open_listeners.lock().unwrap();
        match open.remove(&sock_id) {
            Some(Some(labels)) => {
                let left = self.listeners.get_or_create(&labels).dec() - 1;
                if left <= 0 {
                    self.listeners.remove(&labels);
                }
            }
            Some(None) => {
                self.listeners_unlabelled.dec();
            }
            None => {}
        }
    }

    /// The kernel side's counters and the occupancy gauges, as last read.
    pub fn kernel(
        &self,
        lost_per_cpu: &[u64],
        skipped_per_program: &[(String, u64)],
        open_sockets: u64,
        process_cache: u64,
        socket_map: u64,
    ) {
        for (cpu, lost) in lost_per_cpu.iter().enumerate() {
            raise_to(
                &self.lost.get_or_create(&vec![("cpu", cpu.to_string())]),
                *lost,
            );
        }
        for (program, skipped) in skipped_per_program {
            raise_to(
                &self
                    .skipped
                    .get_or_create(&vec![("program", program.clone())]),
                *skipped,
            );
        }
        self.open_sockets.set(open_sockets as i64);
        self.process_cache.set(process_cache as i64);
        self.socket_map.set(socket_map as i64);
    }

    /// The ring buffer's fill level (0 to 1).
    pub fn ringbuf_used(&self, ratio: f64) {
        self.ringbuf_used.set(ratio);
    }
}

/// A counter kept equal to a total the kernel side counts (it only grows).
fn raise_to(counter: &Counter<u64, AtomicU64>, total: u64) {
    let now = counter.get();
    if total > now {
        counter.inc_by(total - now);
    }
}

/// Serve `registry` on `addr` (`/metrics`, text format) from a thread of its own;
/// `before_scrape` runs before each (for what is read at the scrape, not by the
/// reader, which may be busy).
pub fn serve(
    addr: SocketAddr,
    registry: Registry,
    before_scrape: Box<dyn Fn() + Send>,
) -> std::io::Result<SocketAddr> {
    let server = tiny_http::Server::http(addr).map_err(std::io::Error::other)?;
    let bound = server
        .server_addr()
        .to_ip()
        .ok_or_else(|| std::io::Error::other("not an IP address"))?;
    let registry = Arc::new(registry);
    thread::Builder::new().name("metrics".into()).spawn(move || {
        for request in server.incoming_requests() {
            let response = if request.url() == "/metrics" {
                before_scrape();
                let mut body = String::new();
                match encode(&mut body, &registry) {
                    Ok(()) => tiny_http::Response::from_string(body).with_header(
                        "Content-Type: application/openmetrics-text; version=1.0.0; charset=utf-8"
                            .parse::<tiny_http::Header>()
                            .expect("a valid header"),
                    ),
                    Err(_) => tiny_http::Response::from_string("encoding failed").with_status_code(500),
                }
            } else {
                tiny_http::Response::from_string("see /metrics").with_status_code(404)
            };
            let _ = request.respond(response);
        }
    })?;
    Ok(bound)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::decode::tests::sample_event;

    fn text(registry: &Registry) -> String {
        let mut body = String::new();
        encode(&mut body, registry).unwrap();
        body
    }

    #[test]
    fn events_listeners_and_kernel_counters_in_the_text_format() {
        let (m, registry) = Metrics::new("tracepoint");
        let mut e = sample_event();
        m.observe(&e);
        m.observe(&e);
        e.kind = EventKind::Listen;
        e.role = crate::event::model::Role::Listener;
        m.observe(&e);
        m.kernel(&[3, 4], &[("accept".into(), 2)], 7, 1, 0);
        let body = text(&registry);
        assert!(
            body.contains(
                "portwatch_events_total{event=\"connect\",role=\"client\",proto=\"tcp\",family=\"ipv4\"} 2"
            ),
            "{body}"
        );
        assert!(
            body.contains(
                "portwatch_listeners{port=\"51031\",proto=\"tcp\",family=\"ipv4\",exe=\"\"} 1"
            ),
            "{body}"
        );
        assert!(
            body.contains("portwatch_events_lost_total{cpu=\"1\"} 4"),
            "{body}"
        );
        assert!(
            body.contains("portwatch_program_runs_skipped_total{program=\"accept\"} 2"),
            "{body}"
        );
        assert!(body.contains("portwatch_build_info{version="), "{body}");
        e.kind = EventKind::Close;
        m.observe(&e);
        assert!(!text(&registry).contains("portwatch_listeners{"));
    }
}
