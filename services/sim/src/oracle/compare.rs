//! The comparison: every fact the truth holds against what was observed. Pure (observations in,
//! report out), so it is unit-tested on hand-made observations.

use std::collections::{BTreeMap, BTreeSet};

use super::report::{CheckResult, Report};
use super::{Allowances, CatalogObserved, DbObserved, KafkaObserved, Observed};
use crate::truth::Truth;

fn diff_maps<V: PartialEq + std::fmt::Debug>(
    what: &str,
    expected: &BTreeMap<String, BTreeMap<String, V>>,
    observed: &BTreeMap<String, BTreeMap<String, V>>,
    zero: impl Fn(&V) -> bool,
) -> Vec<String> {
    let mut out = Vec::new();
    let keys: BTreeSet<(&String, &String)> = expected
        .iter()
        .flat_map(|(s, m)| m.keys().map(move |k| (s, k)))
        .chain(
            observed
                .iter()
                .flat_map(|(s, m)| m.keys().map(move |k| (s, k))),
        )
        .collect();
    for (s, k) in keys {
        let e = expected.get(s).and_then(|m| m.get(k));
        let o = observed.get(s).and_then(|m| m.get(k));
        match (e, o) {
            (Some(e), Some(o)) if e == o => {}
            (Some(e), None) if zero(e) => {}
            (None, Some(o)) if zero(o) => {}
            _ => out.push(format!("{what} {s}/{k}: expected {e:?}, observed {o:?}")),
        }
    }
    out
}

/// Compares everything observed with the truth (pure), allowing nothing.
pub fn compare(truth: &Truth, observed: Observed<'_>) -> Report {
    compare_with(truth, observed, Allowances::default())
}

/// A row for an output that was not checked (not observed, or no service produces it yet).
pub(super) fn not_checked(name: &str, expected: String) -> CheckResult {
    CheckResult {
        name: name.into(),
        expected,
        observed: "-".into(),
        differences: vec![],
        applicable: false,
    }
}

const KAFKA_ROWS: [&str; 7] = [
    "events (deduplicated)",
    "duplicates on dedup topic",
    "identity collisions",
    "gaps: never recorded",
    "gaps: lost in transit",
    "dead letters",
    "device heartbeats",
];
const DB_ROWS: [&str; 5] = [
    "stock on hand",
    "sales by store/sku",
    "sales by store/sku/hour",
    "store days (orders, refunds)",
    "ledger lines",
];

/// Compares everything observed with the truth (pure): one row per fact the truth holds.
pub fn compare_with(truth: &Truth, observed: Observed<'_>, allow: Allowances) -> Report {
    let Observed {
        kafka,
        db,
        catalog,
        conflicts,
        finance,
    } = observed;
    let mut checks = Vec::new();
    match kafka {
        Some(k) => checks.extend(kafka_checks(truth, k, &allow)),
        None => checks.extend(KAFKA_ROWS.iter().map(|n| not_checked(n, "-".into()))),
    }
    match db {
        Some(d) => checks.extend(db_checks(truth, d)),
        None => checks.extend(DB_ROWS.iter().map(|n| not_checked(n, "-".into()))),
    }
    match catalog {
        Some(c) => checks.push(catalog_check(truth, c)),
        None => checks.push(not_checked("price lists at stores", "-".into())),
    }
    match conflicts {
        Some(c) => checks.extend(super::conflicts::checks(truth, c, &allow)),
        None => checks.extend(super::conflicts::not_checked(truth)),
    }
    match finance {
        Some(f) => checks.extend(super::finance::checks(truth, f)),
        None => checks.extend(super::finance::not_checked(truth)),
    }
    Report { checks }
}

