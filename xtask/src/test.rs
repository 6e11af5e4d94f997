//! `cargo xtask test`: unit tests (no root), then the kernel integration tests,
//! which trace real sockets of real processes and compare with ground truth.
use std::process::Command;

use anyhow::{bail, Result};

use crate::{build, toolchain, util};

#[derive(clap::Args)]
pub struct Options {
    /// Only the unit tests.
    #[arg(long)]
    pub unit_only: bool,
}

pub fn test(options: Options) -> Result<()> {
    let tc = toolchain::ensure()?;
    let object = build::build_ebpf(&tc, &build::Options::default())?;
    util::run(build::userspace_cargo(&object).args(["test", "--workspace"]))?;
    if options.unit_only {
        return Ok(());
    }
    util::run(build::userspace_cargo(&object).args([
        "build",
        "--package",
        "portwatch",
        "--package",
        "integration-test",
    ]))?;
    let target = util::workspace_root().join("target/debug");
    let mut cmd = if util::is_root() {
        Command::new(target.join("integration-test"))
    } else if util::which("sudo").is_some() {
        eprintln!("xtask: the kernel integration tests need root: running them through sudo");
        let mut c = Command::new("sudo");
        c.arg("-E").arg(target.join("integration-test"));
        c
    } else {
        bail!("the kernel integration tests need root, and sudo is not installed: run `cargo xtask test` as root");
    };
    util::run(cmd.arg("--portwatch").arg(target.join("portwatch")))
}
