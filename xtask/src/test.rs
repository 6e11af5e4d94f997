//! `cargo xtask test`: unit tests (no root), then the kernel integration suite on
//! this machine's kernel and on other kernels under QEMU, in every attach mode each
//! kernel allows, ending with a kernel × mode table.
use std::process::Command;

use anyhow::{bail, Result};

use crate::{build, toolchain, util, vm};

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

/// One suite run on one kernel: its per-mode RESULT lines and its closing counts.
struct Suite {
    kernel: String,
    results: Vec<(String, String)>,
    passed: u32,
    failed: u32,
}

fn field<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    line.split_whitespace()
        .find_map(|w| w.strip_prefix(key)?.strip_prefix('='))
}

fn summarize(kernel: String, lines: &[String], ran: bool) -> Suite {
    let mut suite = Suite {
        kernel,
        results: Vec::new(),
        passed: 0,
        failed: 0,
    };
    for line in lines {
        let line = line.trim();
        if line.starts_with("RESULT ") {
            let mode = field(line, "mode").unwrap_or("?").to_string();
            let outcome = match field(line, "outcome") {
                Some("pass") => format!("pass {}/{}", field(line, "passed").unwrap_or("?"), {
                    let p: u32 = field(line, "passed")
                        .and_then(|v| v.parse().ok())
                        .unwrap_or(0);
                    let f: u32 = field(line, "failed")
                        .and_then(|v| v.parse().ok())
                        .unwrap_or(0);
                    p + f
                }),
                Some("refused") => "refused (ok)".into(),
                _ => format!("FAIL ({} failed)", field(line, "failed").unwrap_or("?")),
            };
            suite.results.push((mode, outcome));
        }
        if let Some((p, f)) = line
            .strip_suffix(" failed")
            .and_then(|l| l.split_once(" passed, "))
        {
            if let (Ok(p), Ok(f)) = (p.parse(), f.parse()) {
                suite.passed = p;
                suite.failed = f;
            }
        }
    }
    if !ran || (suite.passed == 0 && suite.failed == 0) {
        suite.failed = suite.failed.max(1);
    }
    suite
}

fn print_table(suites: &[Suite]) {
    let width = suites
        .iter()
        .map(|s| s.kernel.len())
        .max()
        .unwrap_or(6)
        .max(6);
    println!();
    println!(
        "{:<width$} {:<16} {:<16} TRACEPOINT",
        "KERNEL", "FENTRY", "KPROBE"
    );
    for s in suites {
        let cell = |mode: &str| {
            s.results
                .iter()
                .find(|(m, _)| m == mode)
                .map(|(_, o)| o.clone())
                .unwrap_or_else(|| "not run".into())
        };
        println!(
            "{:<width$} {:<16} {:<16} {}",
            s.kernel,
            cell("fentry"),
            cell("kprobe"),
            cell("tracepoint")
        );
    }
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
    let host_kernel = util::output(Command::new("uname").arg("-r")).unwrap_or_default();
    let (status, lines) =
        util::run_streaming(cmd.arg("--portwatch").arg(target.join("portwatch")))?;
    let mut suites = vec![summarize(
        format!("{host_kernel} (this machine)"),
        &lines,
        status.success(),
    )];
    if !options.no_vm {
        match vm::vm_test(&options.vm, &object) {
            Ok(runs) => {
                for run in runs {
                    suites.push(summarize(run.kernel, &run.lines, run.passed));
                }
            }
            Err(e) => {
                eprintln!("xtask: error: the QEMU kernels could not be run: {e:#}");
                suites.push(Suite {
                    kernel: "QEMU kernels".into(),
                    results: vec![],
                    passed: 0,
                    failed: 1,
                });
            }
        }
    }
    print_table(&suites);
    let passed: u32 = suites.iter().map(|s| s.passed).sum();
    let failed: u32 = suites.iter().map(|s| s.failed).sum();
    println!("kernels: {passed} passed, {failed} failed");
    if failed > 0 {
        bail!("{failed} kernel integration checks failed");
    }
    Ok(())
}
