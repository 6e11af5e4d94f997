//! Named checks as they run: one line each on stdout (`ok - NAME`, or `FAILED -
//! NAME` and why), kept to become the suite's result ([`crate::report`]).
use anyhow::Result;

use crate::report::{Check, Group, Outcome};

/// The checks recorded so far.
#[derive(Default)]
pub struct Checks {
    list: Vec<Check>,
}

impl Checks {
    /// A check passed when it ran and found no failures.
    pub fn record(&mut self, name: &str, failures: Result<Vec<String>>) {
        let failures = match failures {
            Ok(f) => f,
            Err(e) => vec![format!("{e:#}")],
        };
        if failures.is_empty() {
            println!("ok - {name}");
        } else {
            println!("FAILED - {name}");
            for line in &failures {
                println!("    {line}");
            }
        }
        self.list.push(Check {
            name: name.to_string(),
            passed: failures.is_empty(),
            failures,
        });
    }

    /// Run `check` and record it, unless `PW_ONLY=WORDS` (debugging) names other
    /// checks: then it is not run at all.
    pub fn run(&mut self, name: &str, check: impl FnOnce() -> Result<Vec<String>>) {
        let only = std::env::var("PW_ONLY").unwrap_or_default();
        if name.contains(only.as_str()) {
            self.record(name, check());
        }
    }

    pub fn passed(&self) -> u32 {
        self.list.iter().filter(|c| c.passed).count() as u32
    }

    pub fn failed(&self) -> u32 {
        self.list.len() as u32 - self.passed()
    }

    /// These checks as the result of `mode` on `kernel` (`None`: the checks of no
    /// single mode). `refused`: the kernel does not allow the mode, and these checks
    /// are about refusing it cleanly.
    pub fn into_group(self, kernel: &str, mode: Option<&str>, refused: bool) -> Group {
        let outcome = match (self.failed(), refused) {
            (0, false) => Outcome::Pass,
            (0, true) => Outcome::Refused,
            _ => Outcome::Fail,
        };
        Group {
            kernel: kernel.to_string(),
            mode: mode.map(str::to_string),
            outcome,
            passed: self.passed(),
            failed: self.failed(),
            checks: self.list,
        }
    }
}
