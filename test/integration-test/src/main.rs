//! Kernel integration tests for portwatch: real sockets in real processes (a
//! listener, a forked acceptor, separate client processes), traced by the real
//! portwatch binary, every expected event compared field by field with what the
//! processes themselves know (their pids, names, ports).
//!
//! `integration-test --portwatch PATH [--attach MODE]` runs the suite in MODE, or in
//! every mode the kernel allows (and checks that the others are refused cleanly),
//! and ends with the line `N passed, N failed`. `integration-test helper ...` is how
//! it runs its own helper processes (re-executing itself).
mod expect;
mod failures;
mod heavy;
mod helper;
mod investigate;
mod modes;
mod scenarios;
mod sock;
mod tracer;

use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("helper") {
        return helper::main(&args[1..]);
    }
    let mut portwatch = None;
    let mut mode = None;
    let mut loadgen = None;
    let mut it = args.into_iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--portwatch" => portwatch = it.next(),
            "--attach" => mode = it.next(),
            "--loadgen" => loadgen = it.next(),
            other => {
                eprintln!("integration-test: unknown argument {other}");
                return ExitCode::from(2);
            }
        }
    }
    let Some(portwatch) = portwatch else {
        eprintln!("usage: integration-test --portwatch PATH [--attach MODE] [--loadgen PATH]");
        return ExitCode::from(2);
    };
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        println!("SKIPPED: the kernel integration tests need root (loading eBPF programs)");
        return ExitCode::from(1);
    }
    let tally = match mode {
        Some(mode) => scenarios::run_mode(&portwatch, &mode),
        None => modes::run_all_modes(&portwatch, loadgen.as_deref()),
    };
    println!("{} passed, {} failed", tally.passed, tally.failed);
    if tally.failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
