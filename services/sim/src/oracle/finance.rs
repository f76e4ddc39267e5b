//! The finance export's rows of the oracle, from its files as an independent reader read them:
//! the totals of every store-day and every device-day (sales and refunds booked; what each till's
//! day close declared), every export balanced and no ledger line twice, the reconciliation outcome
//! of every device-day (exactly the device-days that lost a sale or refund mismatch), and the late
//! tills' events delivered as adjustment lines. Pure (observations in, rows out).

use std::collections::{BTreeMap, BTreeSet};

use super::report::CheckResult;
use super::{FinanceObserved, ObservedRecon};
use crate::truth::{DayTotals, DeviceDayTotals, Truth};

const ROWS: [&str; 5] = [
    "finance: store-day totals",
    "finance: device-day totals",
    "finance: ledger balanced, once",
    "finance: reconciliation",
    "finance: late events adjusted",
];

/// Days since 1970-01-01 as an ISO date (the files' `business_date`), by the civil calendar
/// (written here, not taken from the exporter).
pub fn iso_date(days: i32) -> String {
    let z = i64::from(days) + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}")
}

/// The rows of a run whose finance export was not checked.
pub(crate) fn not_checked(truth: &Truth) -> Vec<CheckResult> {
    let device_days: usize = truth.device_days.values().map(BTreeMap::len).sum();
    let store_days: usize = truth.days.values().map(BTreeMap::len).sum();
    let expected = [
        store_days.to_string(),
        device_days.to_string(),
        "-".into(),
        format!("{} mismatched", mismatched(truth).len()),
        truth.late_events.len().to_string(),
    ];
    ROWS.iter()
        .zip(expected)
        .map(|(name, e)| super::compare::not_checked(name, e))
        .collect()
}

/// `store|date|device` of every device-day the truth expects to mismatch.
fn mismatched(truth: &Truth) -> BTreeSet<String> {
    device_days(truth)
        .filter(|(_, d)| d.expected_status == "mismatched")
        .map(|(k, _)| k)
        .collect()
}

fn device_days(truth: &Truth) -> impl Iterator<Item = (String, &crate::truth::DeviceDay)> {
    truth.device_days.iter().flat_map(|(device, days)| {
        days.iter()
            .map(move |(date, d)| (format!("{}|{}|{device}", d.store_id, iso_date(*date)), d))
    })
}

/// The books of one device-day (or a whole store-day) as the files hold them.
#[derive(Debug, Default)]
struct Books {
    booked: DeviceDayTotals,
    /// Tenders credited by the till's day close.
    declared_tenders: BTreeMap<String, i64>,
}

/// Sums the files' lines per `store|date|device` (and per `store|date` under the device `*`).
fn books(f: &FinanceObserved) -> BTreeMap<String, Books> {
    let mut out: BTreeMap<String, Books> = BTreeMap::new();
    for (key, (debit, credit)) in &f.lines {
        let parts: Vec<&str> = key.split('|').collect();
        let [store, date, device, source, role, tender] = parts[..] else {
            continue;
        };
        for who in [device, "*"] {
            let b = out.entry(format!("{store}|{date}|{who}")).or_default();
            let t = &mut b.booked;
            match (source, role) {
                ("sale", "revenue") => t.gross += credit - debit,
                ("sale", "discounts") => t.discounts += debit - credit,
                ("sale", "tax_payable") => t.tax += credit - debit,
                ("sale", "tender_clearing") => {
                    t.net += debit - credit;
                    *t.tenders.entry(tender.to_string()).or_default() += debit - credit;
                }
                ("refund", "refunds" | "tax_payable") => t.refunded += debit - credit,
                ("day_close", "tender_clearing") => {
                    *b.declared_tenders.entry(tender.to_string()).or_default() += credit - debit;
                }
                _ => {}
            }
        }
    }
    for (key, n) in &f.events {
        let parts: Vec<&str> = key.split('|').collect();
        let [store, date, device, source] = parts[..] else {
            continue;
        };
        for who in [device, "*"] {
            let b = out.entry(format!("{store}|{date}|{who}")).or_default();
            match source {
                "sale" => b.booked.orders += n,
                "refund" => b.booked.refunds += n,
                _ => {}
            }
        }
    }
    out
}

