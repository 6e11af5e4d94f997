//! Command-line arguments.
use clap::{error::ErrorKind, CommandFactory, Parser, Subcommand};
use portwatch_common::{FILTER_MAX, RINGBUF_DEFAULT_BYTES, WAKEUP_EVENTS_DEFAULT};

mod baseline;
mod history;
#[cfg(test)]
mod tests;
mod values;

pub use baseline::{BaselineAction, BaselineArgs};
pub use history::{QueryArgs, RecordArgs};
use values::{parse_cgroup, parse_container, parse_ringbuf_size, parse_uid, port_spec};
pub use values::{ArgError, PortSpec};

use crate::{
    event::{
        filter::Filter,
        model::{Family, PortClass, Role},
        services::Transport,
    },
    kernel::{
        plan::{AttachChoice, Floor},
        store::StoreChoice,
    },
    output::{ColorChoice, Format},
};

/// Live TCP connection tracing from the kernel: which process opened which port,
/// in which role, and what kind of port it is.
#[derive(Debug, Parser)]
#[command(name = "portwatch", version)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,

    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Table, global = true)]
    pub format: Format,

    /// How to attach: fentry/fexit, kprobes, tracepoints only, or the first of
    /// those that this kernel allows.
    #[arg(long, value_enum, default_value_t = AttachChoice::Auto, global = true)]
    pub attach: AttachChoice,

    /// Ring buffer size in bytes: a power of two, at least 4096.
    #[arg(long, default_value_t = RINGBUF_DEFAULT_BYTES, value_parser = parse_ringbuf_size, global = true)]
    pub ringbuf_size: u32,

    /// Wake the reader once this many events wait in the ring buffer (fewer wakeups
    /// under load); a lone event still shows within 50 ms. 1 wakes on every event.
    #[arg(long, default_value_t = WAKEUP_EVENTS_DEFAULT, value_parser = clap::value_parser!(u32).range(1..=4096), global = true)]
    pub wakeup_events: u32,

    /// Every SECONDS, report counters (events received, printed, lost; kernel map
    /// entries; processes cached; RSS): a `stats` record in JSON, a stderr line
    /// with the table.
    #[arg(long, value_name = "SECONDS", value_parser = clap::value_parser!(u64).range(1..), global = true)]
    pub stats: Option<u64>,

    /// Serve Prometheus metrics on ADDR:PORT (`/metrics`, text format): events
    /// by kind, role and family, losses, listeners, occupancy.
    #[arg(long, value_name = "ADDR:PORT", global = true)]
    pub metrics: Option<std::net::SocketAddr>,

    /// Send every event (and loss report and drift) as an OpenTelemetry log
    /// record over OTLP/HTTP (protobuf) to the collector at URL
    /// (`http://collector:4318`; `/v1/logs` is appended). Default: the
    /// OTEL_EXPORTER_OTLP_ENDPOINT variable; OTEL_EXPORTER_OTLP_LOGS_ENDPOINT,
    /// _HEADERS, _TIMEOUT and OTEL_RESOURCE_ATTRIBUTES are read as the
    /// specification says.
    #[arg(
        long,
        value_name = "URL",
        env = "OTEL_EXPORTER_OTLP_ENDPOINT",
        global = true
    )]
    pub otlp_endpoint: Option<String>,

    /// Records the OTLP exporter holds while the collector is slow or down
    /// (spooled and in flight); beyond, new records are dropped and counted.
    #[arg(long, value_name = "RECORDS", default_value_t = 65536, value_parser = clap::value_parser!(u64).range(1..=16_777_216), global = true)]
    pub otlp_buffer: u64,

    /// Add to each table row the sentence the ports notes would write for it.
    #[arg(long, global = true)]
    pub explain: bool,

    /// Tracepoint mode: do not hook accept (neither the BPF LSM hook nor, where
    /// the kernel refuses that, the accept syscalls). Accepted connections are
    /// then attributed to the listener's owner (pid_exact: false), but no syscall
    /// tracepoint is enabled: while one is, every syscall of every process on the
    /// host takes the kernel's slower path. fentry and kprobe modes are exact
    /// without that cost and ignore this.
    #[arg(long, global = true)]
    pub inexact_accept: bool,

    /// Where the kernel side keeps each socket's owner: socket storage (no cap,
    /// Linux 5.12+ with BTF), an LRU map of --max-sockets (the fallback), or the
    /// first the kernel allows.
    #[arg(long, value_enum, default_value_t = StoreChoice::Auto, global = true)]
    pub socket_store: StoreChoice,

    /// Cap of the owner map in use: the LRU map (default 65536, preallocated), or
    /// with socket storage in kprobe and tracepoint modes the accepted connections
    /// waiting to move into it (default 262144, allocated as used).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=16_777_216), global = true)]
    pub max_sockets: Option<u32>,

    /// For `cargo xtask bench`: attach one empty program on the BTF or the classic
    /// tracepoint instead of portwatch's (prints no events).
    #[arg(long, value_enum, hide = true)]
    pub bench_floor: Option<Floor>,

    /// Check every event against this baseline (`portwatch baseline learn`) and
    /// report departures as drift records; expected listeners that are gone are
    /// looked for every --baseline-interval.
    #[arg(long, value_name = "FILE", global = true)]
    pub baseline: Option<std::path::PathBuf>,

    /// With --baseline: how often to look for expected listeners that are gone.
    #[arg(long, value_name = "SECONDS", default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..), global = true)]
    pub baseline_interval: u64,

    /// Do not print the TCP sockets that already exist when tracing starts.
    #[arg(long, global = true)]
    pub no_snapshot: bool,

    /// Colors in the table: only on a terminal and without NO_COLOR (auto), always, never.
    #[arg(long, value_enum, default_value_t = ColorChoice::Auto, global = true)]
    pub color: ColorChoice,

    #[command(flatten)]
    pub filters: FilterArgs,
}

