//! The live view, pure: two scrapes in, one frame of text out (no I/O, unit-tested).
//!
//! A frame has four parts, each read from metrics the services already export:
//! - **stages**: events/s and totals per stage (bridge in/out, dedup in/out, projection, conflict
//!   detector, finance export) and each stage's backlog or state (outbox, consumer lag, gaps,
//!   conflict queue, exported and open store-days);
//! - **stores**: per store, events/s into the bridge, sync lag, when last heard from, open gaps and
//!   missing sequence numbers; the stores heard from longest ago first;
//! - **dead letters** per service and reason, total and per second;
//! - a header: the time, how many endpoints answered, and the fleet's status line when given.
//!
//! Rates are the difference of two scrapes over the time between them; a counter that went down
//! (a restarted service) counts from zero.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use super::exposition::Samples;

/// Metric names the view reads (the services' `metrics.rs` define them; the test
/// `every_metric_the_view_reads_is_one_a_service_defines` fails when one is renamed).
pub mod names {
    pub const BRIDGE_IN: &str = "tillstream_store_bridge_messages_in_total";
    pub const BRIDGE_OUT: &str = "tillstream_store_bridge_messages_out_total";
    pub const BRIDGE_OUTBOX_DEPTH: &str = "tillstream_store_bridge_outbox_depth";
    pub const BRIDGE_OUTBOX_OLDEST: &str = "tillstream_store_bridge_outbox_oldest_age_seconds";
    pub const BRIDGE_MQTT_CONNECTED: &str = "tillstream_store_bridge_mqtt_connected";
    pub const BRIDGE_KAFKA_REACHABLE: &str = "tillstream_store_bridge_kafka_reachable";
    pub const BRIDGE_RECONNECTS: &str = "tillstream_store_bridge_mqtt_reconnects_total";
    pub const BRIDGE_SYNC_LAG: &str = "tillstream_store_bridge_sync_lag_seconds";
    pub const BRIDGE_STORE_LAST_SEEN: &str =
        "tillstream_store_bridge_store_last_seen_timestamp_seconds";
    pub const DEDUP_IN: &str = "tillstream_dedup_events_in_total";
    pub const DEDUP_OUT: &str = "tillstream_dedup_events_out_total";
    pub const DEDUP_LAG: &str = "tillstream_dedup_consumer_lag_records";
    pub const DEDUP_OPEN_GAPS: &str = "tillstream_dedup_open_gaps";
    pub const DEDUP_MISSING_SEQS: &str = "tillstream_dedup_missing_seqs";
    pub const DEDUP_OLDEST_GAP: &str = "tillstream_dedup_oldest_gap_age_seconds";
    pub const PROJECTION_APPLIED: &str = "tillstream_inventory_projection_events_applied_total";
    pub const PROJECTION_LAG: &str = "tillstream_inventory_projection_lag_messages";
    pub const DETECTOR_APPLIED: &str = "tillstream_conflict_detector_events_applied_total";
    pub const DETECTOR_LAG: &str = "tillstream_conflict_detector_consumer_lag_records";
    pub const DETECTOR_CONFLICTS: &str = "tillstream_conflict_detector_conflicts_total";
    pub const DETECTOR_QUEUE_OPEN: &str = "tillstream_conflict_detector_queue_open_conflicts";
    pub const DETECTOR_QUEUE_OLDEST: &str =
        "tillstream_conflict_detector_queue_oldest_open_age_seconds";
    pub const DETECTOR_COMPENSATIONS: &str = "tillstream_conflict_detector_compensations_total";
    pub const FINANCE_BOOKED: &str = "tillstream_finance_export_events_booked_total";
    pub const FINANCE_LAG: &str = "tillstream_finance_export_consumer_lag_records";
    pub const FINANCE_EXPORTS: &str = "tillstream_finance_export_exports_total";
    pub const FINANCE_OPEN_DAYS: &str = "tillstream_finance_export_open_store_days";
    pub const FINANCE_MISMATCHED: &str = "tillstream_finance_export_mismatched_device_days";
    /// Every service's dead-letter counter is `tillstream_<service>_dead_letters_total{reason}`.
    pub const DEAD_LETTERS_SUFFIX: &str = "_dead_letters_total";

