//! Event times as text, fast: the part that changes once a second (date, hour,
//! minute, second, and the local offset) is formatted once per second and reused;
//! only the fraction is written per event.
use std::{fmt::Write as _, io::Write as _};

use chrono::{DateTime, Local, Utc};

/// The seconds part of the last time formatted, and which second it was.
struct SecondPrefix {
    second: Option<i64>,
    text: String,
}

impl SecondPrefix {
    fn new() -> Self {
        SecondPrefix {
            second: None,
            text: String::new(),
        }
    }

    fn get(&mut self, t: &DateTime<Utc>, format: impl FnOnce(&mut String)) -> &str {
        let second = t.timestamp();
        if self.second != Some(second) {
            self.text.clear();
            format(&mut self.text);
            self.second = Some(second);
        }
        &self.text
    }
}

/// RFC 3339 in UTC with nanoseconds: `2026-11-27T15:45:18.123456789Z`.
pub struct Rfc3339Utc(SecondPrefix);

impl Rfc3339Utc {
    pub fn new() -> Self {
        Rfc3339Utc(SecondPrefix::new())
    }

    pub fn write(&mut self, t: &DateTime<Utc>, out: &mut Vec<u8>) {
        let prefix = self.0.get(t, |s| {
            let _ = write!(s, "{}", t.format("%Y-%m-%dT%H:%M:%S"));
        });
        out.extend_from_slice(prefix.as_bytes());
        let _ = write!(out, ".{:09}Z", t.timestamp_subsec_nanos());
    }
}

/// Local wall-clock time with milliseconds: `15:45:18.123`.
pub struct LocalClock(SecondPrefix);

impl LocalClock {
    pub fn new() -> Self {
        LocalClock(SecondPrefix::new())
    }

    pub fn write(&mut self, t: &DateTime<Utc>, out: &mut Vec<u8>) {
        let prefix = self.0.get(t, |s| {
            let _ = write!(s, "{}", t.with_timezone(&Local).format("%H:%M:%S"));
        });
        out.extend_from_slice(prefix.as_bytes());
        // Leap seconds show as nanoseconds past 1e9: keep them in the last ms.
        let _ = write!(out, ".{:03}", (t.timestamp_subsec_millis()).min(999));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Nanoseconds since the epoch that cross second and minute boundaries.
    const TIMES: [i64; 6] = [
        0,
        999_999_999,
        1_000_000_000,
        1_795_000_000_123_456_789,
        1_795_000_000_999_000_000,
        1_795_000_061_000_000_001,
    ];

    fn same_as_chrono(
        mut write: impl FnMut(&DateTime<Utc>, &mut Vec<u8>),
        chrono: impl Fn(&DateTime<Utc>) -> String,
    ) {
        for ns in TIMES {
            let t = DateTime::from_timestamp_nanos(ns);
            let mut text = Vec::new();
            write(&t, &mut text);
            assert_eq!(String::from_utf8(text).unwrap(), chrono(&t), "{ns}");
        }
    }

    #[test]
    fn utc_matches_chrono_across_seconds() {
        let mut f = Rfc3339Utc::new();
        same_as_chrono(
            |t, out| f.write(t, out),
            |t| t.to_rfc3339_opts(chrono::SecondsFormat::Nanos, true),
        );
    }

    #[test]
    fn local_matches_chrono_across_seconds() {
        let mut f = LocalClock::new();
        same_as_chrono(
            |t, out| f.write(t, out),
            |t| t.with_timezone(&Local).format("%H:%M:%S%.3f").to_string(),
        );
    }
}
