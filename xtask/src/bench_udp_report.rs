//! The UDP rows' tables and the verdicts against issue #14's targets.
use super::{med, sum, Load, Run, FLOOR, FLOOR_FACTOR, FLOWS, NONE, PW_UDP, SOCKETS, TARGET_RATE};
use crate::bench::median;

/// The kernel side's cost per item of `runs` over `none`, ns: the median of the
/// rounds' differences, and their range.
pub(super) fn cost(none: &[Run], runs: &[Run]) -> (f64, f64, f64) {
    let d: Vec<f64> = runs
        .iter()
        .zip(none)
        .map(|(a, b)| a.sys_ns - b.sys_ns)
        .collect();
    let lo = d.iter().copied().fold(f64::MAX, f64::min);
    let hi = d.iter().copied().fold(f64::MIN, f64::max);
    (median(d), lo, hi)
}

fn events_cell(runs: &[Run], expected: u64) -> String {
    let connects = runs.iter().map(|r| r.events[0]);
    let (Some(lo), Some(hi)) = (connects.clone().min(), connects.max()) else {
        return "-".into();
    };
    let mut s = match (lo == hi, lo == expected) {
        (true, true) => format!("{lo} every run"),
        (true, false) => format!("{lo} every run (not {expected})"),
        _ => format!("{lo} to {hi} (not {expected})"),
    };
    let (closes, other) = (sum(runs, |r| r.events[1]), sum(runs, |r| r.events[2]));
    if closes > 0 {
        s.push_str(&format!(" (+{closes} closes)"));
    }
    if other > 0 {
        s.push_str(&format!(", {other} other"));
    }
    s
}

pub(super) fn render(load: &Load, results: &[Vec<Run>], floor_per_call: Option<f64>) -> String {
    let none = &results[0];
    let base_rate = med(none, |r| r.rate);
    let floor = match floor_per_call {
        Some(f) if load.unit == "datagram" => f / load.batch as f64,
        _ => cost(none, &results[1]).0,
    };
    let unit = load.unit;
    let mut s = format!(
        "\n{}.\n\n| configuration | {unit}s/s | rate vs no tracer | system CPU ns per {unit} | kernel-side cost, ns per {unit} | cost vs floor's | flow events | lost | skipped | tracer CPU ms per run |\n| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n",
        load.title
    );
    for (config, runs) in load.configs.iter().zip(results) {
        let rate = med(runs, |r| r.rate);
        let (c, lo, hi) = cost(none, runs);
        let traced = *config != NONE;
        let pw = traced && *config != FLOOR;
        let cell = |show: bool, text: String| if show { text } else { "-".into() };
        let tracer_ms = runs.iter().map(|r| r.tracer_cpu).sum::<f64>() * 1000.0;
        s.push_str(&format!(
            "| {config} | {rate:.0} | {:.2} | {:.0} | {} | {} | {} | {} | {} | {} |\n",
            rate / base_rate,
            med(runs, |r| r.sys_ns),
            cell(traced, format!("{c:.0} ({lo:.0} to {hi:.0})")),
            cell(pw && floor > 0.0, format!("{:.1}x", c / floor)),
            cell(pw, events_cell(runs, load.events)),
            cell(traced, sum(runs, |r| r.lost).to_string()),
            cell(traced, sum(runs, |r| r.skipped).to_string()),
            cell(traced, format!("{:.1}", tracer_ms / runs.len() as f64)),
        ));
    }
    s
}

/// The targets: the rate of the first table; exact events in every
/// table; the cost per call of portwatch in batches of 8 (`pw_per_call`) against
/// the floor's on empty calls, and the first table's own.
pub(super) fn targets(
    loads: &[Load],
    results: &[Vec<Vec<Run>>],
    floor_per_call: Option<f64>,
    pw_per_call: Option<f64>,
) -> String {
    let (load, none, pw) = (&loads[0], &results[0][0], &results[0][2]);
    let direct = (cost(none, &results[0][1]).0, cost(none, pw).0);
    let rate = med(pw, |r| r.rate);
    let max = med(none, |r| r.rate);
    let met = |ok: bool| if ok { "met" } else { "**not met**" };
    // Every portwatch run of every table: exactly its events, nothing lost.
    let (mut runs, mut wrong) = (0, Vec::new());
    for (l, results) in loads.iter().zip(results) {
        for (config, r) in l.configs.iter().zip(results).skip(2) {
            runs += r.len();
            let (lost, skipped) = (sum(r, |r| r.lost), sum(r, |r| r.skipped));
            if r.iter().any(|r| r.events[0] != l.events || r.events[2] > 0) || lost + skipped > 0 {
                wrong.push(format!(
                    "{config} ({} {}s): {}, {lost} lost, {skipped} skipped",
                    l.events,
                    l.unit,
                    events_cell(r, l.events),
                ));
            }
        }
    }
    let events = if wrong.is_empty() {
        format!("met: each of {runs} portwatch runs reported exactly one event per flow ({FLOWS}, the empty sends' 1, the TCP sends' none) or per short-lived socket ({SOCKETS}); 0 lost, 0 skipped")
    } else {
        format!("**not met**: {}", wrong.join("; "))
    };
    let batch = load.batch as f64;
    let in_batch = format!(
        "In batches of {}, measured directly: {:.0} ns per datagram against the floor's {:.0}, both within this machine's noise",
        load.batch, direct.1, direct.0
    );
    let cost_verdict = match (floor_per_call, pw_per_call) {
        (Some(f), Some(p)) if f > 0.0 => format!(
            "{}: per sendmmsg() call {p:.0} ns (in batches of 8; portwatch looks at the first datagram of a call, so any batch, {} too, costs it the same) against the floor's {f:.0} (measured on empty calls), {:.1}x; per datagram in batches of {}, {:.0} ns against {:.1}. {in_batch}",
            met(p <= FLOOR_FACTOR * f),
            load.batch,
            p / f,
            load.batch,
            p / batch,
            f / batch,
        ),
        _ => format!("cannot tell. {in_batch}"),
    };
    format!(
        "\nAgainst the UDP targets (issue #14; {PW_UDP} unless named):\n\n| target | result |\n| --- | --- |\n| {TARGET_RATE:.0} datagrams/s over {FLOWS} flows, or this machine's maximum | {}: {rate:.0} datagrams/s traced, {max:.0} with no tracer (this machine's maximum for the first table's load) |\n| exactly one event per flow (per short-lived socket), zero loss | {events} |\n| kernel-side cost per datagram within {FLOOR_FACTOR}x the empty programs' on the same hooks | {cost_verdict} |\n",
        if rate >= TARGET_RATE {
            "met"
        } else {
            "not reached on this machine"
        },
    )
}
