//! The history rows of `cargo xtask bench`: bytes on disk per stored connection
//! and query latencies, on a database of many connections made by the `histgen`
//! example through the recorder's own writer (see portwatch/examples/histgen.rs).
use std::{
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::Instant,
};

use anyhow::{bail, Context, Result};

use crate::{build, util};

/// The database the recording row writes (a new one each bench).
pub fn record_db() -> PathBuf {
    util::workspace_root().join("target/bench/record.db")
}

/// Start from no recording database.
pub fn prepare() -> Result<()> {
    let db = record_db();
    std::fs::create_dir_all(db.parent().context("bench directory")?)?;
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", db.display()));
    }
    Ok(())
}

/// Wall time of one query, its output discarded, in ms.
fn time_query(portwatch: &Path, db: &Path, args: &[&str]) -> Result<f64> {
    let t0 = Instant::now();
    let status = Command::new(portwatch)
        .args(["query", "--format", "json", "--db"])
        .arg(db)
        .args(args)
        .stdout(Stdio::null())
        .status()?;
    if !status.success() {
        bail!("portwatch query {args:?} failed: {status}");
    }
    Ok(t0.elapsed().as_secs_f64() * 1000.0)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Generate the database, then measure. A markdown section.
pub fn measure(portwatch: &Path, connections: u64) -> Result<String> {
    eprintln!("xtask: bench: a history of {connections} connections");
    util::run(build::userspace_cargo(&build::ebpf_object()).args([
        "build",
        "--release",
        "--package",
        "portwatch",
        "--example",
        "histgen",
    ]))?;
    let histgen = util::workspace_root().join("target/release/examples/histgen");
    let db = util::workspace_root().join("target/bench/history.db");
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", db.display()));
    }
    let out = Command::new(&histgen)
        .arg("--db")
        .arg(&db)
        .args(["--connections", &connections.to_string()])
        .output()?;
    if !out.status.success() {
        bail!("histgen failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    let made: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    let sockets = made["sockets"].as_u64().context("histgen's sockets")?;
    let bytes = std::fs::metadata(&db)?.len();
    // Instants across the week the history spans (`--at 3d`: three days ago).
    let mut at = Vec::new();
    for days in 1..=5 {
        let t = format!("{days}d");
        at.push(time_query(portwatch, &db, &["--at", &t])?);
        at.push(time_query(portwatch, &db, &["--at", &t, "--port", "443"])?);
    }
    let summary: Vec<f64> = (0..3)
        .map(|_| time_query(portwatch, &db, &["--summary"]))
        .collect::<Result<_>>()?;
    let (at_ms, summary_ms) = (median(at), median(summary));
    let verdict = |ok: bool| if ok { "met" } else { "not met" };
    let per_connection = bytes as f64 / connections as f64;
    Ok(format!(
        "\nHistory: {connections} connections ({sockets} sockets: every client side, and the server side of every tenth) over 7 days, written by `histgen` through the recorder's writer in {:.1} s.\n\n\
| measure | value | target |\n| --- | ---: | --- |\n\
| bytes on disk per stored connection (indexes included) | {per_connection:.0} ({:.0} per socket row) | at most 200: {} |\n\
| `query --at T` (with and without `--port`), median of 10 | {at_ms:.0} ms | under 100 ms: {} |\n\
| `query --summary` over every socket, median of 3 | {summary_ms:.0} ms | under 1 s: {} |\n",
        made["seconds"].as_f64().unwrap_or(0.0),
        bytes as f64 / sockets as f64,
        verdict(per_connection <= 200.0),
        verdict(at_ms < 100.0),
        verdict(summary_ms < 1000.0),
    ))
}