    /// Every full metric name above.
    pub const ALL: &[&str] = &[
        BRIDGE_IN,
        BRIDGE_OUT,
        BRIDGE_OUTBOX_DEPTH,
        BRIDGE_OUTBOX_OLDEST,
        BRIDGE_MQTT_CONNECTED,
        BRIDGE_KAFKA_REACHABLE,
        BRIDGE_RECONNECTS,
        BRIDGE_SYNC_LAG,
        BRIDGE_STORE_LAST_SEEN,
        DEDUP_IN,
        DEDUP_OUT,
        DEDUP_LAG,
        DEDUP_OPEN_GAPS,
        DEDUP_MISSING_SEQS,
        DEDUP_OLDEST_GAP,
        PROJECTION_APPLIED,
        PROJECTION_LAG,
        DETECTOR_APPLIED,
        DETECTOR_LAG,
        DETECTOR_CONFLICTS,
        DETECTOR_QUEUE_OPEN,
        DETECTOR_QUEUE_OLDEST,
        DETECTOR_COMPENSATIONS,
        FINANCE_BOOKED,
        FINANCE_LAG,
        FINANCE_EXPORTS,
        FINANCE_OPEN_DAYS,
        FINANCE_MISMATCHED,
    ];
}
use names::*;

/// One endpoint's answer to a scrape.
#[derive(Debug, Clone, PartialEq)]
pub struct Endpoint {
    pub url: String,
    /// `None` when it answered; why not otherwise (refused, timed out, HTTP status).
    pub error: Option<String>,
}

/// What one frame is drawn from.
#[derive(Debug, Clone)]
pub struct Inputs<'a> {
    /// The previous scrape (rates are measured against it).
    pub previous: &'a Samples,
    pub current: &'a Samples,
    /// Seconds between the two scrapes.
    pub elapsed_s: f64,
    /// Wall clock of the current scrape, epoch seconds (for "last seen" ages).
    pub now_epoch_s: f64,
    /// Wall clock as the header shows it (UTC `HH:MM:SS`).
    pub clock: String,
    pub endpoints: &'a [Endpoint],
    /// The fleet's status line (`scripts/run` writes what the simulator and the oracle are doing).
    pub fleet_status: Option<String>,
    /// How many stores the store table shows at most.
    pub store_rows: usize,
}

/// The frame as text, ready to print (lines end with `\n`, no terminal control codes).
pub fn render(i: &Inputs<'_>) -> String {
    let mut out = String::new();
    let up = i.endpoints.iter().filter(|e| e.error.is_none()).count();
    let _ = writeln!(
        out,
        "tillstream live view  {}  {}/{} services answering  (Ctrl-C stops)",
        i.clock,
        up,
        i.endpoints.len()
    );
    for e in i.endpoints.iter().filter(|e| e.error.is_some()) {
        let _ = writeln!(
            out,
            "  not answering: {} ({})",
            e.url,
            e.error.as_deref().unwrap_or("")
        );
    }
    if let Some(status) = &i.fleet_status {
        let _ = writeln!(out, "fleet: {status}");
    }
    out.push('\n');
    stages(i, &mut out);
    out.push('\n');
    stores(i, &mut out);
    out.push('\n');
    dead_letters(i, &mut out);
    out
}

/// Per second, from two readings of a counter (a counter that went down restarted from zero).
fn rate(previous: f64, current: f64, elapsed_s: f64) -> f64 {
    if elapsed_s <= 0.0 {
        return 0.0;
    }
    let delta = if current >= previous {
        current - previous
    } else {
        current
    };
    delta / elapsed_s
}

fn counter_rate(i: &Inputs<'_>, name: &str) -> f64 {
    rate(i.previous.sum(name), i.current.sum(name), i.elapsed_s)
}

