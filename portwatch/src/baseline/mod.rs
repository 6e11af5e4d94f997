//! Baselines: which processes are expected to hold which ports (and, optionally,
//! to connect where), learnt from the host and reviewed by a person; every
//! departure reported as drift.
//!
//! - `file`: the TOML file, read strictly and written sorted and commented;
//!   `entry`: its entries as checking uses them (TCP or UDP, bind, ports).
//! - `learn`: entries from what the host does; the expected listeners that are gone.
//! - `check`: an event against the baseline, each drift once per run.
pub mod check;
pub mod entry;
pub mod file;
pub mod learn;
