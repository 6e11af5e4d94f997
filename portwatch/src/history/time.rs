//! Times and durations on the command line: RFC 3339 instants, or durations
//! (`30d`, `2h`, `90s`) which as instants count back from now. Stored times are
//! nanoseconds since the Unix epoch.
use std::time::Duration;

use chrono::{DateTime, Utc};

/// A command-line time that is neither RFC 3339 nor a duration.
#[derive(Debug, thiserror::Error)]
#[error("{0:?} is neither an RFC 3339 time (2026-11-27T02:13:00Z) nor a duration ago (2h, 7d)")]
pub struct BadTime(pub String);

/// A duration like `30d`, `2h`, `1h30m`, `90s`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text).map_err(|e| format!("{text:?}: {e} (e.g. 30d, 2h, 90s)"))
}

/// An instant: RFC 3339 (with a zone, or UTC when none is given), or a duration
/// before `now`.
pub fn parse_instant(text: &str, now: DateTime<Utc>) -> Result<DateTime<Utc>, BadTime> {
    if let Ok(t) = DateTime::parse_from_rfc3339(text) {
        return Ok(t.with_timezone(&Utc));
    }
    if let Ok(t) = humantime::parse_rfc3339_weak(text) {
        return Ok(DateTime::<Utc>::from(t));
    }
    match humantime::parse_duration(text) {
        Ok(ago) => chrono::Duration::from_std(ago)
            .ok()
            .and_then(|ago| now.checked_sub_signed(ago))
            .ok_or_else(|| BadTime(text.into())),
        Err(_) => Err(BadTime(text.into())),
    }
}

/// Nanoseconds since the Unix epoch, as stored.
pub fn to_ns(t: DateTime<Utc>) -> i64 {
    t.timestamp_nanos_opt().unwrap_or(i64::MAX)
}

pub fn from_ns(ns: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_nanos(ns)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instants() {
        let now = DateTime::parse_from_rfc3339("2026-11-27T12:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let at = |s| parse_instant(s, now).unwrap().to_rfc3339();
        assert_eq!(at("2026-11-27T02:13:00Z"), "2026-11-27T02:13:00+00:00");
        assert_eq!(at("2026-11-27T03:13:00+01:00"), "2026-11-27T02:13:00+00:00");
        assert_eq!(at("2026-11-27 02:13:00"), "2026-11-27T02:13:00+00:00");
        assert_eq!(at("2h"), "2026-11-27T10:00:00+00:00");
        assert_eq!(at("7d"), "2026-11-20T12:00:00+00:00");
        assert!(parse_instant("yesterday-ish", now).is_err());
        assert_eq!(from_ns(to_ns(now)), now);
    }

    #[test]
    fn durations() {
        assert_eq!(
            parse_duration("30d").unwrap(),
            Duration::from_secs(30 * 86400)
        );
        assert_eq!(parse_duration("1h30m").unwrap(), Duration::from_secs(5400));
        assert!(parse_duration("soon").is_err());
    }
}