fn stages(i: &Inputs<'_>, out: &mut String) {
    let c = i.current;
    let _ = writeln!(
        out,
        "{:<22} {:>9} {:>12}  BACKLOG / STATE",
        "STAGE", "EVENTS/S", "TOTAL"
    );
    let mut row = |stage: &str, counter: &str, state: String| {
        let (per_s, total) = if c.has(counter) {
            (count(counter_rate(i, counter)), count(c.sum(counter)))
        } else {
            ("-".to_string(), "-".to_string())
        };
        let line = format!("{stage:<22} {per_s:>9} {total:>12}  {state}");
        let _ = writeln!(out, "{}", line.trim_end());
    };

    let bridge_state = if c.has(BRIDGE_OUTBOX_DEPTH) {
        format!(
            "outbox {} (oldest {}) · mqtt {} · kafka {} · {} reconnects",
            count(c.sum(BRIDGE_OUTBOX_DEPTH)),
            duration(c.max(BRIDGE_OUTBOX_OLDEST).unwrap_or(0.0)),
            up_down(c.max(BRIDGE_MQTT_CONNECTED)),
            up_down(c.max(BRIDGE_KAFKA_REACHABLE)),
            count(c.sum(BRIDGE_RECONNECTS)),
        )
    } else {
        "no figures".to_string()
    };
    row("bridge  mqtt in", BRIDGE_IN, bridge_state);
    row("bridge  kafka out", BRIDGE_OUT, String::new());
    let gaps = format!(
        "lag {} · gaps open {} (missing {}, oldest {})",
        lag(c, DEDUP_LAG),
        count(c.sum(DEDUP_OPEN_GAPS)),
        count(c.sum(DEDUP_MISSING_SEQS)),
        duration(c.max(DEDUP_OLDEST_GAP).unwrap_or(0.0)),
    );
    row("dedup   in", DEDUP_IN, gaps);
    row("dedup   out (unique)", DEDUP_OUT, String::new());
    row(
        "projection applied",
        PROJECTION_APPLIED,
        format!("lag {}", lag(c, PROJECTION_LAG)),
    );
    row(
        "conflicts applied",
        DETECTOR_APPLIED,
        format!(
            "lag {} · conflicts {} · review queue {} (oldest {}) · compensations {}",
            lag(c, DETECTOR_LAG),
            count(c.sum(DETECTOR_CONFLICTS)),
            count(c.sum(DETECTOR_QUEUE_OPEN)),
            duration(c.max(DETECTOR_QUEUE_OLDEST).unwrap_or(0.0)),
            count(c.sum(DETECTOR_COMPENSATIONS)),
        ),
    );
    row(
        "finance booked",
        FINANCE_BOOKED,
        format!(
            "lag {} · exports {} · open store-days {} · mismatched device-days {}",
            lag(c, FINANCE_LAG),
            count(c.sum(FINANCE_EXPORTS)),
            count(c.sum(FINANCE_OPEN_DAYS)),
            count(c.sum(FINANCE_MISMATCHED)),
        ),
    );
}

/// One store's row.
#[derive(Debug, Clone, PartialEq)]
struct StoreRow {
    store: String,
    per_s: f64,
    total: f64,
    sync_lag_s: Option<f64>,
    last_seen_age_s: Option<f64>,
    open_gaps: f64,
    missing: f64,
}

fn store_rows(i: &Inputs<'_>) -> Vec<StoreRow> {
    let c = i.current;
    let before = i.previous.sum_by(BRIDGE_IN, "store");
    let totals = c.sum_by(BRIDGE_IN, "store");
    let lags = c.sum_by(BRIDGE_SYNC_LAG, "store");
    let seen = c.sum_by(BRIDGE_STORE_LAST_SEEN, "store");
    let gaps = c.sum_by(DEDUP_OPEN_GAPS, "store");
    let missing = c.sum_by(DEDUP_MISSING_SEQS, "store");
    let stores: BTreeSet<&String> = totals
        .keys()
        .chain(seen.keys())
        .chain(gaps.keys())
        .filter(|s| !s.is_empty())
        .collect();
    let mut rows: Vec<StoreRow> = stores
        .into_iter()
        .map(|s| {
            let total = totals.get(s).copied().unwrap_or(0.0);
            StoreRow {
                store: s.clone(),
                per_s: rate(before.get(s).copied().unwrap_or(0.0), total, i.elapsed_s),
                total,
                sync_lag_s: lags.get(s).copied(),
                last_seen_age_s: seen.get(s).map(|t| (i.now_epoch_s - t).max(0.0)),
                open_gaps: gaps.get(s).copied().unwrap_or(0.0),
                missing: missing.get(s).copied().unwrap_or(0.0),
            }
        })
        .collect();
    // Worst first: the store heard from longest ago (never heard from is worst), then the one
    // missing the most sequence numbers.
    rows.sort_by(|a, b| {
        let age = |r: &StoreRow| r.last_seen_age_s.unwrap_or(f64::INFINITY);
        age(b)
            .total_cmp(&age(a))
            .then(b.missing.total_cmp(&a.missing))
            .then(a.store.cmp(&b.store))
    });
    rows
}

