//! A history database of many connections for `cargo xtask bench`, made through
//! the recorder's own writer (the same rows, indexes and transactions as
//! `portwatch record`), without waiting for that much real traffic.
//!
//! `histgen --db PATH --connections N [--days D]`: N connections spread over D days
//! (default 7), each a client socket of one of 200 processes to one of 5,000
//! remote peers, and every tenth also served locally (listener, accepting worker,
//! its server socket); lives from 1 ms to 10 minutes. Prints one JSON object:
//! connections, sockets, seconds.
use std::{
    net::{IpAddr, Ipv4Addr},
    sync::{mpsc, Arc},
    time::{Duration, Instant},
};

use chrono::{DateTime, Utc};
use portwatch::{
    event::{
        classify::{endpoint, EphemeralRange},
        model::{ConnEvent, EventKind, Family, Owner, ProcessDetails, Role, TcpState, Transport},
    },
    history::{
        recorder::{Dropped, Message},
        retention::Retention,
        schema,
        writer::{RunRow, Writer},
    },
};

/// A small deterministic generator (xorshift): the same database every time.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn process(i: u64) -> (Owner, Arc<ProcessDetails>) {
    let exe = format!("/usr/bin/service-{}", i % 40);
    (
        Owner {
            pid: 1000 + i as u32,
            tid: 1000 + i as u32,
            uid: 1000 + (i % 5) as u32,
            comm: format!("service-{}", i % 40),
            ppid: Some(1),
            cgroup_id: None,
            start_ns: Some(i * 1_000_000),
        },
        Arc::new(ProcessDetails {
            exe: Some(Arc::from(exe.as_str())),
            cmdline: Some(Arc::from(vec![exe, "--serve".to_string()])),
            user: Some(format!("user{}", i % 5)),
            cgroup: Some(format!("/system.slice/service-{}.service", i % 40)),
            container_id: None,
            missing: None,
        }),
    )
}

/// One socket of a connection: whose, its ends, when it opened, how long it lived.
struct Life {
    role: Role,
    who: usize,
    local: (IpAddr, u16),
    remote: (IpAddr, u16),
    opened: DateTime<Utc>,
    life: Duration,
}

struct Gen {
    rng: Rng,
    range: EphemeralRange,
    processes: Vec<(Owner, Arc<ProcessDetails>)>,
    next_sock: u64,
}

impl Gen {
    #[allow(clippy::too_many_arguments)]
    fn event(
        &mut self,
        kind: EventKind,
        role: Role,
        time: DateTime<Utc>,
        who: usize,
        local: (IpAddr, u16),
        remote: (IpAddr, u16),
        sock_id: u64,
        duration: Option<Duration>,
    ) -> Message {
        let (owner, details) = &self.processes[who];
        Message::Event(Box::new(ConnEvent {
            time,
            kind,
            role,
            proto: Transport::Tcp,
            family: Family::Ipv4,
            owner: Some(owner.clone()),
            pid_exact: true,
            local: endpoint(local.0, local.1, self.range, Transport::Tcp),
            remote: endpoint(remote.0, remote.1, self.range, Transport::Tcp),
            state: TcpState::Established,
            old_state: TcpState::SynSent,
            sock_id,
            duration,
            error: None,
            process: Some(details.clone()),
            notes: Vec::new(),
            lifetime: None,
            inferred: false,
            netns: None,
            cookie_id: false,
        }))
    }

    /// A connection's socket opening (connect, or accept for a server) and closing.
    fn lifetime(&mut self, l: &Life) -> [Message; 2] {
        let sock = self.sock();
        let (kind, handshake) = match l.role {
            Role::Client => (EventKind::Connect, Some(Duration::from_micros(300))),
            _ => (EventKind::Accept, None),
        };
        let closed = l.opened + chrono::Duration::from_std(l.life).unwrap_or_default();
        [
            self.event(
                kind, l.role, l.opened, l.who, l.local, l.remote, sock, handshake,
            ),
            self.event(
                EventKind::Close,
                l.role,
                closed,
                l.who,
                l.local,
                l.remote,
                sock,
                Some(l.life),
            ),
        ]
    }