/// Which events to show. --pid, --uid, --port, -4 and -6 are applied in the
/// kernel (filtered-out traffic never reaches portwatch); the others here.
#[derive(Debug, Default, clap::Args)]
pub struct FilterArgs {
    /// Only this process (repeatable, up to 8).
    #[arg(long = "pid", value_name = "PID", global = true)]
    pub pids: Vec<u32>,
    /// Only processes of this user, by uid or name (repeatable, up to 8).
    #[arg(long = "uid", value_name = "UID|USER", value_parser = parse_uid, global = true)]
    pub uids: Vec<u32>,
    /// Only connections with this port at either end (repeatable, up to 8).
    #[arg(long = "port", value_name = "PORT", value_parser = clap::value_parser!(u16).range(1..), global = true)]
    pub ports: Vec<u16>,
    /// Only IPv4 (IPv4-mapped IPv6 counts as IPv4).
    #[arg(short = '4', conflicts_with = "ipv6", global = true)]
    pub ipv4: bool,
    /// Only IPv6.
    #[arg(short = '6', global = true)]
    pub ipv6: bool,
    /// Only this protocol (repeatable; default both): the other's programs are
    /// not even attached.
    #[arg(long = "proto", value_enum, global = true)]
    pub protos: Vec<Transport>,
    /// Only processes with this exact name (repeatable).
    #[arg(long = "comm", value_name = "NAME", global = true)]
    pub comms: Vec<String>,
    /// Only this role (repeatable).
    #[arg(long = "role", value_enum, global = true)]
    pub roles: Vec<Role>,
    /// Only ports of this IANA class, at either end (repeatable).
    #[arg(long = "class", value_enum, global = true)]
    pub classes: Vec<PortClass>,
    /// Only processes in this container (an id or a prefix of one; repeatable).
    #[arg(long = "container", value_name = "ID", value_parser = parse_container, global = true)]
    pub containers: Vec<String>,
    /// Only processes in this cgroup v2 path or below it (repeatable).
    #[arg(long = "cgroup", value_name = "PATH", value_parser = parse_cgroup, global = true)]
    pub cgroups: Vec<String>,
}

#[derive(Debug, PartialEq, Eq, Subcommand)]
pub enum Command {
    /// Check what this host allows: kernel, BTF, tracefs, privileges, ring buffer,
    /// and whether each attach mode loads here (and why not).
    Doctor,
    /// Explain ports: IANA class, this host's ephemeral range, service, usual
    /// software, and the role such a port normally plays. No root needed.
    Explain {
        /// Port numbers, each optionally with its transport: `53/udp`, `22/tcp`.
        #[arg(id = "port_specs", required = true, value_name = "PORT[/tcp|/udp]", value_parser = port_spec)]
        ports: Vec<PortSpec>,
        /// Ports given without a transport are UDP ports (default: TCP).
        #[arg(long)]
        udp: bool,
    },
    /// Print the TCP sockets that exist now (listening and established, with their
    /// processes), classified, and exit.
    Snapshot,
    /// Trace as live mode does and keep every socket's lifetime, with its owner,
    /// in a SQLite database (for `portwatch query`). Prints only stderr lines
    /// unless --print.
    Record(RecordArgs),
    /// Answer from a recorded database: the sockets open at an instant, or those
    /// of a time window, or a summary per process. Needs only read access to the
    /// file. --pid, --uid, --port, --comm, --role, --container, --class, --cgroup,
    /// -4 and -6 apply too.
    Query(QueryArgs),
    /// Learn which processes are expected to hold which ports, or check the host
    /// against such a baseline.
    Baseline(BaselineArgs),
}

impl Cli {
    /// The filters, checked; a usage error (exit 2) when a kernel-side list is
    /// longer than the kernel side takes.
    pub fn filter(&self) -> Result<Filter, clap::Error> {
        let f = &self.filters;
        for (name, len) in [
            ("--pid", f.pids.len()),
            ("--uid", f.uids.len()),
            ("--port", f.ports.len()),
        ] {
            if len > FILTER_MAX {
                return Err(Cli::command().error(
                    ErrorKind::TooManyValues,
                    format!("{name} takes at most {FILTER_MAX} values, got {len}"),
                ));
            }
        }
        Ok(Filter {
            pids: f.pids.clone(),
            uids: f.uids.clone(),
            ports: f.ports.clone(),
            family: match (f.ipv4, f.ipv6) {
                (true, _) => Some(Family::Ipv4),
                (_, true) => Some(Family::Ipv6),
                _ => None,
            },
            protos: f.protos.clone(),
            comms: f.comms.clone(),
            roles: f.roles.clone(),
            classes: f.classes.clone(),
            containers: f.containers.clone(),
            cgroups: f.cgroups.clone(),
        })
    }
}
