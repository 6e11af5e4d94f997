//! (being written)
use crate::checks::Checks;

pub fn record_all(_checks: &mut Checks, _portwatch: &str, _mode: &str) {}
