//! The suite's result as data: what `integration-test --results FILE` writes (JSON
//! Lines, one [`Group`] per line) and what `cargo xtask test` reads back for its
//! kernel × mode table. This file is compiled into both crates (xtask includes it
//! with `#[path]`), so writer and reader cannot drift apart; it depends on serde
//! only.
use serde::{Deserialize, Serialize};

/// The checks of one attach mode on one kernel, or (`mode: None`) the checks that
/// belong to no single mode: failure paths, `--attach auto`, storm and soak.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Group {
    /// `uname -r` of the kernel the suite ran on.
    pub kernel: String,
    pub mode: Option<String>,
    pub outcome: Outcome,
    pub passed: u32,
    pub failed: u32,
    pub checks: Vec<Check>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    /// Every check passed.
    Pass,
    /// The kernel does not allow the mode, and portwatch refused it cleanly.
    Refused,
    /// At least one check failed.
    Fail,
}

/// One named check and, when it failed, why.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Check {
    pub name: String,
    pub passed: bool,
    pub failures: Vec<String>,
}

/// The integration-test argument naming the file to write the result to.
pub const RESULTS_ARG: &str = "--results";
/// The argument naming the load generator (storm, soak, socket ids, scale).
pub const LOADGEN_ARG: &str = "--loadgen";