fn kafka_checks(truth: &Truth, k: &KafkaObserved, allow: &Allowances) -> Vec<CheckResult> {
    let mut checks = Vec::new();
    let observed: BTreeSet<&String> = k.deduped.keys().collect();
    let mut diffs = Vec::new();
    for id in truth
        .store_event_ids
        .iter()
        .filter(|id| !observed.contains(id))
    {
        diffs.push(format!("missing event {id}"));
    }
    for id in observed
        .iter()
        .filter(|id| !truth.store_event_ids.contains(**id))
    {
        diffs.push(format!("unexpected event {id}"));
    }
    checks.push(CheckResult::checked(
        KAFKA_ROWS[0],
        truth.store_event_ids.len().to_string(),
        k.deduped.len().to_string(),
        diffs,
    ));
    let extra: u64 = k.deduped.values().map(|n| n.saturating_sub(1)).sum();
    let dups: Vec<String> = if extra > allow.dedup_topic_duplicates {
        k.deduped
            .iter()
            .filter(|(_, n)| **n > 1)
            .map(|(id, n)| format!("event {id} emitted {n} times"))
            .collect()
    } else {
        Vec::new()
    };
    checks.push(CheckResult::checked(
        KAFKA_ROWS[1],
        format!("<= {}", allow.dedup_topic_duplicates),
        extra.to_string(),
        dups,
    ));
    let mut diffs = Vec::new();
    for id in truth
        .collisions
        .difference(&k.collisions)
        .filter(|id| !allow.collisions_lost.contains(*id))
    {
        diffs.push(format!("collision of {id} not reported"));
    }
    for id in k.collisions.difference(&truth.collisions) {
        diffs.push(format!("collision of {id} reported but not constructed"));
    }
    let expected = if allow.collisions_lost.is_empty() {
        truth.collisions.len().to_string()
    } else {
        format!(
            "{} ({} lost ok)",
            truth.collisions.len(),
            allow.collisions_lost.len()
        )
    };
    checks.push(CheckResult::checked(
        KAFKA_ROWS[2],
        expected,
        k.collisions.len().to_string(),
        diffs,
    ));
    // Gaps the plan made on purpose (events the devices never recorded) must stay open: nothing
    // can fill them. Every other gap is an event lost between a device and the log, which the
    // device re-sends once a receipt lists it missing: it must be closed at the end.
    let planned_open: Vec<String> = truth
        .gaps
        .difference(&k.open_gaps)
        .map(|g| {
            format!(
                "gap {}:{}..{} not reported open",
                g.device_id, g.from_seq, g.to_seq
            )
        })
        .collect();
    checks.push(CheckResult::checked(
        KAFKA_ROWS[3],
        truth.gaps.len().to_string(),
        k.open_gaps.intersection(&truth.gaps).count().to_string(),
        planned_open,
    ));
    let unplanned: Vec<String> = k
        .open_gaps
        .difference(&truth.gaps)
        .map(|g| {
            format!(
                "gap {}:{}..{} still open: events lost and never re-sent (or a gap reported where nothing is missing)",
                g.device_id, g.from_seq, g.to_seq
            )
        })
        .collect();
    checks.push(CheckResult::checked(
        KAFKA_ROWS[4],
        "0 open".into(),
        format!("{} closed, {} open", k.closed_gaps.len(), unplanned.len()),
        unplanned,
    ));
    let mut diffs = Vec::new();
    let reasons: BTreeSet<&String> = truth
        .dead_letters
        .keys()
        .chain(k.dead_letters.keys())
        .collect();
    for r in reasons {
        let (e, o) = (
            truth.dead_letters.get(r).copied().unwrap_or(0),
            k.dead_letters.get(r).copied().unwrap_or(0),
        );
        if e != o {
            diffs.push(format!("dead letters {r}: expected {e}, observed {o}"));
        }
    }
    checks.push(CheckResult::checked(
        KAFKA_ROWS[5],
        truth.dead_letters.values().sum::<u64>().to_string(),
        k.dead_letters.values().sum::<u64>().to_string(),
        diffs,
    ));
    let seen = k.health_events.len() as u64;
    let lost = truth.health_events.saturating_sub(seen);
    let ok = seen <= truth.health_events && lost <= allow.heartbeats_lost;
    checks.push(CheckResult::checked(
        KAFKA_ROWS[6],
        if allow.heartbeats_lost == 0 {
            truth.health_events.to_string()
        } else {
            format!("{} (-{} ok)", truth.health_events, allow.heartbeats_lost)
        },
        seen.to_string(),
        if ok {
            vec![]
        } else {
            vec![format!(
                "{seen} distinct heartbeats on the health topic, {} published ({} may be lost with the broker)",
                truth.health_events, allow.heartbeats_lost
            )]
        },
    ));
    checks
}

fn count_rows<V>(m: &BTreeMap<String, BTreeMap<String, V>>) -> String {
    m.values().map(BTreeMap::len).sum::<usize>().to_string()
}

