//! Starting the helper processes (`crate::helper`, this binary re-executed) and
//! reading their reports as typed ground truth: who they are ([`Proc`]) and which
//! end of which connection they hold ([`End`]).
use std::{
    io::{BufRead, BufReader, Write},
    net::{IpAddr, SocketAddr},
    os::unix::process::CommandExt,
    path::Path,
    process::{Child, ChildStdout, Command, Stdio},
};

use anyhow::{bail, Context, Result};

/// 127.0.0.1 and ::1, where the helpers meet.
pub const LOOPBACK: IpAddr = IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);
pub const LOOPBACK6: IpAddr = IpAddr::V6(std::net::Ipv6Addr::LOCALHOST);

/// A process as it reported itself: the truth for pid, tid (the helpers are
/// single-threaded), uid and comm.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Proc {
    pub pid: u32,
    pub uid: u32,
    pub comm: String,
}

/// One end of a connection, or a listener, and the process that holds it.
#[derive(Debug, Clone)]
pub struct End {
    pub proc: Proc,
    pub addr: IpAddr,
    pub port: u16,
}

impl End {
    /// The same address and port, held by another process.
    pub fn held_by(&self, proc: &Proc) -> End {
        End {
            proc: proc.clone(),
            ..self.clone()
        }
    }

    pub fn socket_addr(&self) -> SocketAddr {
        SocketAddr::new(self.addr, self.port)
    }
}

/// How long a helper keeps its connections before closing them.
#[derive(Debug, Clone, Copy)]
pub enum Hold {
    Ms(u64),
    /// Until the helper is killed.
    UntilKilled,
}

impl Hold {
    pub(super) fn arg(self) -> String {
        match self {
            Hold::Ms(ms) => ms.to_string(),
            Hold::UntilKilled => "pause".into(),
        }
    }
}

/// One helper process and its report lines.
pub struct Helper {
    child: Child,
    lines: std::io::Lines<BufReader<ChildStdout>>,
    args: Vec<String>,
}

impl Helper {
    /// `integration-test helper ARGS`, with `env`, stdin piped when `stdin`.
    pub(super) fn spawn(args: Vec<String>, env: &[(&str, &str)], stdin: bool) -> Result<Helper> {
        Helper::spawn_as(&As::default(), args, env, stdin)
    }

    /// The same, run as `who` says.
    fn spawn_as(who: &As, args: Vec<String>, env: &[(&str, &str)], stdin: bool) -> Result<Helper> {
        let exe = who.exe.as_deref().unwrap_or(Path::new("/proc/self/exe"));
        let mut command = Command::new(exe);
        if let Some(uid) = who.uid {
            command.uid(uid).gid(uid);
        }
        let mut child = command
            .arg("helper")
            .args(&args)
            // Its own process group, so `kill` reaches what it forks too.
            .process_group(0)
            .envs(env.iter().copied())
            .stdin(if stdin { Stdio::piped() } else { Stdio::null() })
            .stdout(Stdio::piped())
            .spawn()
            .context("starting a helper")?;
        let lines = BufReader::new(child.stdout.take().context("no stdout pipe")?).lines();
        Ok(Helper { child, lines, args })
    }

    /// The command line the helper was started with, as /proc shows it.
    pub fn cmdline(&self) -> Vec<String> {
        ["/proc/self/exe", "helper"]
            .into_iter()
            .map(str::to_string)
            .chain(self.args.iter().cloned())
            .collect()
    }

    /// The next report line, which must be `WORD` and `count` numbers.
    pub(super) fn report(&mut self, word: &str, count: usize) -> Result<Vec<u32>> {
        let line = self
            .lines
            .next()
            .with_context(|| format!("helper ended before saying `{word}`"))??;
        let mut parts = line.split_whitespace();
        if parts.next() != Some(word) {
            bail!("helper said `{line}`, expected `{word} ...`");
        }
        let numbers = parts
            .map(|p| {
                p.parse()
                    .with_context(|| format!("in helper line `{line}`"))
            })
            .collect::<Result<Vec<u32>>>()?;
        if numbers.len() != count {
            bail!("helper said `{line}`, expected `{word}` and {count} numbers");
        }
        Ok(numbers)
    }

    /// `WORD PID UID PORT`: the reporting process, named `comm`, and its port.
    pub(super) fn report_end(&mut self, word: &str, comm: &str, addr: IpAddr) -> Result<End> {
        Ok(end(&self.report(word, 3)?, comm, addr))
    }

