//! One function per command; each wires the kernel, event, enrichment and output
//! modules together for its job.
pub mod baseline;
pub mod doctor;
pub mod explain;
pub mod query;
pub mod record;
pub mod snapshot;
pub mod trace;
