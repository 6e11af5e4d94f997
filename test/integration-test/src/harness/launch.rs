//! The one launcher of the portwatch binary under test. A [`Launch`] is run either
//! to completion ([`Launch::run`]: doctor, snapshot, usage errors, refusals), or
//! started as a tracer ([`Launch::start`]) that is ready once its attached line
//! came, and stopped with a signal. stdout goes to a reader the caller chooses;
//! stderr is always collected, and read with [`super::stderr`].
use std::{
    io::{BufRead, BufReader},
    os::unix::process::CommandExt,
    process::{Child, ChildStdout, Command, ExitStatus, Stdio},
    sync::{mpsc, Arc, Mutex},
    thread,
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};
use nix::sys::signal::Signal;

use super::stderr::{Attached, Line, Stderr};

/// How long portwatch may take to load and attach (an emulated guest is slow:
/// Linux 6.1's verifier under QEMU's TCG takes about a minute for every
/// program of mode tracepoint).
const ATTACH_TIMEOUT: Duration = Duration::from_secs(180);
/// How long it may take to exit after a signal.
const EXIT_TIMEOUT: Duration = Duration::from_secs(10);

/// Arguments added to every tracing launch of this run (`--socket-store lru` for
/// the suite on the fallback path).
static TRACE_ARGS: std::sync::OnceLock<Vec<String>> = std::sync::OnceLock::new();

/// Add `args` to every [`Launch::trace`] from now on; once per run.
pub fn add_to_every_trace(args: Vec<String>) {
    let _ = TRACE_ARGS.set(args);
}

/// Whether every tracing launch of this run is on the LRU fallback.
pub fn on_lru_fallback() -> bool {
    TRACE_ARGS.get().is_some_and(|a| {
        a.windows(2)
            .any(|w| w[0] == "--socket-store" && w[1] == "lru")
    })
}

/// A portwatch command line, not yet started.
pub struct Launch {
    cmd: Command,
    /// The mode the attached line must name.
    mode: Option<String>,
}

impl Launch {
    /// portwatch with the arguments given later (`doctor`, `snapshot`, ...).
    pub fn new(portwatch: &str) -> Launch {
        let mut cmd = Command::new(portwatch);
        cmd.stdin(Stdio::null());
        Launch { cmd, mode: None }
    }

    /// portwatch tracing with `--attach MODE`; its attached line must name MODE
    /// (see [`Launch::expect_mode`] for `auto`).
    pub fn trace(portwatch: &str, mode: &str) -> Launch {
        let mut launch = Launch::new(portwatch)
            .args(["--attach", mode])
            .args(TRACE_ARGS.get().into_iter().flatten());
        launch.mode = Some(mode.to_string());
        launch
    }

    /// portwatch tracing in `mode`, JSON, no snapshot, only port `port` (filtered
    /// in the kernel): the heavy runs' way to see their own load alone.
    pub fn json_on_port(portwatch: &str, mode: &str, port: u16) -> Launch {
        Launch::trace(portwatch, mode).args([
            "--format",
            "json",
            "--no-snapshot",
            "--port",
            &port.to_string(),
        ])
    }

    /// The mode the attached line must name, when it is not the one asked for.
    pub fn expect_mode(mut self, mode: &str) -> Launch {
        self.mode = Some(mode.to_string());
        self
    }

    pub fn arg(mut self, arg: impl AsRef<std::ffi::OsStr>) -> Launch {
        self.cmd.arg(arg);
        self
    }

    pub fn args<S: AsRef<std::ffi::OsStr>>(mut self, args: impl IntoIterator<Item = S>) -> Launch {
        self.cmd.args(args);
        self
    }

    /// Set an environment variable of portwatch's.
    pub fn env(mut self, key: &str, value: &str) -> Launch {
        self.cmd.env(key, value);
        self
    }

    /// Run as this user and group instead of root.
    pub fn run_as(mut self, uid: u32, gid: u32) -> Launch {
        self.cmd.uid(uid).gid(gid);
        self
    }

    /// Run `setup` in the child between fork and exec.
    ///
    /// # Safety
    /// As [`CommandExt::pre_exec`]: `setup` may only make async-signal-safe calls.
    pub unsafe fn before_exec(
        mut self,
        setup: impl FnMut() -> std::io::Result<()> + Send + Sync + 'static,
    ) -> Launch {
        // SAFETY: passed on to the caller.
        unsafe { self.cmd.pre_exec(setup) };
        self
    }

    /// Run to completion.
    pub fn run(mut self) -> Result<Finished> {
        let out = self
            .cmd
            .output()
            .with_context(|| format!("running {:?}", self.cmd))?;
        Ok(Finished {
            status: out.status,
            stdout: out.stdout,
            stderr: Stderr::from_bytes(&out.stderr),
        })
    }

    /// Start, hand stdout to `read_stdout` (on a thread of its own; what it returns
    /// comes back at [`Running::stop`]), and wait for the attached line.
    pub fn start<T: Send + 'static>(
        mut self,
        read_stdout: impl FnOnce(ChildStdout) -> T + Send + 'static,
    ) -> Result<Running<T>> {
        let mut child = self
            .cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("starting {:?}", self.cmd))?;
        let stdout = child.stdout.take().context("no stdout pipe")?;
        let stdout_reader = thread::spawn(move || read_stdout(stdout));
        let stderr = StderrReader::start(&mut child)?;
        let mut running = Running {
            child,
            attached: None,
            stdout_reader: Some(stdout_reader),
            stderr_reader: Some(stderr.thread),
            stderr: stderr.lines,
        };
        running.attached = Some(running.wait_attached(stderr.attached, self.mode.as_deref())?);
        Ok(running)
    }
}

