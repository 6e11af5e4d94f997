//! Arguments of `portwatch record` and `portwatch query`.
use std::{path::PathBuf, time::Duration};

use chrono::{DateTime, Utc};

use crate::{
    event::address::Prefix,
    history::{
        query::QueryEvent,
        retention::DEFAULT_MAX_SIZE,
        schema::DEFAULT_DB,
        time::{parse_duration, parse_instant},
    },
    output::Format,
};

#[derive(Debug, PartialEq, Eq, clap::Args)]
pub struct RecordArgs {
    /// The database file (created, with a 0700 directory, when missing).
    #[arg(long, value_name = "PATH", default_value = DEFAULT_DB)]
    pub db: PathBuf,
    /// Also print the events live, as a table or JSON Lines.
    #[arg(long, value_enum, value_name = "FORMAT")]
    pub print: Option<Format>,
    /// Drop closed sockets older than this (30d, 12h, ...); open sockets and
    /// listeners are kept.
    #[arg(long, value_name = "DURATION", default_value = "30d", value_parser = parse_duration)]
    pub retain: Duration,
    /// Keep the database under this many bytes, dropping the oldest closed
    /// sockets first.
    #[arg(long, value_name = "BYTES", default_value_t = DEFAULT_MAX_SIZE, value_parser = clap::value_parser!(u64).range(65_536..))]
    pub max_size: u64,
}

fn instant(text: &str) -> Result<DateTime<Utc>, String> {
    parse_instant(text, Utc::now()).map_err(|e| e.to_string())
}

#[derive(Debug, PartialEq, Eq, clap::Args)]
pub struct QueryArgs {
    /// The database file.
    #[arg(long, value_name = "PATH", default_value = DEFAULT_DB)]
    pub db: PathBuf,
    /// Every socket open at this instant (RFC 3339, or a duration ago: 2h).
    #[arg(long, value_name = "TIME", value_parser = instant, conflicts_with_all = ["since", "until"])]
    pub at: Option<DateTime<Utc>>,
    /// Sockets alive (or, with --event, events) from this time on.
    #[arg(long, value_name = "TIME", value_parser = instant)]
    pub since: Option<DateTime<Utc>>,
    /// ... up to this time.
    #[arg(long, value_name = "TIME", value_parser = instant)]
    pub until: Option<DateTime<Utc>>,
    /// Only sockets with this local port (repeatable).
    #[arg(long = "local-port", value_name = "PORT")]
    pub local_ports: Vec<u16>,
    /// Only connections with a remote address in this ADDRESS[/PREFIX].
    #[arg(long, value_name = "ADDR[/PREFIX]", value_parser = Prefix::parse)]
    pub remote: Option<Prefix>,
    /// Only processes with this executable path (repeatable).
    #[arg(long = "exe", value_name = "PATH")]
    pub exes: Vec<String>,
    /// Only processes of this user, by name or uid (repeatable).
    #[arg(long = "user", value_name = "USER")]
    pub users: Vec<String>,
    /// Only sockets where this happened (repeatable).
    #[arg(long = "event", value_enum)]
    pub events: Vec<QueryEvent>,
    /// One line per process (executable and user): ports listened on, peers,
    /// connections, failures, first and last seen.
    #[arg(long)]
    pub summary: bool,
}
