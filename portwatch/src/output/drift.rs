//! Drift records (`--baseline`): a `DRIFT` line in the table, a `drift` object in
//! JSON with the whole triggering event.
use std::io::{self, Write};

use chrono::Utc;

use super::{
    escape::escape_control,
    table_row::{Row, BOLD, MAGENTA},
    time_text::LocalClock,
};
use crate::baseline::check::Drift;

/// `HH:MM:SS.mmm DRIFT KIND reason`, the kind in magenta, after the line of the
/// event that showed it.
pub fn table_line(line: &mut Vec<u8>, clock: &mut LocalClock, d: &Drift, color: bool) {
    let mut row = Row::new(line, color);
    row.start(None);
    let time = d.trigger.as_ref().map_or_else(Utc::now, |e| e.time);
    clock.write(&time, row.line);
    row.end();
    row.cell("DRIFT", Some(MAGENTA));
    row.start(Some(BOLD));
    row.line.extend_from_slice(d.kind.name().as_bytes());
    row.line.push(b':');
    row.end();
    row.start(None);
    row.line
        .extend_from_slice(escape_control(&d.reason).as_bytes());
    row.finish();
}

/// `{"time":…,"event":"drift","drift":{"kind":…,"reason":…,"port":…},"trigger":EVENT}`;
/// `event_json` is the triggering event's object (without its newline), or none.
pub fn json_line(out: &mut impl Write, d: &Drift, event_json: Option<&[u8]>) -> io::Result<()> {
    let time = d
        .trigger
        .as_ref()
        .map_or_else(Utc::now, |e| e.time)
        .to_rfc3339_opts(chrono::SecondsFormat::Nanos, true);
    let drift = serde_json::json!({"kind": d.kind.name(), "reason": d.reason, "port": d.port});
    // In the order of every other record: time, event, then what it is.
    let mut text =
        format!("{{\"time\":\"{time}\",\"event\":\"drift\",\"drift\":{drift},\"trigger\":")
            .into_bytes();
    match event_json {
        Some(e) => text.extend_from_slice(e),
        None => text.extend_from_slice(b"null"),
    }
    text.extend_from_slice(b"}\n");
    out.write_all(&text)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::baseline::check::DriftKind;

    fn hostile() -> Drift {
        Drift {
            kind: DriftKind::UnexpectedListener,
            reason: "/tmp/\u{1b}[31mevil\nexe listens on 4444".into(),
            port: 4444,
            trigger: None,
        }
    }

    #[test]
    fn a_hostile_reason_is_escaped_in_the_table_and_exact_in_json() {
        let mut line = Vec::new();
        table_line(&mut line, &mut LocalClock::new(), &hostile(), false);
        let text = String::from_utf8(line).unwrap();
        assert!(!text.trim_end().contains(['\u{1b}', '\n']), "{text:?}");
        assert!(text.contains("DRIFT") && text.contains("unexpected-listener:"));
        let mut out = Vec::new();
        json_line(&mut out, &hostile(), None).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["event"], "drift");
        assert_eq!(v["drift"]["reason"], hostile().reason);
        assert!(v["trigger"].is_null());
    }
}
