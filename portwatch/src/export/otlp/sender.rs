//! The sender thread: takes batches from the spool and sends each through
//! opentelemetry-otlp's exporter (OTLP/HTTP, protobuf) until the collector takes
//! it, backing off while it cannot; a batch the collector refuses for good is
//! dropped and counted. It runs on a thread of its own (the blocking HTTP client
//! must not run inside the reader's runtime), so a slow collector never touches
//! the reader.
use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use opentelemetry::{
    logs::{Logger as _, LoggerProvider as _},
    InstrumentationScope,
};
use opentelemetry_sdk::logs::{LogBatch, LogExporter as _, SdkLogRecord, SdkLoggerProvider};

use super::{
    record::fill,
    spool::{Spool, Take},
};

/// A partial batch waits this long for more records before it is sent.
const LINGER: Duration = Duration::from_millis(200);
/// Backoff after a failed send: doubling from the first to the last.
const BACKOFF_FIRST: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);

pub struct Sender {
    pub exporter: opentelemetry_otlp::LogExporter,
    pub spool: Arc<Spool>,
}

/// Whether a failed send may succeed later. opentelemetry-otlp gives the HTTP
/// status only in its message ("... status code: 400"); a client error other
/// than 408 (timeout) and 429 (too many requests) is final, anything else
/// (network errors, 5xx) is worth retrying.
fn retryable(message: &str) -> bool {
    let status = message
        .rsplit("status code: ")
        .next()
        .filter(|_| message.contains("status code: "))
        .and_then(|s| s.trim().get(..3))
        .and_then(|s| s.parse::<u16>().ok());
    !matches!(status, Some(400..=499) if status != Some(408) && status != Some(429))
}

impl Sender {
    pub fn run(self) {
        // A provider with no processor: only its logger's record constructor is
        // used; records go out through this thread's own exporter call.
        let provider = SdkLoggerProvider::builder().build();
        let logger = provider.logger("portwatch");
        let scope = InstrumentationScope::builder("portwatch")
            .with_version(env!("CARGO_PKG_VERSION"))
            .build();
        let mut backoff = BACKOFF_FIRST;
        let mut down_since: Option<Instant> = None;
        while let Take::Batch(items) = self.spool.take(LINGER) {
            let records: Vec<SdkLogRecord> = items
                .iter()
                .map(|(seq, item)| {
                    let mut r = logger.create_log_record();
                    fill(&mut r, item, *seq);
                    r
                })
                .collect();
            drop(items);
            let pairs: Vec<(&SdkLogRecord, &InstrumentationScope)> =
                records.iter().map(|r| (r, &scope)).collect();
            loop {
                match futures_executor::block_on(self.exporter.export(LogBatch::new(&pairs))) {
                    Ok(()) => {
                        self.spool.done(pairs.len(), true);
                        if let Some(since) = down_since.take() {
                            eprintln!(
                                "portwatch: otlp: the collector takes records again (after {:.1} s)",
                                since.elapsed().as_secs_f64()
                            );
                        }
                        backoff = BACKOFF_FIRST;
                        break;
                    }
                    Err(e) if !retryable(&e.to_string()) => {
                        eprintln!(
                            "portwatch: warning: otlp: the collector refused {} records ({e}); dropped",
                            pairs.len()
                        );
                        self.spool.done(pairs.len(), false);
                        break;
                    }
                    Err(e) => {
                        if down_since.is_none() {
                            down_since = Some(Instant::now());
                            eprintln!(
                                "portwatch: warning: otlp: cannot deliver ({e}); spooling and retrying"
                            );
                        }
                        if self.spool.deadline().is_some_and(|d| Instant::now() >= d) {
                            self.spool.abandon(pairs.len());
                            break;
                        }
                        self.spool.pause(backoff);
                        backoff = (backoff * 2).min(BACKOFF_MAX);
                        // Closing: retry at a steady pace until the deadline.
                        if self.spool.deadline().is_some() {
                            std::thread::sleep(BACKOFF_FIRST);
                        }
                    }
                }
            }
        }
        let _ = self.exporter.shutdown();
    }
}

#[cfg(test)]
mod tests {
    use super::retryable;

    #[test]
    fn only_final_client_errors_are_not_retried() {
        for (message, retry) in [
            ("HTTP export failed with status code: 400", false),
            ("HTTP export failed with status code: 413", false),
            ("HTTP export failed with status code: 429", true),
            ("HTTP export failed with status code: 408", true),
            ("HTTP export failed with status code: 503", true),
            ("HTTP export failed: network error", true),
        ] {
            assert_eq!(retryable(message), retry, "{message}");
        }
    }
}