fn db_checks(truth: &Truth, d: &DbObserved) -> Vec<CheckResult> {
    let mut checks = Vec::new();
    checks.push(CheckResult::checked(
        DB_ROWS[0],
        count_rows(&truth.stock),
        count_rows(&d.stock),
        diff_maps("stock", &truth.stock, &d.stock, |v| *v == 0),
    ));
    let expected_sales: BTreeMap<String, BTreeMap<String, (i64, i64)>> = truth
        .sku_sales
        .iter()
        .map(|(s, m)| {
            (
                s.clone(),
                m.iter().map(|(k, v)| (k.clone(), (v.qty, v.net))).collect(),
            )
        })
        .collect();
    checks.push(CheckResult::checked(
        DB_ROWS[1],
        count_rows(&expected_sales),
        count_rows(&d.sku_sales),
        diff_maps("sales (qty, net)", &expected_sales, &d.sku_sales, |v| {
            *v == (0, 0)
        }),
    ));
    checks.push(CheckResult::checked(
        DB_ROWS[2],
        count_rows(&truth.hourly_sales),
        count_rows(&d.hourly_sales),
        diff_maps(
            "hourly sales (qty, net)",
            &truth.hourly_sales,
            &d.hourly_sales,
            |v| *v == (0, 0),
        ),
    ));
    let expected_days: BTreeMap<String, BTreeMap<String, (u64, u64)>> = truth
        .days
        .iter()
        .map(|(s, m)| {
            (
                s.clone(),
                m.iter()
                    .map(|(date, t)| (date.to_string(), (t.orders, t.refunds)))
                    .collect(),
            )
        })
        .collect();
    checks.push(CheckResult::checked(
        DB_ROWS[3],
        count_rows(&expected_days),
        count_rows(&d.store_days),
        diff_maps(
            "store day (orders, refunds)",
            &expected_days,
            &d.store_days,
            |v| *v == (0, 0),
        ),
    ));
    checks.push(CheckResult::checked(
        DB_ROWS[4],
        truth.ledger_lines.to_string(),
        d.ledger_lines.to_string(),
        if truth.ledger_lines == d.ledger_lines {
            vec![]
        } else {
            vec![format!(
                "ledger has {} rows, expected {} (a doubled or lost stock move)",
                d.ledger_lines, truth.ledger_lines
            )]
        },
    ));
    checks
}

