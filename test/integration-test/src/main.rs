//! Kernel integration tests for portwatch: real sockets in real processes (a
//! listener, a forked acceptor, separate client processes), traced by the real
//! portwatch binary, every expected event compared field by field with what the
//! processes themselves know (their pids, names, ports).
//!
//! `integration-test --portwatch PATH [--attach MODE] [--loadgen PATH] [--results
//! FILE] [--socket-store STORE]` runs the suite in MODE, or in every mode the
//! kernel allows (and checks that the others are refused cleanly), prints each
//! check as it goes and ends with the line `N passed, N failed`. With
//! `--socket-store`, every traced run is given it (the suite on the fallback
//! path: `lru`). With `--results`, the outcome is also
//! written to FILE as data (see `report`). `integration-test helper ...` is how it
//! runs its own helper processes (re-executing itself).
mod baseline;
mod baseline_udp;
mod checks;
mod expect;
mod failures;
mod harness;
mod heavy;
mod helper;
mod helper_udp;
mod history;
mod identity;
mod inferred;
mod investigate;
mod modes;
mod otlp;
mod prometheus;
mod reload;
mod report;
mod scale;
mod scenarios;
mod service;
mod sock;

use std::{io::Write, process::ExitCode};

use anyhow::{Context, Result};

use report::Group;

const USAGE: &str =
    "usage: integration-test --portwatch PATH [--attach MODE] [--loadgen PATH] [--results FILE] [--socket-store STORE]";

struct Options {
    portwatch: String,
    mode: Option<String>,
    loadgen: Option<String>,
    results: Option<String>,
    store: Option<String>,
}

fn options(args: Vec<String>) -> Result<Options, String> {
    let (mut portwatch, mut mode, mut loadgen, mut results, mut store) =
        (None, None, None, None, None);
    let mut it = args.into_iter();
    while let Some(a) = it.next() {
        let slot = match a.as_str() {
            "--portwatch" => &mut portwatch,
            "--attach" => &mut mode,
            report::LOADGEN_ARG => &mut loadgen,
            report::RESULTS_ARG => &mut results,
            "--socket-store" => &mut store,
            other => return Err(format!("unknown argument {other}")),
        };
        *slot = Some(it.next().ok_or_else(|| format!("{a} needs a value"))?);
    }
    Ok(Options {
        portwatch: portwatch.ok_or_else(|| USAGE.to_string())?,
        mode,
        loadgen,
        results,
        store,
    })
}

/// One JSON object per line.
fn write_results(path: &str, groups: &[Group]) -> Result<()> {
    let mut file = std::fs::File::create(path).with_context(|| format!("creating {path}"))?;
    for group in groups {
        serde_json::to_writer(&mut file, group)?;
        writeln!(file)?;
    }
    file.flush()?;
    Ok(())
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("helper") {
        return helper::main(&args[1..]);
    }
    let options = match options(args) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("integration-test: {e}");
            return ExitCode::from(2);
        }
    };
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        println!("SKIPPED: the kernel integration tests need root (loading eBPF programs)");
        return ExitCode::from(1);
    }
    if let Some(store) = &options.store {
        harness::launch::add_to_every_trace(vec!["--socket-store".into(), store.clone()]);
    }
    let groups = match &options.mode {
        Some(mode) => {
            let checks = scenarios::run_mode(&options.portwatch, mode);
            vec![checks.into_group(&modes::kernel_release(), Some(mode), false)]
        }
        None => modes::run_all_modes(&options.portwatch, options.loadgen.as_deref()),
    };
    let passed: u32 = groups.iter().map(|g| g.passed).sum();
    let failed: u32 = groups.iter().map(|g| g.failed).sum();
    println!("{passed} passed, {failed} failed");
    if failed == 0 {
        let kept = harness::scratch::remove_all();
        if kept > 0 {
            eprintln!("integration-test: {kept} scratch directories could not be removed");
        }
    } else {
        eprintln!(
            "integration-test: the checks' scratch directories are kept: {}",
            harness::scratch::scratch_path("*").display()
        );
    }
    if let Some(path) = &options.results {
        if let Err(e) = write_results(path, &groups) {
            eprintln!("integration-test: writing the results: {e:#}");
            return ExitCode::FAILURE;
        }
    }
    if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
