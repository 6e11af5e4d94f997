//! Arguments of `portwatch baseline`.
use std::{path::PathBuf, time::Duration};

use crate::history::time::parse_duration;

#[derive(Debug, PartialEq, Eq, clap::Args)]
pub struct BaselineArgs {
    #[command(subcommand)]
    pub action: BaselineAction,
}

#[derive(Debug, PartialEq, Eq, clap::Subcommand)]
pub enum BaselineAction {
    /// Learn the expected listeners (and with --outbound, destinations) from the
    /// sockets that exist now and, with --duration, from live events; write them
    /// as TOML for review.
    Learn {
        /// Write a new baseline here.
        #[arg(
            long,
            value_name = "FILE",
            required_unless_present = "update",
            conflicts_with = "update"
        )]
        out: Option<PathBuf>,
        /// Add what was learnt to this baseline, keeping everything in it as it is
        /// (hand edits and comments too).
        #[arg(long, value_name = "FILE")]
        update: Option<PathBuf>,
        /// Also watch live events this long (default: the sockets that exist now
        /// alone).
        #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
        duration: Option<Duration>,
        /// Also learn each program's outbound destinations (remote ports); needs
        /// --duration.
        #[arg(long, requires = "duration")]
        outbound: bool,
    },
    /// Compare the sockets that exist now with a baseline and print the drift:
    /// exit 0 when none, 1 when there is drift, 2 on usage or file errors.
    Check {
        /// The baseline file.
        #[arg(value_name = "FILE")]
        file: PathBuf,
    },
}
