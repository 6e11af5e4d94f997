//! The kernel integration suite's results as the test binary writes them (JSON
//! Lines of [`Group`], see `report`), one [`Suite`] per kernel, and the kernel ×
//! mode table that ends `cargo xtask test`.
use std::path::Path;

use anyhow::{Context, Result};

use crate::report::{Group, Outcome};

const MODES: [&str; 3] = ["fentry", "kprobe", "tracepoint"];

/// One suite run on one kernel.
pub struct Suite {
    /// How the table names the kernel.
    pub kernel: String,
    groups: Vec<Group>,
    /// The test binary (or the guest running it) exited with success.
    exited_ok: bool,
}

impl Suite {
    /// The groups written to `path` by a run on `kernel`; a file that cannot be
    /// read counts as a failed run.
    pub fn read(kernel: String, path: &Path, exited_ok: bool) -> Suite {
        match read_groups(path) {
            Ok(groups) => Suite {
                kernel,
                groups,
                exited_ok,
            },
            Err(e) => {
                eprintln!("xtask: error: the results of {kernel}: {e:#}");
                Suite::failed(kernel)
            }
        }
    }

    /// A kernel the suite could not run on.
    pub fn failed(kernel: String) -> Suite {
        Suite {
            kernel,
            groups: vec![],
            exited_ok: false,
        }
    }

    pub fn passed(&self) -> u32 {
        self.groups.iter().map(|g| g.passed).sum()
    }

    /// Failed checks; at least one when the run did not end well or ran nothing.
    pub fn failed_checks(&self) -> u32 {
        let failed: u32 = self.groups.iter().map(|g| g.failed).sum();
        if !self.exited_ok || self.passed() + failed == 0 {
            failed.max(1)
        } else {
            failed
        }
    }

    /// The table cell of `mode`.
    fn cell(&self, mode: &str) -> String {
        let Some(group) = self.groups.iter().find(|g| g.mode.as_deref() == Some(mode)) else {
            return "not run".into();
        };
        match group.outcome {
            Outcome::Pass => format!("pass {}/{}", group.passed, group.passed + group.failed),
            Outcome::Refused => "refused (ok)".into(),
            Outcome::Fail => format!("FAIL ({} failed)", group.failed),
        }
    }
}

fn read_groups(path: &Path) -> Result<Vec<Group>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(|l| serde_json::from_str(l).with_context(|| format!("in {}: {l}", path.display())))
        .collect()
}

/// The kernel × mode table and the closing line `kernels: N passed, M failed`, on
/// stderr like everything xtask says; the number of failed checks.
pub fn print_table(suites: &[Suite]) -> u32 {
    let width = suites
        .iter()
        .map(|s| s.kernel.len())
        .max()
        .unwrap_or(6)
        .max(6);
    eprintln!();
    eprintln!(
        "{:<width$} {:<16} {:<16} TRACEPOINT",
        "KERNEL", "FENTRY", "KPROBE"
    );
    for s in suites {
        let [fentry, kprobe, tracepoint] = MODES.map(|m| s.cell(m));
        eprintln!(
            "{:<width$} {fentry:<16} {kprobe:<16} {tracepoint}",
            s.kernel
        );
    }
    let passed: u32 = suites.iter().map(Suite::passed).sum();
    let failed: u32 = suites.iter().map(Suite::failed_checks).sum();
    eprintln!("kernels: {passed} passed, {failed} failed");
    failed
}