fn catalog_check(truth: &Truth, c: &CatalogObserved) -> CheckResult {
    let mut diffs = Vec::new();
    for (store, id) in &truth.price_lists {
        match c.price_lists.get(store) {
            None => diffs.push(format!(
                "store {store}: no price list delivered, expected {id}"
            )),
            Some(got) if got != id => diffs.push(format!(
                "store {store}: holds {got}, expected the latest {id}"
            )),
            Some(_) => {}
        }
    }
    for store in c
        .price_lists
        .keys()
        .filter(|s| !truth.price_lists.contains_key(*s))
    {
        diffs.push(format!(
            "store {store}: holds a price list none was approved for"
        ));
    }
    diffs.extend(
        c.misplaced
            .iter()
            .map(|m| format!("misplaced document {m}")),
    );
    CheckResult::checked(
        "price lists at stores",
        truth.price_lists.len().to_string(),
        c.price_lists.len().to_string(),
        diffs,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::{FleetSpec, generate};

    fn perfect(truth: &Truth) -> (KafkaObserved, DbObserved) {
        let k = KafkaObserved {
            deduped: truth
                .store_event_ids
                .iter()
                .map(|id| (id.clone(), 1))
                .collect(),
            collisions: truth.collisions.clone(),
            open_gaps: truth.gaps.clone(),
            closed_gaps: Default::default(),
            dead_letters: truth.dead_letters.clone(),
            health_events: (0..truth.health_events).map(|i| format!("h{i}")).collect(),
        };
        let d = DbObserved {
            stock: truth.stock.clone(),
            sku_sales: truth
                .sku_sales
                .iter()
                .map(|(s, m)| {
                    (
                        s.clone(),
                        m.iter().map(|(k, v)| (k.clone(), (v.qty, v.net))).collect(),
                    )
                })
                .collect(),
            hourly_sales: truth.hourly_sales.clone(),
            store_days: truth
                .days
                .iter()
                .map(|(s, m)| {
                    (
                        s.clone(),
                        m.iter()
                            .map(|(date, t)| (date.to_string(), (t.orders, t.refunds)))
                            .collect(),
                    )
                })
                .collect(),
            ledger_lines: truth.ledger_lines,
        };
        (k, d)
    }

    #[test]
    fn a_perfect_pipeline_passes() {
        let plan = generate(&FleetSpec::default());
        let (k, d) = perfect(&plan.truth);
        assert!(!plan.truth.price_lists.is_empty());
        let c = CatalogObserved {
            price_lists: plan.truth.price_lists.clone(),
            misplaced: vec![],
        };
        let observed = Observed {
            kafka: Some(&k),
            db: Some(&d),
            catalog: Some(&c),
            conflicts: None,
            finance: None,
        };
        let r = compare(&plan.truth, observed);
        assert!(r.passed(), "{}", r.render(10));
        assert_eq!(r.differences(), 0);
    }

    #[test]
    fn every_kind_of_wrong_output_is_reported() {
        let plan = generate(&FleetSpec::default());
        let (mut k, mut d) = perfect(&plan.truth);
        // One stock row off by one.
        let (store, skus) = d.stock.iter_mut().next().unwrap();
        let (sku, qty) = skus.iter_mut().next().unwrap();
        *qty += 1;
        let corrupted = format!("stock {store}/{sku}");
        // A lost event, a doubled event, a missed collision, a wrong gap, a lost dead letter.
        let lost = k.deduped.keys().next().unwrap().clone();
        k.deduped.remove(&lost);
        let doubled = k.deduped.keys().next().unwrap().clone();
        k.deduped.insert(doubled, 2);
        let c = k.collisions.iter().next().unwrap().clone();
        k.collisions.remove(&c);
        k.open_gaps.clear();
        // A gap nobody planned, still open: an event lost in transit and never re-sent.
        let lost_gap = crate::truth::Gap {
            device_id: "s001-d01".into(),
            store_id: "s001".into(),
            from_seq: 900,
            to_seq: 901,
        };
        k.open_gaps.insert(lost_gap);
        // A heartbeat that never arrived.
        let h = k.health_events.iter().next().unwrap().clone();
        k.health_events.remove(&h);
        // A sale booked in the wrong hour (a skewed clock mishandled), and a lost refund.
        let (hs, hours) = d.hourly_sales.iter_mut().next().unwrap();
        let hs = hs.clone();
        let (hk, v) = hours.pop_first().unwrap();
        hours.insert(format!("{hk}0"), v);
        let (ds, days) = d.store_days.iter_mut().next().unwrap();
        let ds = ds.clone();
        let (date, day) = days.iter_mut().next().unwrap();
        let date = date.clone();
        day.1 += 1;
        d.ledger_lines += 1;
        // A store still holding an older price list, one without any, one spoofed document.
        let mut cat = CatalogObserved {
            price_lists: plan.truth.price_lists.clone(),
            misplaced: vec!["store/s001/catalog/price-list: {\"store_id\":\"s002\"}".into()],
        };
        let mut stores = plan.truth.price_lists.keys();
        let stale = stores.next().unwrap().clone();
        cat.price_lists
            .insert(stale.clone(), format!("pl-{stale}-v0"));
        let undelivered = stores.next().unwrap().clone();
        cat.price_lists.remove(&undelivered);
        let observed = Observed {
            kafka: Some(&k),
            db: Some(&d),
            catalog: Some(&cat),
            conflicts: None,
            finance: None,
        };
        let r = compare(&plan.truth, observed);
        assert!(!r.passed());
        let text = r.render(1000);
        assert!(text.contains(&corrupted), "{text}");
        assert!(text.contains(&format!("missing event {lost}")), "{text}");
        assert!(text.contains("emitted 2 times"), "{text}");
        assert!(
            text.contains(&format!("collision of {c} not reported")),
            "{text}"
        );
        assert!(text.contains("not reported open"), "{text}");
        assert!(text.contains("gap s001-d01:900..901 still open"), "{text}");
        assert!(text.contains("distinct heartbeats"), "{text}");
        assert!(
            text.contains(&format!("hourly sales (qty, net) {hs}/{hk}")),
            "{text}"
        );
        assert!(
            text.contains(&format!("store day (orders, refunds) {ds}/{date}")),
            "{text}"
        );
        assert!(text.contains("ledger has"), "{text}");
        assert!(
            text.contains(&format!("store {stale}: holds pl-{stale}-v0")),
            "{text}"
        );
        assert!(
            text.contains(&format!("store {undelivered}: no price list delivered")),
            "{text}"
        );
        assert!(text.contains("misplaced document"), "{text}");
    }

    #[test]
    fn losses_inside_a_fault_window_pass_only_up_to_the_allowance() {
        let plan = generate(&FleetSpec::default());
        let (mut k, d) = perfect(&plan.truth);
        let lost_collision = k.collisions.iter().next().unwrap().clone();
        k.collisions.remove(&lost_collision);
        for _ in 0..3 {
            let h = k.health_events.iter().next().unwrap().clone();
            k.health_events.remove(&h);
        }
        let observed = Observed {
            kafka: Some(&k),
            db: Some(&d),
            catalog: None,
            conflicts: None,
            finance: None,
        };
        let mut allow = Allowances {
            heartbeats_lost: 3,
            ..Default::default()
        };
        allow.collisions_lost.insert(lost_collision.clone());
        assert!(compare_with(&plan.truth, observed, allow.clone()).passed());
        // One heartbeat more than the window held, or a collision outside it: reported.
        allow.heartbeats_lost = 2;
        let r = compare_with(&plan.truth, observed, allow.clone());
        assert!(
            r.render(10).contains("may be lost with the broker"),
            "{}",
            r.render(10)
        );
        allow.heartbeats_lost = 3;
        allow.collisions_lost.clear();
        let r = compare_with(&plan.truth, observed, allow);
        assert!(
            r.render(10)
                .contains(&format!("collision of {lost_collision} not reported")),
            "{}",
            r.render(10)
        );
    }
}
