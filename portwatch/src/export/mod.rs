//! Exports to the pipelines a fleet already runs: Prometheus metrics and OTLP
//! logs. Each is a consumer of the event stream that never stalls the reader.
pub mod metrics;
pub mod otlp;