fn stores(i: &Inputs<'_>, out: &mut String) {
    let rows = store_rows(i);
    let shown = rows.len().min(i.store_rows);
    let _ = writeln!(
        out,
        "STORES  {} heard from{}",
        rows.len(),
        if shown < rows.len() {
            format!(", the {shown} heard from longest ago")
        } else {
            String::new()
        }
    );
    let _ = writeln!(
        out,
        "{:<10} {:>9} {:>12} {:>10} {:>10} {:>6} {:>8}",
        "STORE", "EVENTS/S", "TOTAL", "SYNC LAG", "LAST SEEN", "GAPS", "MISSING"
    );
    for r in rows.iter().take(shown) {
        let _ = writeln!(
            out,
            "{:<10} {:>9} {:>12} {:>10} {:>10} {:>6} {:>8}",
            r.store,
            count(r.per_s),
            count(r.total),
            r.sync_lag_s.map(duration).unwrap_or_else(|| "-".into()),
            r.last_seen_age_s
                .map(|a| format!("{} ago", duration(a)))
                .unwrap_or_else(|| "-".into()),
            count(r.open_gaps),
            count(r.missing),
        );
    }
}

fn dead_letters(i: &Inputs<'_>, out: &mut String) {
    // (service, reason) → (total now, total before).
    let mut by: BTreeMap<(String, String), (f64, f64)> = BTreeMap::new();
    for (samples, now) in [(i.current, true), (i.previous, false)] {
        for s in &samples.samples {
            let Some(service) = s
                .name
                .strip_prefix("tillstream_")
                .and_then(|n| n.strip_suffix(DEAD_LETTERS_SUFFIX))
            else {
                continue;
            };
            let e = by
                .entry((service.replace('_', "-"), s.label("reason").to_string()))
                .or_default();
            if now {
                e.0 += s.value;
            } else {
                e.1 += s.value;
            }
        }
    }
    by.retain(|_, (now, _)| *now > 0.0);
    let total: f64 = by.values().map(|(now, _)| now).sum();
    let _ = writeln!(out, "DEAD LETTERS  {} in all", count(total));
    if by.is_empty() {
        return;
    }
    let _ = writeln!(
        out,
        "{:<22} {:<28} {:>10} {:>8}",
        "SERVICE", "REASON", "TOTAL", "PER S"
    );
    for ((service, reason), (now, before)) in &by {
        let reason = if reason.is_empty() { "-" } else { reason };
        let _ = writeln!(
            out,
            "{:<22} {:<28} {:>10} {:>8}",
            service,
            reason,
            count(*now),
            count(rate(*before, *now, i.elapsed_s))
        );
    }
}

fn lag(c: &Samples, name: &str) -> String {
    if c.has(name) {
        count(c.sum(name))
    } else {
        "-".to_string()
    }
}

fn up_down(v: Option<f64>) -> &'static str {
    match v {
        Some(v) if v >= 1.0 => "up",
        Some(_) => "DOWN",
        None => "?",
    }
}

/// A count with thousands separators (rates rounded to whole events).
fn count(v: f64) -> String {
    if !v.is_finite() {
        return "-".to_string();
    }
    let n = v.round() as i64;
    let digits = n.unsigned_abs().to_string();
    let mut out = String::new();
    for (k, ch) in digits.chars().enumerate() {
        if k > 0 && (digits.len() - k).is_multiple_of(3) {
            out.push(',');
        }
        out.push(ch);
    }
    if n < 0 { format!("-{out}") } else { out }
}

