//! The recorded history (`portwatch record`, `portwatch query`): every socket's
//! lifetime in an embedded SQLite database, with its owner, for point-in-time
//! questions ("who had port P at time T").
//!
//! - `schema`: the database file, its tables and version; opening, creating,
//!   migrating, refusing what is not a portwatch database.
//! - `recorder`: the pipeline's output that hands events to the writer without
//!   ever blocking (a bounded queue; what does not fit is counted).
//! - `writer`: the thread that writes them, in batched transactions, keeps the
//!   run's row and enforces retention (`retention`); `sockets` turns events into
//!   socket lifetimes (one row each) and process rows.
//! - `query`, `summary`: reading it back.
pub mod query;
pub mod recorder;
pub mod retention;
pub mod schema;
pub mod sockets;
pub mod summary;
pub mod time;
pub mod writer;