/// A stdout reader for when what portwatch prints does not matter.
pub fn discard(mut stdout: ChildStdout) {
    let _ = std::io::copy(&mut stdout, &mut std::io::sink());
}

/// A finished run.
pub struct Finished {
    pub status: ExitStatus,
    pub stdout: Vec<u8>,
    pub stderr: Stderr,
}

/// A stopped tracer: its exit status, what its stdout reader returned, its stderr.
pub struct Stopped<T> {
    pub status: ExitStatus,
    pub stdout: T,
    pub stderr: Stderr,
}

/// What the stderr reader sends: the attached line, or the end of stderr.
type AttachedOrEnd = Option<Attached>;

/// A thread collecting stderr lines.
struct StderrReader {
    lines: Arc<Mutex<Vec<String>>>,
    thread: thread::JoinHandle<()>,
    /// The attached line, or the end of stderr before it.
    attached: mpsc::Receiver<AttachedOrEnd>,
}

impl StderrReader {
    fn start(child: &mut Child) -> Result<StderrReader> {
        let pipe = child.stderr.take().context("no stderr pipe")?;
        let lines = Arc::new(Mutex::new(Vec::new()));
        let (tx, attached) = mpsc::channel();
        let collected = lines.clone();
        let thread = thread::spawn(move || {
            for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                if let Ok(Line::Attached(attached)) = Line::parse(&line) {
                    let _ = tx.send(Some(attached));
                }
                collected.lock().unwrap().push(line);
            }
            let _ = tx.send(None);
        });
        Ok(StderrReader {
            lines,
            thread,
            attached,
        })
    }
}

/// A started portwatch. Dropping it kills the process.
pub struct Running<T> {
    child: Child,
    attached: Option<Attached>,
    stdout_reader: Option<thread::JoinHandle<T>>,
    stderr_reader: Option<thread::JoinHandle<()>>,
    stderr: Arc<Mutex<Vec<String>>>,
}

impl<T> Running<T> {
    fn wait_attached(
        &mut self,
        rx: mpsc::Receiver<AttachedOrEnd>,
        mode: Option<&str>,
    ) -> Result<Attached> {
        let attached = match rx.recv_timeout(ATTACH_TIMEOUT) {
            Ok(Some(attached)) => attached,
            Ok(None) => {
                let status = self.wait_exit(EXIT_TIMEOUT, || {})?;
                bail!(
                    "portwatch ended ({status:?}) before attaching: {}",
                    self.stderr()
                )
            }
            Err(_) => bail!(
                "portwatch did not attach within {} s: {}",
                ATTACH_TIMEOUT.as_secs(),
                self.stderr()
            ),
        };
        println!(
            "# portwatch attached (mode {}): {}",
            attached.mode,
            attached.hooks.join(", ")
        );
        match mode {
            Some(mode) if attached.mode != mode => {
                bail!("portwatch attached in mode {}, not {mode}", attached.mode)
            }
            _ => Ok(attached),
        }
    }

    /// Whether the stdout reader has returned.
    pub fn stdout_read(&self) -> bool {
        self.stdout_reader
            .as_ref()
            .is_none_or(thread::JoinHandle::is_finished)
    }

    pub fn attached(&self) -> &Attached {
        self.attached.as_ref().expect("started means attached")
    }

    /// portwatch's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// What portwatch has written on stderr so far.
    pub fn stderr(&self) -> Stderr {
        Stderr::new(self.stderr.lock().unwrap().clone())
    }

    /// Wait up to `timeout` for portwatch to exit by itself, calling `meanwhile`
    /// between looks; its exit status, or None if it is still running.
    pub fn wait_exit(
        &mut self,
        timeout: Duration,
        mut meanwhile: impl FnMut(),
    ) -> Result<Option<ExitStatus>> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait()? {
                return Ok(Some(status));
            }
            if Instant::now() > deadline {
                return Ok(None);
            }
            meanwhile();
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGINT, then wait for exit.
    pub fn stop(self) -> Result<Stopped<T>> {
        self.stop_with(Signal::SIGINT)
    }

    /// `signal`, then wait for exit (at most 10 s) and for both readers.
    pub fn stop_with(mut self, signal: Signal) -> Result<Stopped<T>> {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        nix::sys::signal::kill(pid, signal)?;
        match self.wait_exit(EXIT_TIMEOUT, || {})? {
            Some(status) => self.finished(status),
            None => bail!(
                "portwatch did not exit within {} s of {signal}",
                EXIT_TIMEOUT.as_secs()
            ),
        }
    }

    /// After portwatch exited with `status`: what both readers got.
    pub fn finished(mut self, status: ExitStatus) -> Result<Stopped<T>> {
        let stdout = self
            .stdout_reader
            .take()
            .context("stdout already read")?
            .join()
            .map_err(|_| anyhow::anyhow!("the reader of portwatch's stdout panicked"))?;
        if let Some(reader) = self.stderr_reader.take() {
            let _ = reader.join();
        }
        Ok(Stopped {
            status,
            stdout,
            stderr: self.stderr(),
        })
    }
}

impl<T> Drop for Running<T> {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