/// A duration the way an operator reads it: `850ms`, `42s`, `7m05s`, `3h12m`, `2d04h`.
fn duration(s: f64) -> String {
    if !s.is_finite() || s < 0.0 {
        return "-".to_string();
    }
    if s < 1.0 {
        return format!("{}ms", (s * 1000.0).round() as u64);
    }
    let t = s.round() as u64;
    match t {
        0..60 => format!("{t}s"),
        60..3_600 => format!("{}m{:02}s", t / 60, t % 60),
        3_600..86_400 => format!("{}h{:02}m", t / 3_600, t % 3_600 / 60),
        _ => format!("{}d{:02}h", t / 86_400, t % 86_400 / 3_600),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn samples(text: &str) -> Samples {
        let mut s = Samples::default();
        s.add_exposition(text);
        s
    }

    const BEFORE: &str = r#"
tillstream_store_bridge_messages_in_total{kind="OrderPlaced",store="s000"} 1000
tillstream_store_bridge_messages_in_total{kind="OrderPlaced",store="s001"} 500
tillstream_store_bridge_messages_out_total{kind="OrderPlaced",store="s000"} 1400
tillstream_dedup_events_in_total 1300
tillstream_dedup_events_out_total 1200
tillstream_dedup_dead_letters_total{reason="not_framed"} 2
tillstream_store_bridge_dead_letters_total{reason="out_of_bounds"} 1
"#;
    const AFTER: &str = r#"
tillstream_store_bridge_messages_in_total{kind="OrderPlaced",store="s000"} 3000
tillstream_store_bridge_messages_in_total{kind="OrderPlaced",store="s001"} 500
tillstream_store_bridge_messages_in_total{kind="OrderPlaced",store="s002"} 40
tillstream_store_bridge_messages_out_total{kind="OrderPlaced",store="s000"} 3400
tillstream_store_bridge_outbox_depth 150
tillstream_store_bridge_outbox_oldest_age_seconds 3.2
tillstream_store_bridge_mqtt_connected 1
tillstream_store_bridge_kafka_reachable 0
tillstream_store_bridge_sync_lag_seconds{store="s000"} 0.4
tillstream_store_bridge_sync_lag_seconds{store="s001"} 93784
tillstream_store_bridge_store_last_seen_timestamp_seconds{store="s000"} 999
tillstream_store_bridge_store_last_seen_timestamp_seconds{store="s001"} 400
tillstream_dedup_events_in_total 3300
tillstream_dedup_events_out_total 3000
tillstream_dedup_consumer_lag_records{topic="t",partition="0"} 70
tillstream_dedup_consumer_lag_records{topic="t",partition="1"} 30
tillstream_dedup_open_gaps{store="s001"} 2
tillstream_dedup_missing_seqs{store="s001"} 17
tillstream_dedup_oldest_gap_age_seconds{store="s001"} 125
tillstream_dedup_dead_letters_total{reason="not_framed"} 2
tillstream_store_bridge_dead_letters_total{reason="out_of_bounds"} 11
tillstream_finance_export_exports_total 4
tillstream_finance_export_open_store_days 1
"#;

    fn frame(before: &Samples, after: &Samples, endpoints: &[Endpoint], rows: usize) -> String {
        render(&Inputs {
            previous: before,
            current: after,
            elapsed_s: 2.0,
            now_epoch_s: 1000.0,
            clock: "12:00:00".into(),
            endpoints,
            fleet_status: Some("simulating 20,000 events".into()),
            store_rows: rows,
        })
    }

    #[test]
    fn rates_are_the_difference_over_the_interval_and_a_restart_counts_from_zero() {
        assert_eq!(rate(100.0, 300.0, 2.0), 100.0);
        assert_eq!(rate(300.0, 40.0, 2.0), 20.0);
        assert_eq!(rate(1.0, 5.0, 0.0), 0.0);
    }

    #[test]
    fn a_frame_shows_each_stage_each_store_and_each_dead_letter_reason() {
        let endpoints = [
            Endpoint {
                url: "http://a/metrics".into(),
                error: None,
            },
            Endpoint {
                url: "http://b/metrics".into(),
                error: Some("connection refused".into()),
            },
        ];
        let text = frame(&samples(BEFORE), &samples(AFTER), &endpoints, 10);
        let line = |start: &str| {
            text.lines()
                .find(|l| l.starts_with(start))
                .unwrap_or_else(|| panic!("no line starting {start:?} in\n{text}"))
                .split_whitespace()
                .collect::<Vec<_>>()
                .join(" ")
        };
        assert!(text.contains("1/2 services answering"), "{text}");
        assert!(
            text.contains("not answering: http://b/metrics (connection refused)"),
            "{text}"
        );
        assert!(text.contains("fleet: simulating 20,000 events"), "{text}");
        assert_eq!(
            line("bridge  mqtt in"),
            "bridge mqtt in 1,020 3,540 outbox 150 (oldest 3s) · mqtt up · kafka DOWN · 0 reconnects"
        );
        assert_eq!(line("bridge  kafka out"), "bridge kafka out 1,000 3,400");
        assert_eq!(
            line("dedup   in"),
            "dedup in 1,000 3,300 lag 100 · gaps open 2 (missing 17, oldest 2m05s)"
        );
        // A service that has not emitted a metric yet shows a dash, not a made-up zero.
        assert_eq!(line("projection applied"), "projection applied - - lag -");
        assert!(
            line("finance booked")
                .ends_with("exports 4 · open store-days 1 · mismatched device-days 0")
        );
        // Stores: never heard from first (s002 has events but no last-seen yet), then the oldest.
        let order: Vec<&str> = text
            .lines()
            .skip_while(|l| !l.starts_with("STORE "))
            .skip(1)
            .take_while(|l| !l.is_empty())
            .map(|l| l.split_whitespace().next().unwrap())
            .collect();
        assert_eq!(order, ["s002", "s001", "s000"], "{text}");
        assert_eq!(line("s001"), "s001 0 500 1d02h 10m00s ago 2 17");
        assert_eq!(line("s000"), "s000 1,000 3,000 400ms 1s ago 0 0");
        assert_eq!(line("DEAD LETTERS"), "DEAD LETTERS 13 in all");
        assert_eq!(line("store-bridge"), "store-bridge out_of_bounds 11 5");
        let normalized: Vec<String> = text
            .lines()
            .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
            .collect();
        assert!(
            normalized.contains(&"dedup not_framed 2 0".to_string()),
            "{text}"
        );
    }

    #[test]
    fn the_store_table_keeps_to_its_rows() {
        let text = frame(&samples(BEFORE), &samples(AFTER), &[], 1);
        assert!(
            text.contains("STORES  3 heard from, the 1 heard from longest ago"),
            "{text}"
        );
        assert!(text.contains("\ns002 "), "{text}");
        assert!(!text.contains("\ns000 "), "{text}");
    }

    #[test]
    fn every_metric_the_view_reads_is_one_a_service_defines() {
        let services = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let mut defined = String::new();
        for entry in std::fs::read_dir(&services).unwrap() {
            let metrics = entry.unwrap().path().join("src/metrics.rs");
            if let Ok(text) = std::fs::read_to_string(&metrics) {
                defined.push_str(&text);
            }
        }
        assert!(
            defined.contains("tillstream_store_bridge_"),
            "no services' metrics.rs read"
        );
        for name in names::ALL {
            assert!(
                defined.contains(&format!("\"{name}\"")),
                "{name} is defined by no service"
            );
        }
    }

    #[test]
    fn durations_and_counts_read_like_an_operator_writes_them() {
        assert_eq!(duration(0.25), "250ms");
        assert_eq!(duration(42.4), "42s");
        assert_eq!(duration(425.0), "7m05s");
        assert_eq!(duration(3.0 * 3600.0 + 720.0), "3h12m");
        assert_eq!(duration(2.0 * 86400.0 + 4.0 * 3600.0), "2d04h");
        assert_eq!(count(1234567.4), "1,234,567");
        assert_eq!(count(-1000.0), "-1,000");
        assert_eq!(count(999.0), "999");
    }
}