fn day_totals(t: &DeviceDayTotals) -> DayTotals {
    DayTotals {
        orders: t.orders,
        gross: t.gross,
        discounts: t.discounts,
        tax: t.tax,
        net: t.net,
        refunds: t.refunds,
        refunded: t.refunded,
    }
}

fn non_zero(m: &BTreeMap<String, i64>) -> BTreeMap<String, i64> {
    m.iter()
        .filter(|(_, v)| **v != 0)
        .map(|(k, v)| (k.clone(), *v))
        .collect()
}

/// The finance rows.
pub(crate) fn checks(truth: &Truth, f: &FinanceObserved) -> Vec<CheckResult> {
    let books = books(f);
    let mut rows = Vec::new();

    // Store-day totals (sales and refunds as booked), and a day export for every store-day.
    let mut diffs = Vec::new();
    let mut expected_days = BTreeSet::new();
    for (store, days) in &truth.days {
        for (date, want) in days {
            let iso = iso_date(*date);
            expected_days.insert(format!("{store}|{iso}"));
            let got = books
                .get(&format!("{store}|{iso}|*"))
                .map(|b| day_totals(&b.booked))
                .unwrap_or_default();
            if got != *want {
                diffs.push(format!(
                    "{store} {iso}: expected {want:?}, files hold {got:?}"
                ));
            }
            let export = format!("{store}/{iso}");
            if f.exports.get(&export).is_none_or(|e| e.kind != "day") {
                diffs.push(format!("{store} {iso}: no day export {export}"));
            }
        }
    }
    for (key, b) in books.iter().filter(|(k, _)| k.ends_with("|*")) {
        let day = key.trim_end_matches("|*");
        if !expected_days.contains(day) && day_totals(&b.booked) != DayTotals::default() {
            diffs.push(format!(
                "{day}: sales or refunds booked for a day the fleet never traded"
            ));
        }
    }
    let observed_days = books
        .keys()
        .filter(|k| k.ends_with("|*") && expected_days.contains(k.trim_end_matches("|*")))
        .count();
    rows.push(CheckResult::checked(
        ROWS[0],
        expected_days.len().to_string(),
        observed_days.to_string(),
        diffs,
    ));

    // Device-day totals: booked as published, tenders as declared by the till.
    let mut diffs = Vec::new();
    let mut seen = 0;
    for (key, d) in device_days(truth) {
        let empty = Books::default();
        let b = match books.get(&key) {
            Some(b) => {
                seen += 1;
                b
            }
            // A close with zero figures and nothing booked has no lines.
            None => &empty,
        };
        let mut got = b.booked.clone();
        got.tenders = non_zero(&got.tenders);
        let mut want = d.booked.clone();
        want.tenders = non_zero(&want.tenders);
        if got != want {
            diffs.push(format!(
                "{key} booked: expected {want:?}, files hold {got:?}"
            ));
        }
        let declared = d.declared.as_ref().map(|c| non_zero(&c.tenders));
        let got_declared = non_zero(&b.declared_tenders);
        if declared.as_ref().unwrap_or(&BTreeMap::new()) != &got_declared {
            diffs.push(format!(
                "{key} day-close tenders: the till declared {declared:?}, files hold {got_declared:?}"
            ));
        }
    }
    let expected_device_days: usize = truth.device_days.values().map(BTreeMap::len).sum();
    rows.push(CheckResult::checked(
        ROWS[1],
        expected_device_days.to_string(),
        seen.to_string(),
        diffs,
    ));

    // Every export balanced per currency (as read from Parquet); every line once.
    let mut diffs = Vec::new();
    for (id, e) in &f.exports {
        for (currency, (debit, credit)) in &e.totals {
            if debit != credit {
                diffs.push(format!(
                    "{id}: {currency} debits {debit} != credits {credit}"
                ));
            }
        }
    }
    for line in &f.duplicate_lines {
        diffs.push(format!("ledger line {line} is in the files more than once"));
    }
    let rows_total: u64 = f.exports.values().map(|e| e.rows).sum();
    rows.push(CheckResult::checked(
        ROWS[2],
        "debit = credit".into(),
        format!("{} files, {rows_total} lines", f.exports.len()),
        diffs,
    ));

    // Reconciliation: each device-day's latest record has the expected status; a mismatch names
    // the till's declared figures and the ledger's.
    let mut diffs = Vec::new();
    let mut observed_mismatched = 0;
    let mut keys = BTreeSet::new();
    for (key, d) in device_days(truth) {
        keys.insert(key.clone());
        let Some(r) = f.recon.get(&key) else {
            diffs.push(format!("{key}: no reconciliation record"));
            continue;
        };
        if r.status == "mismatched" {
            observed_mismatched += 1;
        }
        if r.status != d.expected_status {
            diffs.push(format!(
                "{key}: {} ({}), expected {}",
                r.status, r.differences, d.expected_status
            ));
            continue;
        }
        if let Some(declared) = &d.declared {
            diffs.extend(check_differences(&key, r, declared, &d.booked));
        }
    }
    for (key, r) in f.recon.iter().filter(|(k, _)| !keys.contains(*k)) {
        if r.status != "matched" {
            diffs.push(format!(
                "{key}: {} for a device-day the fleet never had",
                r.status
            ));
        }
    }
    rows.push(CheckResult::checked(
        ROWS[3],
        format!("{} mismatched", mismatched(truth).len()),
        format!("{observed_mismatched} mismatched"),
        diffs,
    ));

    // The late tills' events: adjustment lines only, when the run held them back.
    if !truth.late_held_back {
        rows.push(super::compare::not_checked(
            ROWS[4],
            format!("{} (not held back)", truth.late_events.len()),
        ));
    } else {
        let mut diffs = Vec::new();
        let mut adjusted = 0;
        for id in &truth.late_events {
            match f.event_types.get(id) {
                None => diffs.push(format!("late event {id} is in no export")),
                Some(types) if types.len() == 1 && types.contains("adjustment") => adjusted += 1,
                Some(types) => diffs.push(format!(
                    "late event {id} delivered as {types:?}, expected adjustment lines only"
                )),
            }
        }
        // Other events can be late too: a store-day closes once every till that traded on it so far
        // closed it, before a till still replaying has booked anything (its lines then adjust).
        let others = f
            .event_types
            .iter()
            .filter(|(id, t)| t.contains("adjustment") && !truth.late_events.contains(*id))
            .count();
        rows.push(CheckResult::checked(
            ROWS[4],
            truth.late_events.len().to_string(),
            if others > 0 {
                format!("{adjusted} (+{others} other)")
            } else {
                adjusted.to_string()
            },
            diffs,
        ));
    }
    rows
}

