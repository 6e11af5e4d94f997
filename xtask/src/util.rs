//! Running commands, finding things on the host, installing with apt.
//!
//! xtask's stdout belongs to portwatch alone (`cargo xtask run -- --format json |
//! jq` must see nothing else): xtask writes its own messages to stderr, and every
//! command it runs for setup, build or test has its stdout sent to stderr too
//! ([`run`], [`run_streaming`]).
use std::{
    io::{BufRead, BufReader},
    path::{Path, PathBuf},
    process::{Command, ExitStatus, Stdio},
};

use anyhow::{bail, Context, Result};

/// The workspace root (xtask lives one level below it).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask is inside the workspace")
        .to_path_buf()
}

/// Run a command with its stdout on xtask's stderr (stdin and stderr inherited);
/// fail with the command line if it fails.
pub fn run(cmd: &mut Command) -> Result<()> {
    let status = cmd
        .stdout(Stdio::from(std::io::stderr()))
        .status()
        .with_context(|| format!("starting {cmd:?}"))?;
    if !status.success() {
        bail!("{cmd:?} failed ({status})");
    }
    Ok(())
}

/// A command's stdout, trimmed, if it ran and succeeded.
pub fn output(cmd: &mut Command) -> Option<String> {
    let out = cmd.output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// Where `name` is on PATH.
pub fn which(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join(name))
            .find(|p| p.is_file())
    })
}

/// The cargo that runs xtask, for nested builds.
pub fn cargo() -> Command {
    Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
}

/// Run a command with its stdout echoed on xtask's stderr line by line as it
/// comes, each line after `label` (which names the command when several run at
/// once), and returned.
pub fn run_streaming(cmd: &mut Command, label: &str) -> Result<(ExitStatus, Vec<String>)> {
    let mut child = cmd
        .stdout(Stdio::piped())
        .spawn()
        .with_context(|| format!("starting {cmd:?}"))?;
    let mut lines = Vec::new();
    for line in BufReader::new(child.stdout.take().context("no stdout pipe")?).lines() {
        // A guest's serial console may emit bytes that are not UTF-8.
        let line = line.unwrap_or_default();
        eprintln!("{label}{line}");
        lines.push(line);
    }
    Ok((child.wait()?, lines))
}

/// `apt-get install` (through sudo when not root), after refreshing package lists.
pub fn apt_install(packages: &[&str]) -> Result<()> {
    if which("apt-get").is_none() {
        bail!("apt-get is not available to install {}", packages.join(" "));
    }
    let sudo = !is_root();
    let apt = |args: &[&str]| {
        let mut c = if sudo {
            Command::new("sudo")
        } else {
            Command::new("apt-get")
        };
        if sudo {
            c.arg("apt-get");
        }
        c.args(args).env("DEBIAN_FRONTEND", "noninteractive");
        c
    };
    // Package lists may be missing on a fresh machine; a failed update is not fatal
    // by itself (the install says what is missing).
    let _ = run(&mut apt(&["update", "-qq"]));
    run(apt(&["install", "-y", "-qq", "--no-install-recommends"]).args(packages))
}

/// The first file in `dir` whose name ends in `.ext` (what a download left there).
pub fn file_with_extension(dir: &Path, ext: &str) -> Result<PathBuf> {
    std::fs::read_dir(dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.extension().is_some_and(|e| e == ext))
        .with_context(|| format!("no .{ext} file in {}", dir.display()))
}
