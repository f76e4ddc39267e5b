//! The conflict detector's rows of the oracle: one per rule (the verdicts that hold at the end of
//! the run, matched with the truth's by store, sku and the event they are about, with their
//! triage and evidence), and one for its records (each record once, every compensation present,
//! every superseded verdict's compensations reversed). Pure (observations in, rows out).

use std::collections::{BTreeMap, BTreeSet};

use super::report::CheckResult;
use super::{Allowances, ConflictsObserved};
use crate::truth::{RULES, Truth, conflict_key};

/// Rules whose verdicts always carry a compensation (oversell: the backorder; price variance: the
/// adjustment; double redemption: the clawback).
const COMPENSATED: [&str; 3] = ["oversell", "price-variance", "loyalty-double-redemption"];

fn row_name(rule: &str) -> String {
    format!("conflicts: {rule}")
}

const RECORDS_ROW: &str = "conflict records (once)";

/// The rows of a run whose detector was not checked.
pub(crate) fn not_checked(truth: &Truth) -> Vec<CheckResult> {
    let mut rows: Vec<CheckResult> = RULES
        .iter()
        .map(|rule| {
            let n = match *rule {
                "identity-collision" => truth.collisions.len(),
                _ => truth.conflicts.get(*rule).map_or(0, BTreeMap::len),
            };
            super::compare::not_checked(&row_name(rule), n.to_string())
        })
        .collect();
    rows.push(super::compare::not_checked(RECORDS_ROW, "-".into()));
    rows
}

/// One row per rule and the records row.
pub(crate) fn checks(truth: &Truth, c: &ConflictsObserved, allow: &Allowances) -> Vec<CheckResult> {
    // The verdicts that hold: detected and not superseded, by rule and key.
    let mut holding: BTreeMap<&str, BTreeMap<String, Vec<&str>>> = BTreeMap::new();
    for (id, v) in c
        .detected
        .iter()
        .filter(|(id, _)| !c.superseded.contains(*id))
    {
        let about = v.event_ids.first().map(String::as_str).unwrap_or("?");
        holding
            .entry(v.rule.as_str())
            .or_default()
            .entry(conflict_key(&v.store_id, v.sku.as_deref(), about))
            .or_default()
            .push(id);
    }
    let mut rows = Vec::new();
    for rule in RULES.iter().filter(|r| **r != "identity-collision") {
        let empty = BTreeMap::new();
        let expected = truth.conflicts.get(*rule).unwrap_or(&empty);
        let observed = holding.remove(rule).unwrap_or_default();
        let mut diffs = Vec::new();
        for (key, e) in expected {
            let Some(ids) = observed.get(key) else {
                diffs.push(format!("{rule} about {key} ({}) not reported", e.triage));
                continue;
            };
            for id in ids {
                let v = &c.detected[*id];
                if v.triage != e.triage {
                    diffs.push(format!(
                        "{rule} {id} about {key}: triage {}, expected {}",
                        v.triage, e.triage
                    ));
                }
                let named: BTreeSet<&String> = v.event_ids.iter().collect();
                for ev in e.evidence.iter().filter(|ev| !named.contains(ev)) {
                    diffs.push(format!("{rule} {id} about {key}: evidence {ev} not named"));
                }
            }
        }
        for (key, ids) in &observed {
            if !expected.contains_key(key) {
                diffs.push(format!(
                    "{rule} {} about {key} reported but not expected",
                    ids.join(", ")
                ));
            }
            if ids.len() > 1 {
                diffs.push(format!(
                    "{rule} about {key}: {} verdicts hold ({})",
                    ids.len(),
                    ids.join(", ")
                ));
            }
        }
        let made = expected.values().filter(|e| e.constructed).count();
        rows.push(CheckResult::checked(
            &row_name(rule),
            format!("{} ({made} made)", expected.len()),
            observed.len().to_string(),
            diffs,
        ));
    }
    // Rule 7: the dedup's collisions, which the detector's queue takes as they are (checked in its
    // queue when its database was read, else on the topic).
    let (seen, place) = match &c.queued_collisions {
        Some(q) => (q, "in the detector's queue"),
        None => (&c.dedup_collisions, "on the conflicts topic"),
    };
    let mut diffs = Vec::new();
    for id in truth
        .collisions
        .difference(seen)
        .filter(|id| !allow.collisions_lost.contains(*id))
    {
        diffs.push(format!("identity-collision of {id} not {place}"));
    }
    for id in seen.difference(&truth.collisions) {
        diffs.push(format!(
            "identity-collision of {id} {place} but not constructed"
        ));
    }
    rows.push(CheckResult::checked(
        &row_name("identity-collision"),
        truth.collisions.len().to_string(),
        seen.len().to_string(),
        diffs,
    ));
    rows.push(records_check(c));
    rows
}

