//! What every service run shares: the helpers, the directories, the launch under setpriv, the metrics scrape.
use super::*;

/// The programs the runs use, in a directory every user may enter.
pub(super) struct Setup {
    pub(super) dir: PathBuf,
    /// A copy of portwatch any uid may run.
    pub(super) portwatch: PathBuf,
    /// A copy of this binary, for helpers run as uid 65534.
    pub(super) helper: PathBuf,
    /// This binary: what helpers run as root execute.
    pub(super) me: PathBuf,
    pub(super) mode: String,
}

impl Setup {
    pub(super) fn new(portwatch: &str, mode: &str) -> Result<Setup> {
        let (dir, copy) = crate::failures::reachable_copy(portwatch, "service")?;
        let helper = dir.join("pw-svc-helper");
        let me = (|| -> Result<PathBuf> {
            let me = std::env::current_exe()?;
            std::fs::copy(&me, &helper)
                .with_context(|| format!("copying {} for helpers", me.display()))?;
            std::fs::set_permissions(&helper, std::fs::Permissions::from_mode(0o755))?;
            Ok(me)
        })();
        let me = me.inspect_err(|_| {
            let _ = std::fs::remove_dir_all(&dir);
        })?;
        Ok(Setup {
            dir,
            portwatch: copy,
            helper,
            me,
            mode: mode.to_string(),
        })
    }

    /// `--attach MODE`, and the suite's socket store when it is the fallback's.
    pub(super) fn attach_args(&self) -> Vec<String> {
        let mut args = vec!["--attach".to_string(), self.mode.clone()];
        if launch::on_lru_fallback() {
            args.extend(["--socket-store".to_string(), "lru".to_string()]);
        }
        args
    }

    /// A fresh 0700 directory owned by `uid`, as systemd's StateDirectory=.
    pub(super) fn state_dir(&self, name: &str, uid: u32) -> Result<PathBuf> {
        let dir = self.dir.join(name);
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir(&dir)?;
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700))?;
        std::os::unix::fs::chown(&dir, Some(uid), Some(uid))?;
        Ok(dir)
    }
}

/// What a service run must deliver; each capability's loss costs some of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum Fact {
    /// The connect and accept events, exact (pid, tid, comm, uid, ports, role).
    Events,
    /// The executable (`exe`) of the processes of those events.
    Exe,
    /// The process holding a listener that existed before the start.
    SnapshotOwner,
    /// The database, in the directory the uid owns, holding the connection.
    History,
    /// The metrics endpoint answering.
    Metrics,
    /// Exit 0 on SIGTERM, no error line, no panic.
    CleanStop,
}

impl Fact {
    pub(super) fn what(self) -> &'static str {
        match self {
            Fact::Events => "exact connect and accept events",
            Fact::Exe => "the executables of the processes",
            Fact::SnapshotOwner => "the owner of a listener from before the start",
            Fact::History => "the history database",
            Fact::Metrics => "the metrics endpoint",
            Fact::CleanStop => "a clean stop",
        }
    }
}

/// How a service run went.
pub(super) enum Outcome {
    /// It ended before attaching (or, run again to completion, this is how).
    Refused {
        code: Option<i32>,
        stderr: Stderr,
        /// Programs it left loaded (none expected).
        leftover: Vec<String>,
    },
    /// It attached; the facts it did not deliver, each with why.
    Ran {
        lost: Vec<(Fact, String)>,
        stderr: Stderr,
    },
}

/// `--reuid/--regid/--clear-groups`, the capability sets, no new privileges:
/// the unit's ExecStart environment as far as capabilities go.
pub(super) fn capped(
    s: &Setup,
    setpriv: &Path,
    uid: u32,
    caps: &[&str],
    args: &[String],
) -> Launch {
    let set: String = std::iter::once("-all".to_string())
        .chain(
            caps.iter()
                .map(|c| format!("+{}", c.trim_start_matches("CAP_").to_lowercase())),
        )
        .collect::<Vec<_>>()
        .join(",");
    Launch::new(&setpriv.to_string_lossy())
        .arg(format!("--reuid={uid}"))
        .arg(format!("--regid={uid}"))
        .arg("--clear-groups")
        .arg(format!("--inh-caps={set}"))
        .arg(format!("--ambient-caps={set}"))
        .arg(format!("--bounding-set={set}"))
        .arg("--no-new-privs")
        .arg("--")
        .arg(&s.portwatch)
        .args(args)
        .args(s.attach_args())
        .expect_mode(&s.mode)
}

/// An HTTP GET of `/metrics`: the body, once the status is 200. Tried for up
/// to 5 s: the endpoint comes up just after the attached line.
pub(super) fn scrape(addr: SocketAddr) -> Result<String> {
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        match scrape_once(addr) {
            Err(_) if std::time::Instant::now() < deadline => {
                thread::sleep(Duration::from_millis(100));
            }
            done => return done,
        }
    }
}

pub(super) fn scrape_once(addr: SocketAddr) -> Result<String> {
    match crate::harness::http::get(addr, "/metrics")? {
        (200, body) => Ok(body),
        (status, _) => bail!("status {status}"),
    }
}
