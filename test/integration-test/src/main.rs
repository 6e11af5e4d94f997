//! Kernel integration tests for portwatch: real sockets in real processes (a
//! listener, a forked acceptor, separate client processes), traced by the real
//! portwatch binary, every expected event compared field by field with what the
//! processes themselves know (their pids, names, ports).
//!
//! `integration-test --portwatch PATH` runs every scenario and ends with the line
//! `N passed, N failed`. `integration-test helper ...` is how it runs its own
//! helper processes (re-executing itself).
mod expect;
mod helper;
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
    let mut extra = Vec::new();
    let mut it = args.into_iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--portwatch" => portwatch = it.next(),
            "--" => extra.extend(it.by_ref()),
            other => {
                eprintln!("integration-test: unknown argument {other}");
                return ExitCode::from(2);
            }
        }
    }
    let Some(portwatch) = portwatch else {
        eprintln!("usage: integration-test --portwatch PATH [-- PORTWATCH-ARGS]");
        return ExitCode::from(2);
    };
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        println!("SKIPPED: the kernel integration tests need root (loading eBPF programs)");
        return ExitCode::from(1);
    }
    scenarios::run_all(&portwatch, &extra)
}
