//! The recorded history (`portwatch record`, `portwatch query`): every socket's
//! lifetime in an embedded SQLite database, with its owner, for point-in-time
//! questions ("who had port P at time T").
//!
//! - `schema`: the database file, its tables and version; opening, creating,
//!   refusing what is not a portwatch database; `migrate`: older versions'
//!   databases brought to this one's layout.
//! - `recorder`: the pipeline's output that hands events to the writer without
//!   ever blocking (a bounded queue; what does not fit is counted).
//! - `writer`: the thread that writes them, in batched transactions, keeps the
//!   run's row and enforces retention (`retention`); `sockets` turns events into
//!   socket lifetimes (one row each; a UDP socket one per flow, `socket_rows`)
//!   and process rows (`rows`: their statements).
//! - `query`, `summary`: reading it back.
pub mod migrate;
pub mod query;
pub mod recorder;
pub mod retention;
pub mod rows;
pub mod schema;
#[cfg(test)]
mod scratch;
pub mod socket_rows;
pub mod sockets;
pub mod summary;
pub mod time;
pub mod writer;

#[cfg(test)]
mod tests;
