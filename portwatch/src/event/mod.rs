//! What portwatch reports, and the pure work on it: the model, decoding the
//! kernel's records, classification, notes, services and filters. Depends on
//! nothing else in portwatch.
pub mod address;
pub mod classify;
pub mod decode;
pub mod filter;
pub mod model;
pub mod notes;
pub mod services;