/// A mismatched record's differences against the truth: each names the till's declared figure
/// and the ledger's (what reached the broker); a matched record names none.
fn check_differences(
    key: &str,
    r: &ObservedRecon,
    declared: &DeviceDayTotals,
    booked: &DeviceDayTotals,
) -> Vec<String> {
    let figures = |t: &DeviceDayTotals| {
        let mut m: BTreeMap<String, i64> = BTreeMap::from([
            ("order_count".to_string(), t.orders as i64),
            ("refund_count".to_string(), t.refunds as i64),
            ("gross".to_string(), t.gross),
            ("discounts".to_string(), t.discounts),
            ("tax".to_string(), t.tax),
            ("net".to_string(), t.net),
            ("refunds".to_string(), t.refunded),
        ]);
        for (tender, v) in &t.tenders {
            m.insert(format!("tender_{}", tender.to_ascii_lowercase()), *v);
        }
        m
    };
    let (want_device, want_ledger) = (figures(declared), figures(booked));
    let mut expected: BTreeMap<String, (i64, i64)> = BTreeMap::new();
    for name in want_device.keys().chain(want_ledger.keys()) {
        let (d, l) = (
            want_device.get(name).copied().unwrap_or(0),
            want_ledger.get(name).copied().unwrap_or(0),
        );
        if d != l {
            expected.insert(name.clone(), (d, l));
        }
    }
    let mut observed: BTreeMap<String, (i64, i64)> = BTreeMap::new();
    for part in r.differences.split("; ").filter(|p| !p.is_empty()) {
        let mut it = part.split(' ');
        let name = it.next().unwrap_or_default().to_string();
        let num = |s: Option<&str>, pre: &str| {
            s.and_then(|s| s.strip_prefix(pre))
                .and_then(|v| v.parse::<i64>().ok())
        };
        match (num(it.next(), "device="), num(it.next(), "ledger=")) {
            (Some(d), Some(l)) => {
                observed.insert(name, (d, l));
            }
            _ => return vec![format!("{key}: unreadable difference {part:?}")],
        }
    }
    if observed == expected {
        Vec::new()
    } else {
        vec![format!(
            "{key}: differences {observed:?}, expected (device, ledger) {expected:?}"
        )]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::oracle::ObservedExport;
    use crate::truth::DeviceDay;

    #[test]
    fn iso_dates_by_the_civil_calendar() {
        assert_eq!(iso_date(0), "1970-01-01");
        assert_eq!(iso_date(20_759), "2026-11-02");
        assert_eq!(iso_date(19_782), "2024-02-29");
        assert_eq!(iso_date(-1), "1969-12-31");
    }

    fn totals(orders: u64, net: i64) -> DeviceDayTotals {
        DeviceDayTotals {
            orders,
            gross: net,
            net,
            tenders: BTreeMap::from([("CARD".to_string(), net)]),
            ..Default::default()
        }
    }

    /// A truth of one store-day with two tills, the second of which lost a sale.
    fn truth() -> Truth {
        let mut t = Truth::new("EUR");
        t.days.entry("s1".into()).or_default().insert(
            20_759,
            DayTotals {
                orders: 3,
                gross: 600,
                net: 600,
                ..Default::default()
            },
        );
        let day = |declared: DeviceDayTotals, booked: DeviceDayTotals| DeviceDay {
            store_id: "s1".into(),
            declared: Some(declared),
            booked,
            expected_status: String::new(),
        };
        t.device_days
            .entry("d1".into())
            .or_default()
            .insert(20_759, day(totals(2, 400), totals(2, 400)));
        t.device_days
            .entry("d2".into())
            .or_default()
            .insert(20_759, day(totals(2, 300), totals(1, 200)));
        t.settle_reconciliation();
        t.late_events.insert("late-1".into());
        t.late_held_back = true;
        t
    }

    /// The files a correct exporter delivers for [`truth`].
    fn perfect() -> FinanceObserved {
        let mut f = FinanceObserved::default();
        let add = |f: &mut FinanceObserved, device: &str, orders: u64, net: i64, declared: i64| {
            let k = |src: &str, role: &str, tender: &str| {
                format!("s1|2026-11-02|{device}|{src}|{role}|{tender}")
            };
            f.lines.insert(k("sale", "revenue", ""), (0, net));
            f.lines
                .insert(k("sale", "tender_clearing", "CARD"), (net, 0));
            f.lines
                .insert(k("day_close", "tender_clearing", "CARD"), (0, declared));
            f.lines
                .insert(k("day_close", "receivables", ""), (declared, 0));
            f.events
                .insert(format!("s1|2026-11-02|{device}|sale"), orders);
        };
        add(&mut f, "d1", 2, 400, 400);
        add(&mut f, "d2", 1, 200, 300);
        f.exports.insert(
            "s1/2026-11-02".into(),
            ObservedExport {
                kind: "day".into(),
                rows: 8,
                totals: BTreeMap::from([("EUR".to_string(), (1300, 1300))]),
            },
        );
        f.recon.insert(
            "s1|2026-11-02|d1".into(),
            ObservedRecon {
                status: "matched".into(),
                differences: String::new(),
            },
        );
        f.recon.insert(
            "s1|2026-11-02|d2".into(),
            ObservedRecon {
                status: "mismatched".into(),
                differences: "order_count device=2 ledger=1; gross device=300 ledger=200; net device=300 ledger=200; tender_card device=300 ledger=200".into(),
            },
        );
        f.event_types
            .insert("late-1".into(), BTreeSet::from(["adjustment".to_string()]));
        f
    }

    fn failed(rows: &[CheckResult]) -> Vec<&str> {
        rows.iter()
            .filter(|r| !r.passed())
            .map(|r| r.name.as_str())
            .collect()
    }

    #[test]
    fn a_perfect_export_passes_every_row() {
        let rows = checks(&truth(), &perfect());
        assert_eq!(rows.len(), ROWS.len());
        assert!(failed(&rows).is_empty(), "{rows:#?}");
        assert_eq!(rows[3].observed, "1 mismatched");
    }

    #[test]
    fn each_kind_of_wrong_export_fails_its_row() {
        let t = truth();
        // A sale's revenue missing from the files: store-day and device-day totals.
        let mut f = perfect();
        f.lines
            .insert("s1|2026-11-02|d1|sale|revenue|".into(), (0, 300));
        assert_eq!(failed(&checks(&t, &f)), [ROWS[0], ROWS[1]]);
        // An unbalanced file, a line twice.
        let mut f = perfect();
        f.exports.get_mut("s1/2026-11-02").unwrap().totals =
            BTreeMap::from([("EUR".to_string(), (1300, 1299))]);
        assert_eq!(failed(&checks(&t, &f)), [ROWS[2]]);
        let mut f = perfect();
        f.duplicate_lines.push("e1#1".into());
        assert_eq!(failed(&checks(&t, &f)), [ROWS[2]]);
        // The lost sale's device-day reported matched; or mismatched on another figure.
        let mut f = perfect();
        f.recon.get_mut("s1|2026-11-02|d2").unwrap().status = "matched".into();
        assert_eq!(failed(&checks(&t, &f)), [ROWS[3]]);
        let mut f = perfect();
        f.recon.get_mut("s1|2026-11-02|d2").unwrap().differences =
            "order_count device=2 ledger=1".into();
        assert_eq!(failed(&checks(&t, &f)), [ROWS[3]]);
        // A late event delivered as a regular line of its day, or not at all.
        let mut f = perfect();
        f.event_types
            .insert("late-1".into(), BTreeSet::from(["regular".to_string()]));
        assert_eq!(failed(&checks(&t, &f)), [ROWS[4]]);
        let mut f = perfect();
        f.event_types.clear();
        assert_eq!(failed(&checks(&t, &f)), [ROWS[4]]);
        // No day export for the store-day.
        let mut f = perfect();
        f.exports.get_mut("s1/2026-11-02").unwrap().kind = "supplement".into();
        assert_eq!(failed(&checks(&t, &f)), [ROWS[0]]);
    }

    #[test]
    fn without_the_exporter_the_rows_are_not_applicable() {
        let rows = not_checked(&truth());
        assert_eq!(rows.len(), ROWS.len());
        assert!(rows.iter().all(|r| !r.applicable));
        assert_eq!(rows[3].expected, "1 mismatched");
    }
}
