//! `cargo xtask run`: build, then trace.
use std::process::Command;

use anyhow::Result;

use crate::{build, util};

#[derive(clap::Args)]
pub struct Options {
    /// Arguments for portwatch (after `--`).
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub args: Vec<String>,
}

pub fn run(options: Options) -> Result<()> {
    let binary = build::build_all(&build::Options { release: true })?;
    let mut cmd = if util::is_root() {
        Command::new(&binary)
    } else {
        let mut c = Command::new("sudo");
        c.arg("-E").arg(&binary);
        c
    };
    cmd.args(&options.args);
    let status = cmd.status()?;
    std::process::exit(status.code().unwrap_or(1));
}
