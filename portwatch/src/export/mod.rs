//! Exports to the pipelines a fleet already runs: Prometheus metrics now, OTLP
//! logs to come. Each is a consumer of the event stream that never stalls the
//! reader.
pub mod metrics;
