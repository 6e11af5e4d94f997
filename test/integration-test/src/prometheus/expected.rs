//! What Prometheus must answer: the helpers' ground truth counted as portwatch's
//! metrics count it, and every difference from what Prometheus' API answers.
use std::collections::{BTreeMap, BTreeSet};

use anyhow::Result;
use serde_json::Value;

use super::server::Prometheus;

/// Events by (event, role, family).
pub(super) type EventCounts = BTreeMap<(String, String, String), u64>;

/// What the helpers did, counted as portwatch's metrics count it.
#[derive(Default)]
pub(super) struct Truth {
    pub(super) events: EventCounts,
    pub(super) failures: BTreeMap<String, u64>,
}

impl Truth {
    pub(super) fn add(&mut self, event: &str, role: &str, family: &str, n: u64) {
        *self
            .events
            .entry((event.into(), role.into(), family.into()))
            .or_default() += n;
    }
}

/// The events portwatch printed, counted by (event, role, family).
pub(super) fn count_printed(events: &[Value]) -> EventCounts {
    let mut counts = EventCounts::new();
    for e in events {
        let label = |k: &str| e[k].as_str().unwrap_or("?").to_string();
        *counts
            .entry((label("event"), label("role"), label("family")))
            .or_default() += 1;
    }
    counts
}

#[derive(Clone, Copy, PartialEq)]
pub(super) enum Phase {
    /// The listeners listen, their acceptors hold the connections.
    Listening,
    /// Everything on the test's ports closed.
    Closed,
}

/// What Prometheus must answer besides the counts of the [`Truth`].
#[derive(Clone, Copy)]
pub(super) struct Expected<'a> {
    /// The test's listening ports and their families.
    pub(super) ports: [(u16, &'static str); 2],
    /// The listeners' executable.
    pub(super) exe: &'a str,
    pub(super) version: &'a str,
    pub(super) mode: &'a str,
}

impl Expected<'_> {
    /// Every difference between what Prometheus answers and what is expected.
    pub(super) fn compare(
        &self,
        p: &Prometheus,
        truth: &Truth,
        phase: Phase,
    ) -> Result<Vec<String>> {
        let mut failures = Vec::new();

        let mut got = EventCounts::new();
        for (labels, value) in p.query("portwatch_events_total")? {
            let label = |k: &str| labels.get(k).cloned().unwrap_or_default();
            // The scenario is TCP's; a UDP series is another count.
            if label("proto") != "tcp" {
                continue;
            }
            got.insert(
                (label("event"), label("role"), label("family")),
                value as u64,
            );
        }
        // A series at 0 is as good as none.
        for ((e, r, f), want, have) in differing(&truth.events, &got, true) {
            // While listening, closes may or may not have come yet.
            if phase == Phase::Listening && e == "close" {
                continue;
            }
            failures.push(format!(
                "portwatch_events_total{{event=\"{e}\",role=\"{r}\",family=\"{f}\"}}: expected {}, got {}",
                shown(want), shown(have)
            ));
        }

        let mut got = BTreeMap::new();
        for (labels, value) in p.query("portwatch_connect_failures_total")? {
            got.insert(
                labels.get("reason").cloned().unwrap_or_default(),
                value as u64,
            );
        }
        for (reason, want, have) in differing(&truth.failures, &got, false) {
            failures.push(format!(
                "portwatch_connect_failures_total{{reason=\"{reason}\"}}: expected {}, got {}",
                shown(want),
                shown(have)
            ));
        }

        let listeners = p.query("portwatch_listeners")?;
        for (port, family) in self.ports {
            let port_text = port.to_string();
            let series: Vec<&(BTreeMap<String, String>, f64)> = listeners
                .iter()
                .filter(|(labels, _)| labels.get("port") == Some(&port_text))
                .collect();
            match (phase, series.as_slice()) {
                (Phase::Listening, [(labels, value)]) => {
                    let want: BTreeMap<&str, &str> = [
                        ("port", port_text.as_str()),
                        ("proto", "tcp"),
                        ("family", family),
                        ("exe", self.exe),
                    ]
                    .into();
                    let have: BTreeMap<&str, &str> = ["port", "proto", "family", "exe"]
                        .into_iter()
                        .map(|k| (k, labels.get(k).map_or("(none)", String::as_str)))
                        .collect();
                    if have != want || *value != 1.0 {
                        failures.push(format!(
                            "portwatch_listeners for port {port}: expected {want:?} 1, got {have:?} {value}"
                        ));
                    }
                }
                (Phase::Listening, _) => failures.push(format!(
                    "portwatch_listeners for port {port}: expected one series of value 1 (family {family}, exe {}), got {}",
                    self.exe,
                    show_series(&series)
                )),
                (Phase::Closed, _) => {
                    if series.iter().any(|(_, value)| *value != 0.0) {
                        failures.push(format!(
                            "portwatch_listeners for port {port} after the listener closed: expected none, got {}",
                            show_series(&series)
                        ));
                    }
                }
            }
        }

        let info = p.query("portwatch_build_info")?;
        let matches = |labels: &BTreeMap<String, String>, value: f64| {
            labels.get("version").map(String::as_str) == Some(self.version)
                && labels.get("attach_mode").map(String::as_str) == Some(self.mode)
                && value == 1.0
        };
        if !matches!(info.as_slice(), [(labels, value)] if matches(labels, *value)) {
            let series: Vec<_> = info.iter().collect();
            failures.push(format!(
                "portwatch_build_info: expected one series {{version=\"{}\", attach_mode=\"{}\"}} 1, got {}",
                self.version,
                self.mode,
                show_series(&series)
            ));
        }
        Ok(failures)
    }
}

/// Every key of either count map whose counts differ, with both counts; with
/// `absent_is_zero`, a missing count equals 0.
pub(super) fn differing<'m, K: Ord>(
    want: &'m BTreeMap<K, u64>,
    have: &'m BTreeMap<K, u64>,
    absent_is_zero: bool,
) -> Vec<(&'m K, Option<&'m u64>, Option<&'m u64>)> {
    let keys: BTreeSet<&K> = want.keys().chain(have.keys()).collect();
    keys.into_iter()
        .map(|k| (k, want.get(k), have.get(k)))
        .filter(|(_, w, h)| {
            if absent_is_zero {
                w.copied().unwrap_or(0) != h.copied().unwrap_or(0)
            } else {
                w != h
            }
        })
        .collect()
}

pub(super) fn shown(n: Option<&u64>) -> String {
    n.map_or("none".into(), u64::to_string)
}

pub(super) fn show_series(series: &[&(BTreeMap<String, String>, f64)]) -> String {
    if series.is_empty() {
        return "none".into();
    }
    let shown: Vec<String> = series
        .iter()
        .map(|(labels, value)| format!("{labels:?} {value}"))
        .collect();
    shown.join("; ")
}
