//! `cargo xtask test`: unit tests (no root), then the kernel integration suite on
//! this machine's kernel and on other kernels under QEMU, in every attach mode each
//! kernel allows, ending with a kernel × mode table.
use std::process::Command;

use anyhow::{bail, Result};

use crate::{build, report, results::Suite, test_tools, toolchain, util, vm};

#[derive(clap::Args)]
pub struct Options {
    /// Only the unit tests.
    #[arg(long)]
    pub unit_only: bool,
    /// Skip the QEMU kernels (this machine's kernel only).
    #[arg(long)]
    pub no_vm: bool,
    #[command(flatten)]
    pub vm: vm::VmOptions,
}

/// The integration test binary, through sudo when not root.
fn integration_test(binary: &std::path::Path) -> Result<Command> {
    if util::is_root() {
        return Ok(Command::new(binary));
    }
    if util::which("sudo").is_none() {
        bail!("the kernel integration tests need root, and sudo is not installed: run `cargo xtask test` as root");
    }
    eprintln!("xtask: the kernel integration tests need root: running them through sudo");
    let mut c = Command::new("sudo");
    c.arg("-E").arg(binary);
    Ok(c)
}

/// The suite on this machine's kernel: with the load generator (storm, soak,
/// socket ids, scale), then again on the fallback path (classic tracepoint and
/// LRU socket map, `--socket-store lru`), as on a kernel without BTF tracepoints
/// or socket storage.
fn on_this_machine(object: &std::path::Path) -> Result<Vec<Suite>> {
    let tools = test_tools::ensure()?;
    util::run(build::userspace_cargo(object).args([
        "build",
        "--package",
        "portwatch",
        "--package",
        "integration-test",
    ]))?;
    util::run(build::userspace_cargo(object).args(["build", "--release", "--package", "loadgen"]))?;
    let root = util::workspace_root();
    let target = root.join("target/debug");
    let loadgen = root.join("target/release/loadgen");
    let host_kernel = util::output(Command::new("uname").arg("-r")).unwrap_or_default();
    let mut suites = Vec::new();
    for (label, extra) in [
        (
            "this machine",
            vec![report::LOADGEN_ARG.into(), loadgen.into_os_string()],
        ),
        (
            "this machine, --socket-store lru",
            vec!["--socket-store".into(), "lru".into()],
        ),
    ] {
        let results = target.join("integration-results.jsonl");
        let _ = std::fs::remove_file(&results);
        let exited_ok = util::run(
            integration_test(&target.join("integration-test"))?
                .envs(tools.env())
                .arg("--portwatch")
                .arg(target.join("portwatch"))
                .args(&extra)
                .arg(report::RESULTS_ARG)
                .arg(&results),
        )
        .is_ok();
        suites.push(Suite::read(
            format!("{host_kernel} ({label})"),
            &results,
            exited_ok,
        ));
    }
    Ok(suites)
}

pub fn test(options: Options) -> Result<()> {
    let tc = toolchain::ensure()?;
    let object = build::build_ebpf(&tc, &build::Options::default())?;
    util::run(build::userspace_cargo(&object).args(["test", "--workspace"]))?;
    if options.unit_only {
        return Ok(());
    }
    let mut suites = on_this_machine(&object)?;
    if !options.no_vm {
        match vm::vm_test(&options.vm, &object) {
            Ok(runs) => suites.extend(runs),
            Err(e) => {
                eprintln!("xtask: error: the QEMU kernels could not be run: {e:#}");
                suites.push(Suite::failed("QEMU kernels".into()));
            }
        }
    }
    let failed = crate::results::print_table(&suites);
    if failed > 0 {
        bail!("{failed} kernel integration checks failed");
    }
    Ok(())
}