    fn sock(&mut self) -> u64 {
        self.next_sock += 1;
        self.next_sock
    }
}

fn arg(args: &[String], name: &str) -> Option<String> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let db = arg(&args, "--db").ok_or("--db PATH is required")?;
    let connections: u64 = arg(&args, "--connections")
        .map(|n| n.parse())
        .transpose()?
        .unwrap_or(1_000_000);
    let days: u64 = arg(&args, "--days")
        .map(|n| n.parse())
        .transpose()?
        .unwrap_or(7);
    let path = std::path::PathBuf::from(&db);
    let conn = schema::open_for_recording(&path)?;
    let (queue, events) = mpsc::sync_channel(65_536);
    let writer = Writer::start(
        conn,
        &path,
        &RunRow {
            host: "histgen",
            kernel: "synthetic",
            mode: "synthetic",
        },
        Dropped::default(),
        Retention {
            retain: Duration::from_secs(3650 * 86_400),
            max_size: u64::MAX,
        },
    )?;
    let t0 = Instant::now();
    let writing = std::thread::spawn(move || writer.run(events));
    let mut g = Gen {
        rng: Rng(0x9e37_79b9_7f4a_7c15),
        range: EphemeralRange::LINUX_DEFAULT,
        processes: (0..200).map(process).collect(),
        next_sock: 0,
    };
    let span_ns = days * 86_400 * 1_000_000_000;
    let start = Utc::now() - chrono::Duration::nanoseconds(span_ns as i64);
    let local = IpAddr::V4(Ipv4Addr::new(10, 1, 0, 1));
    let loopback = IpAddr::V4(Ipv4Addr::LOCALHOST);
    // Listeners of the first 20 processes, open the whole time.
    for who in 0..20 {
        let sock = g.sock();
        let m = g.event(
            EventKind::Listen,
            Role::Listener,
            start,
            who,
            (loopback, 8000 + who as u16),
            (IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0),
            sock,
            None,
        );
        queue.send(m)?;
    }
    let mut sockets = 20;
    // Connections in time order; each closes before the next few open.
    let step = span_ns / connections.max(1);
    for i in 0..connections {
        let opened = start + chrono::Duration::nanoseconds((i * step) as i64);
        let life = Duration::from_millis(1 + g.rng.below(600_000));
        let who = 20 + g.rng.below(180) as usize;
        let peer = g.rng.below(5_000) as u32;
        let remote_ip = IpAddr::V4(Ipv4Addr::from(0x0a00_0000 | peer));
        let remote_port = [443, 80, 5432, 6379, 53][(peer % 5) as usize];
        let lport = 32768 + (i % 28_000) as u16;
        let client = Life {
            role: Role::Client,
            who,
            local: (local, lport),
            remote: (remote_ip, remote_port),
            opened,
            life,
        };
        for m in g.lifetime(&client) {
            queue.send(m)?;
        }
        sockets += 1;
        if i % 10 == 0 {
            // Served here too: a worker of a listener accepts a loopback client.
            let server = (i / 10 % 20) as usize;
            let served = Life {
                role: Role::Server,
                who: server,
                local: (loopback, 8000 + server as u16),
                remote: (loopback, lport),
                opened,
                life,
            };
            for m in g.lifetime(&served) {
                queue.send(m)?;
            }
            sockets += 1;
        }
    }
    queue.send(Message::Stop {
        lost: 0,
        skipped: 0,
    })?;
    drop(queue);
    let totals = writing.join().map_err(|_| "the writer panicked")??;
    println!(
        "{}",
        serde_json::json!({"connections": connections, "sockets": totals.sockets,
                           "expected_sockets": sockets, "seconds": t0.elapsed().as_secs_f64()})
    );
    Ok(())
}