    /// The next report line, which must be `WORD TEXT`: the text.
    pub(super) fn report_text(&mut self, word: &str) -> Result<String> {
        let line = self
            .lines
            .next()
            .with_context(|| format!("helper ended before saying `{word}`"))??;
        match line.split_once(' ') {
            Some((w, text)) if w == word => Ok(text.to_string()),
            _ => bail!("helper said `{line}`, expected `{word} ...`"),
        }
    }

    /// Send one line to the helper's stdin.
    pub fn send(&mut self, line: &str) -> Result<()> {
        let stdin = self.child.stdin.as_mut().context("helper has no stdin")?;
        writeln!(stdin, "{line}")?;
        Ok(())
    }

    pub fn close_stdin(&mut self) {
        drop(self.child.stdin.take());
    }

    /// Kill the helper and every process it forked (its process group).
    pub fn kill(mut self) {
        let group = nix::unistd::Pid::from_raw(-(self.child.id() as i32));
        let _ = nix::sys::signal::kill(group, nix::sys::signal::Signal::SIGKILL);
        let _ = self.child.wait();
        // The forked workers die on their own schedule, and until they have, they
        // hold what they inherited (a listener a restarted service binds again).
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while group_alive(self.child.id()) && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
    }

    /// Wait for the helper's exit, which must be a success.
    pub fn finish(mut self) -> Result<()> {
        let status = self.child.wait()?;
        if !status.success() {
            bail!("helper exited with {status}");
        }
        Ok(())
    }
}

/// Whether a process of group `pgid` is still running (a zombie has closed its files).
fn group_alive(pgid: u32) -> bool {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return false;
    };
    dir.flatten().any(|entry| {
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            return false;
        };
        // After the command name's closing parenthesis: state, ppid, pgrp.
        let Some((_, rest)) = stat.rsplit_once(')') else {
            return false;
        };
        let fields: Vec<&str> = rest.split_whitespace().collect();
        fields.len() > 2 && fields[0] != "Z" && fields[2] == pgid.to_string()
    })
}

pub(super) fn end(numbers: &[u32], comm: &str, addr: IpAddr) -> End {
    End {
        proc: Proc {
            pid: numbers[0],
            uid: numbers[1],
            comm: comm.to_string(),
        },
        addr,
        port: numbers[2] as u16,
    }
}

/// Which executable a helper runs as (a copy of this test's binary, to be
/// another program) and which user; by default this binary, as the test's user.
#[derive(Debug, Clone, Default)]
pub struct As {
    pub exe: Option<std::path::PathBuf>,
    /// uid (and gid) to run as.
    pub uid: Option<u32>,
}

/// What a server helper is asked to do.
pub struct ServerSpec<'a> {
    /// The executable and user it runs as.
    pub who: As,
    pub addr: IpAddr,
    /// Ports to try in order, comma-separated; 0 is any.
    pub ports: &'a str,
    pub listener: &'a str,
    /// The name of the forked child that accepts.
    pub acceptor: &'a str,
    pub connections: usize,
    pub hold: Hold,
}

impl ServerSpec<'_> {
    /// Any port, `pw-listener` and `pw-acceptor`, one connection held 50 ms.
    pub fn new(addr: IpAddr) -> ServerSpec<'static> {
        ServerSpec {
            who: As::default(),
            addr,
            ports: "0",
            listener: "pw-listener",
            acceptor: "pw-acceptor",
            connections: 1,
            hold: Hold::Ms(50),
        }
    }
}

/// A listener whose forked child accepts and holds connections.
pub struct Server {
    helper: Helper,
    /// The listening socket and its owner, as the listener reported them.
    pub listener: End,
    acceptor: String,
    /// Connections whose `accepted` report is still to be read.
    unread_accepts: usize,
}

impl Server {
    pub fn spawn(spec: &ServerSpec) -> Result<Server> {
        let args = vec![
            "server".into(),
            spec.addr.to_string(),
            spec.ports.into(),
            spec.listener.into(),
            spec.acceptor.into(),
            spec.connections.to_string(),
            spec.hold.arg(),
        ];
        let mut helper = Helper::spawn_as(&spec.who, args, &[], false)?;
        let listener = helper.report_end("listening", spec.listener, spec.addr)?;
        Ok(Server {
            helper,
            listener,
            acceptor: spec.acceptor.to_string(),
            unread_accepts: spec.connections,
        })
    }

    /// The next connection accepted: the acceptor, and the client's port.
    pub fn accepted(&mut self) -> Result<(Proc, u16)> {
        let addr = self.listener.addr;
        let peer = self.helper.report_end("accepted", &self.acceptor, addr)?;
        self.unread_accepts = self.unread_accepts.saturating_sub(1);
        Ok((peer.proc, peer.port))
    }

