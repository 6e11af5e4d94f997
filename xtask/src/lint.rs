//! `cargo xtask lint`: formatting and clippy, for userspace and (in its own pass,
//! on the host target, as aya-template does) the eBPF crate.
use anyhow::Result;

use crate::{build, imports, toolchain, util};

pub fn lint() -> Result<()> {
    let root = util::workspace_root();
    imports::check(false)?;
    util::run(
        util::cargo()
            .current_dir(&root)
            .args(["fmt", "--all", "--check"]),
    )?;
    util::run(
        util::cargo()
            .current_dir(root.join("portwatch-ebpf"))
            .args(["fmt", "--check"]),
    )?;
    let tc = toolchain::ensure()?;
    let object = build::build_ebpf(&tc, &build::Options::default())?;
    util::run(build::userspace_cargo(&object).args([
        "clippy",
        "--workspace",
        "--all-targets",
        "--",
        "-D",
        "warnings",
    ]))?;
    util::run(
        util::cargo()
            .current_dir(root.join("portwatch-ebpf"))
            .env("CARGO_TARGET_DIR", root.join("target/ebpf-host"))
            .args(["clippy", "--", "-D", "warnings"]),
    )?;
    Ok(())
}