/// Every record of the detector once (by its record id), every verdict of a compensated rule with
/// its compensation, every compensation of a superseded verdict reversed.
fn records_check(c: &ConflictsObserved) -> CheckResult {
    let mut diffs: Vec<String> = c
        .copies
        .iter()
        .filter(|(_, n)| **n > 1)
        .map(|(id, n)| format!("record {id} written {n} times"))
        .collect();
    let mut issued: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    let mut reversed: BTreeSet<&str> = BTreeSet::new();
    for (id, comp) in &c.compensations {
        match &comp.reverses {
            Some(original) => {
                reversed.insert(original);
            }
            None => issued.entry(&comp.conflict_id).or_default().push(id),
        }
    }
    for (id, v) in &c.detected {
        let comps = issued.get(id.as_str()).map(Vec::as_slice).unwrap_or(&[]);
        if COMPENSATED.contains(&v.rule.as_str()) && comps.is_empty() {
            diffs.push(format!("{} {id}: no compensation", v.rule));
        }
        if c.superseded.contains(id) {
            for comp in comps.iter().filter(|x| !reversed.contains(**x)) {
                diffs.push(format!(
                    "{} {id} superseded: compensation {comp} not reversed",
                    v.rule
                ));
            }
        }
    }
    for (id, comp) in &c.compensations {
        if !c.detected.contains_key(&comp.conflict_id) {
            diffs.push(format!(
                "compensation {id} names conflict {} that was never detected",
                comp.conflict_id
            ));
        }
    }
    CheckResult::checked(
        RECORDS_ROW,
        "each once".into(),
        c.copies.len().to_string(),
        diffs,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::oracle::{ObservedCompensation, ObservedConflict};
    use crate::plan::{FleetSpec, generate};

    /// What a correct detector writes for `truth`: each expected verdict once, with a compensation
    /// where the rule issues one.
    fn perfect(truth: &Truth) -> ConflictsObserved {
        let mut c = ConflictsObserved {
            dedup_collisions: truth.collisions.clone(),
            ..Default::default()
        };
        for (rule, m) in &truth.conflicts {
            for (i, e) in m.values().enumerate() {
                let id = format!("{rule}-{i}");
                c.detected.insert(
                    id.clone(),
                    ObservedConflict {
                        rule: rule.clone(),
                        triage: e.triage.clone(),
                        store_id: e.store_id.clone(),
                        sku: e.sku.clone(),
                        event_ids: e.evidence.clone(),
                    },
                );
                c.copies.insert(id.clone(), 1);
                if COMPENSATED.contains(&rule.as_str()) {
                    c.copies.insert(format!("comp-{id}"), 1);
                    c.compensations.insert(
                        format!("comp-{id}"),
                        ObservedCompensation {
                            conflict_id: id,
                            reverses: None,
                        },
                    );
                }
            }
        }
        c
    }

    fn render(truth: &Truth, c: &ConflictsObserved) -> (bool, String) {
        let rows = checks(truth, c, &Allowances::default());
        let passed = rows.iter().all(CheckResult::passed);
        let text = rows
            .iter()
            .flat_map(|r| r.differences.iter().cloned())
            .collect::<Vec<_>>()
            .join("\n");
        (passed, text)
    }

    #[test]
    fn a_detector_that_holds_every_expected_verdict_passes() {
        let plan = generate(&FleetSpec::default());
        let c = perfect(&plan.truth);
        let rows = checks(&plan.truth, &c, &Allowances::default());
        assert_eq!(
            rows.len(),
            RULES.len() + 1,
            "one row per rule and the records row"
        );
        let (passed, text) = render(&plan.truth, &c);
        assert!(passed, "{text}");
        assert!(not_checked(&plan.truth).iter().all(|r| !r.applicable));
    }

    #[test]
    fn a_collision_missing_from_the_detectors_queue_is_reported() {
        let plan = generate(&FleetSpec::default());
        let mut c = perfect(&plan.truth);
        let mut queued = plan.truth.collisions.clone();
        let missing = queued.pop_first().unwrap();
        c.queued_collisions = Some(queued);
        let (passed, text) = render(&plan.truth, &c);
        assert!(!passed);
        let needle = format!("identity-collision of {missing} not in the detector's queue");
        assert!(text.contains(&needle), "{text}");
    }

    #[test]
    fn every_kind_of_wrong_verdict_or_record_is_reported() {
        let plan = generate(&FleetSpec::default());
        let truth = &plan.truth;
        let mut c = perfect(truth);
        // A missing verdict, a wrong triage, a verdict nobody expected, a doubled record, a
        // supersede without the reversal of its compensation, a verdict without compensation.
        c.detected.remove("stale-count-0");
        c.detected
            .get_mut("duplicate-business-key-0")
            .unwrap()
            .triage = "info".into();
        let mut extra = c.detected["reservation-breach-0"].clone();
        extra.event_ids = vec!["e-unexpected".into()];
        c.detected.insert("extra".into(), extra);
        c.copies.insert("price-variance-0".into(), 2);
        let mut stale = c.detected["loyalty-double-redemption-0"].clone();
        stale.event_ids = vec!["e-superseded".into()];
        c.detected.insert("superseded".into(), stale);
        c.superseded.insert("superseded".into());
        c.compensations.insert(
            "comp-superseded".into(),
            ObservedCompensation {
                conflict_id: "superseded".into(),
                reverses: None,
            },
        );
        c.compensations.remove("comp-oversell-0");
        let (passed, text) = render(truth, &c);
        assert!(!passed);
        for needle in [
            "stale-count about",
            "not reported",
            "triage info, expected needs-review",
            "e-unexpected reported but not expected",
            "record price-variance-0 written 2 times",
            "compensation comp-superseded not reversed",
            "oversell oversell-0: no compensation",
        ] {
            assert!(text.contains(needle), "{needle} missing in:\n{text}");
        }
    }
}