    /// Wait for the remaining `accepted` reports, the listener's `closed` report
    /// and its exit.
    pub fn finish(mut self) -> Result<()> {
        while self.unread_accepts > 0 {
            self.accepted()?;
        }
        self.helper.report("closed", 1)?;
        self.helper.finish()
    }

    pub fn kill(self) {
        self.helper.kill()
    }
}

/// A client helper: connects, reports, holds, closes.
pub struct Client {
    helper: Helper,
    addr: IpAddr,
    name: String,
}

impl Client {
    /// Connect to `server` as `name`.
    pub fn spawn(server: SocketAddr, name: &str, hold: Hold) -> Result<Client> {
        Client::spawn_in(server, name, hold, None)
    }

    /// The same, first moving into the cgroup at `cgroup` when given.
    pub fn spawn_in(
        server: SocketAddr,
        name: &str,
        hold: Hold,
        cgroup: Option<&Path>,
    ) -> Result<Client> {
        let cgroup = cgroup.map(|d| d.to_string_lossy().into_owned());
        let env: Vec<(&str, &str)> = cgroup.iter().map(|d| ("PW_CGROUP", d.as_str())).collect();
        Client::start(server, name, hold, &env, false)
    }

    /// A client that connects only once [`Client::go`] is called; its pid.
    pub fn spawn_waiting(server: SocketAddr, name: &str, hold: Hold) -> Result<(Client, u32)> {
        let mut client = Client::start(server, name, hold, &[("PW_WAIT", "1")], true)?;
        let pid = client.helper.report("ready", 1)?[0];
        Ok((client, pid))
    }

    fn start(
        server: SocketAddr,
        name: &str,
        hold: Hold,
        env: &[(&str, &str)],
        stdin: bool,
    ) -> Result<Client> {
        let args = vec![
            "client".into(),
            server.ip().to_string(),
            server.port().to_string(),
            name.into(),
            hold.arg(),
        ];
        Ok(Client {
            helper: Helper::spawn(args, env, stdin)?,
            addr: server.ip(),
            name: name.to_string(),
        })
    }

    pub fn go(&mut self) -> Result<()> {
        self.helper.send("go")
    }

    /// The client's end of the connection, once connected.
    pub fn connected(&mut self) -> Result<End> {
        self.helper.report_end("connected", &self.name, self.addr)
    }

    pub fn cmdline(&self) -> Vec<String> {
        self.helper.cmdline()
    }

    pub fn finish(self) -> Result<()> {
        self.helper.finish()
    }

    pub fn kill(self) {
        self.helper.kill()
    }
}

/// A connect from a bound port to `target` that fails: `refused` (nothing
/// listens there) or `timeout` (SYNs dropped, one retransmission). The client's
/// end and the errno its connect() returned.
pub fn failing_connect(how: &str, target: SocketAddr, name: &str) -> Result<(End, i32)> {
    let word = match how {
        "refused" => "refused",
        "timeout" => "timedout",
        other => bail!("no helper makes a connect fail by {other}"),
    };
    let args = vec![
        how.into(),
        target.ip().to_string(),
        target.port().to_string(),
        name.into(),
    ];
    let mut helper = Helper::spawn(args, &[], false)?;
    let numbers = helper.report(word, 4)?;
    helper.finish()?;
    Ok((end(&numbers, name, target.ip()), numbers[3] as i32))
}

/// A listener with a full backlog of one never-accepted connection of its own:
/// the kernel drops every further SYN. Runs until [`Blackhole::finish`].
pub struct Blackhole {
    helper: Helper,
    pub listener: End,
    /// The local port of the connection that fills the backlog.
    pub filler_port: u16,
}

impl Blackhole {
    pub fn spawn(addr: IpAddr, name: &str) -> Result<Blackhole> {
        let args = vec!["blackhole".into(), addr.to_string(), name.into()];
        let mut helper = Helper::spawn(args, &[], true)?;
        let numbers = helper.report("listening", 4)?;
        Ok(Blackhole {
            listener: end(&numbers, name, addr),
            filler_port: numbers[3] as u16,
            helper,
        })
    }

    pub fn finish(mut self) -> Result<()> {
        self.helper.close_stdin();
        self.helper.finish()
    }
}

/// A listener on 0.0.0.0:`port` in a network namespace of its own, held for
/// `hold_ms`: the helper, its pid and its namespace's inode number.
pub fn netns_listener(port: u16, hold_ms: u64) -> Result<(Helper, u32, u32)> {
    let args = vec![
        "netns-listener".into(),
        port.to_string(),
        hold_ms.to_string(),
    ];
    let mut helper = Helper::spawn(args, &[], false)?;
    let said = helper.report("listening", 2)?;
    Ok((helper, said[0], said[1]))
}
