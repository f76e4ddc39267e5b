//! Unit tests of the pure core: hand-computed cases per rule, the seed story, late events that
//! supersede verdicts, skew ambiguity, the horizon, checked money, and determinism under every
//! interleaving that keeps each partition's order.
//!
//! Why one file (~1,050 lines): hand-computed cases per rule on the same builders, read as the
//! rules' specification.

use std::collections::BTreeMap;

use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;
use tillstream_contracts::*;

use super::*;

use crate::fixtures::*;

pub(super) fn det() -> Detector {
    Detector::new(CoreConfig::default())
}

/// Applies events live (record time = occurred_at), collecting every change.
pub(super) fn run(d: &mut Detector, events: &[DeviceEvent]) -> Vec<Change> {
    let mut out = Vec::new();
    for e in events {
        out.extend(d.apply(e, e.occurred_at(), Mode::Live).unwrap().changes);
    }
    out
}

pub(super) fn raised(changes: &[Change]) -> Vec<&Verdict> {
    changes
        .iter()
        .filter_map(|c| match c {
            Change::Raised(v) => Some(v),
            _ => None,
        })
        .collect()
}

pub(super) fn superseded(changes: &[Change]) -> Vec<(&Verdict, &str)> {
    changes
        .iter()
        .filter_map(|c| match c {
            Change::Superseded { verdict, by, .. } => Some((verdict, by.as_str())),
            _ => None,
        })
        .collect()
}

#[test]
fn seed_story_two_offline_devices_sell_the_last_unit() {
    // Receipt 5, counted 1 (the counter expected 5 and found 1: no stale count, it saw everything),
    // then both devices sell that unit at the same moment while offline, then a restock of 60.
    let mut d = det();
    let changes = run(
        &mut d,
        &[
            receipt("s1", "s1-d1", 1, T0, "SKU-7", 5),
            adjust(
                "s1",
                "s1-d1",
                2,
                T0 + 1000,
                AdjustmentKind::Count,
                "SKU-7",
                1,
                Some(5),
            ),
            sale("s1", "s1-d1", 3, T0 + 2000, "o-1", &[Line("SKU-7", 1, 499)]),
            sale("s1", "s1-d2", 1, T0 + 2000, "o-2", &[Line("SKU-7", 1, 499)]),
            receipt("s1", "s1-d1", 4, T0 + 3000, "SKU-7", 60),
        ],
    );
    let r = raised(&changes);
    assert_eq!(r.len(), 1, "one conflict: {changes:#?}");
    let v = r[0];
    assert_eq!(v.rule, Rule::Oversell);
    // Same occurred_at on two devices: the order is a tie broken by device id, so the clocks
    // cannot tell who sold first: review, and the explanation says so.
    assert_eq!(v.triage, Triage::NeedsReview);
    assert!(
        v.explanation.contains("skew tolerance"),
        "{}",
        v.explanation
    );
    assert_eq!(
        v.evidence[0],
        id("s1-d2", 1),
        "d2 sorts after d1: its sale loses"
    );
    // It rests on the losing line alone: which sale took the unit is not part of the decision
    // (issue 16: naming it made late sales re-derive every oversell after them).
    assert_eq!(v.evidence, vec![id("s1-d2", 1)]);
    assert_eq!(v.compensations.len(), 1, "one backorder");
    let c = &v.compensations[0];
    assert_eq!(c.kind, CompensationKind::Backorder);
    assert_eq!((c.qty, c.money.clone()), (1, Some(eur(499))));
    assert!(superseded(&changes).is_empty());
    // Both sales recorded: event-time on-hand went 5, 1, 0, -1, then 59.
    let t = &d.store("s1").unwrap().skus["SKU-7"];
    let balances: Vec<i64> = t.entries.iter().map(|e| e.after).collect();
    assert_eq!(balances, vec![5, 1, 0, -1, 59]);
}

#[test]
fn oversell_hours_apart_is_auto_resolved_and_partial_lines_backorder_the_rest() {
    let mut d = det();
    let changes = run(
        &mut d,
        &[
            receipt("s1", "s1-d1", 1, T0, "A", 2),
            sale("s1", "s1-d2", 1, T0 + 3 * H, "o-1", &[Line("A", 3, 250)]),
        ],
    );
    let r = raised(&changes);
    assert_eq!(r.len(), 1);
    let v = r[0];
    assert_eq!(
        (v.rule, v.triage, v.owner),
        (Rule::Oversell, Triage::AutoResolved, Owner::StoreOps)
    );
    // 2 on hand, 3 sold: 1 backordered, worth 2.50.
    assert_eq!(v.detail["shortfall"], "1");
    assert_eq!(v.compensations[0].qty, 1);
    assert_eq!(v.compensations[0].money, Some(eur(250)));
    let res = records::auto_resolution(v).unwrap();
    assert_eq!(res.resolution, "auto: backorder 1 x A");
    assert_eq!(
        res.compensating_event_ids,
        vec![v.compensations[0].compensation_id.clone()]
    );
    assert_eq!(res.resolved_at, T0 + 3 * H);
}

#[test]
fn sku_policy_picks_substitute_or_void() {
    let cfg = CoreConfig {
        sku_policy: BTreeMap::from([
            ("S".to_string(), LinePolicy::Substitute),
            ("V".to_string(), LinePolicy::Void),
        ]),
        ..Default::default()
    };
    let mut d = Detector::new(cfg);
    let changes = run(
        &mut d,
        &[sale(
            "s1",
            "s1-d1",
            1,
            T0,
            "o-1",
            &[Line("S", 1, 100), Line("V", 2, 100), Line("B", 1, 100)],
        )],
    );
    let kinds: Vec<(CompensationKind, i64)> = raised(&changes)
        .iter()
        .map(|v| (v.compensations[0].kind, v.compensations[0].qty))
        .collect();
    assert_eq!(
        kinds,
        vec![
            (CompensationKind::Substitute, 1),
            (CompensationKind::Void, 2),
            (CompensationKind::Backorder, 1)
        ]
    );
}

#[test]
fn a_late_sale_moves_the_oversell_and_a_late_receipt_supersedes_it() {
    let mut d = det();
    // One unit; d1 sells it at +6 h: fine.
    let c1 = run(
        &mut d,
        &[
            receipt("s1", "s1-d0", 1, T0, "A", 1),
            sale("s1", "s1-d1", 1, T0 + 6 * H, "o-late", &[Line("A", 1, 100)]),
        ],
    );
    assert!(c1.is_empty(), "{c1:#?}");
    // An offline sale from +1 h arrives now: it happened first, so it gets the unit and the +6 h
    // sale becomes the oversold one (earliest sales win).
    let c2 = run(
        &mut d,
        &[sale(
            "s1",
            "s1-d2",
            1,
            T0 + H,
            "o-early",
            &[Line("A", 1, 100)],
        )],
    );
    let r = raised(&c2);
    assert_eq!(r.len(), 1, "{c2:#?}");
    assert_eq!(
        r[0].evidence,
        vec![id("s1-d1", 1)],
        "the oversold line, not the late sale that took the unit"
    );
    assert_eq!(
        r[0].triage,
        Triage::AutoResolved,
        "5 h apart: no skew doubt"
    );
    let first = r[0].clone();
    // A receipt at +3 h arrives late too: the +6 h sale had stock after all.
    let c3 = run(&mut d, &[receipt("s1", "s1-d0", 2, T0 + 3 * H, "A", 4)]);
    let s = superseded(&c3);
    assert_eq!(s.len(), 1, "{c3:#?}");
    assert_eq!(s[0].0.conflict_id, first.conflict_id);
    assert_eq!(
        s[0].1,
        id("s1-d0", 2),
        "names the event that changed the verdict"
    );
    assert!(raised(&c3).is_empty());
    let (resolved, reversals) =
        records::superseded(s[0].0, s[0].1, T0 + 3 * H, &s[0].0.compensations).unwrap();
    assert_eq!(
        resolved.resolution,
        format!("auto: superseded by {}", id("s1-d0", 2))
    );
    assert_eq!(reversals.len(), 1);
    assert_eq!(reversals[0].qty, -1);
    assert_eq!(reversals[0].money, Some(eur(-100)));
    assert_eq!(
        reversals[0].reverses.as_deref(),
        Some(first.compensations[0].compensation_id.as_str())
    );
    // On-hand in event time: 1, 0 (+1 h), 4 (+3 h), 3 (+6 h).
    let t = &d.store("s1").unwrap().skus["A"];
    assert_eq!(
        t.entries.iter().map(|e| e.after).collect::<Vec<_>>(),
        vec![1, 0, 4, 3]
    );
}

#[test]
fn a_verdict_that_comes_back_gets_a_new_id() {
    let mut d = det();
    run(
        &mut d,
        &[
            receipt("s1", "s1-d0", 1, T0, "A", 1),
            sale("s1", "s1-d1", 1, T0 + 6 * H, "o-1", &[Line("A", 1, 100)]),
        ],
    );
    let c = run(
        &mut d,
        &[sale("s1", "s1-d2", 1, T0 + H, "o-2", &[Line("A", 1, 100)])],
    );
    let v1 = raised(&c)[0].conflict_id.clone();
    // A late receipt at +3 h: the +6 h sale had stock after all.
    let c = run(&mut d, &[receipt("s1", "s1-d0", 2, T0 + 3 * H, "A", 1)]);
    assert_eq!(superseded(&c).len(), 1, "{c:#?}");
    assert!(raised(&c).is_empty(), "{c:#?}");
    // A late shrink at +4 h takes that unit again: the same verdict holds again, under a new id.
    let c = run(
        &mut d,
        &[adjust(
            "s1",
            "s1-d0",
            3,
            T0 + 4 * H,
            AdjustmentKind::Shrink,
            "A",
            1,
            None,
        )],
    );
    let back = raised(&c);
    assert_eq!(back.len(), 1, "{c:#?}");
    assert_eq!(back[0].evidence, vec![id("s1-d1", 1)]);
    assert_eq!(back[0].generation, 1);
    assert_ne!(back[0].conflict_id, v1);
}

#[test]
fn reservation_breach_and_its_supersede_by_a_late_release() {
    let mut d = det();
    let mut events = vec![receipt("s1", "s1-d1", 1, T0, "A", 3)];
    events.extend(reserve("s1", "s1-d9", 1, T0 + H, "r-1", "A", 2, "o-web"));
    // 3 on hand, 2 held for o-web: a walk-in sale of 2 takes one held unit.
    events.push(sale(
        "s1",
        "s1-d1",
        2,
        T0 + 4 * H,
        "o-walkin",
        &[Line("A", 2, 100)],
    ));
    let c = run(&mut d, &events);
    let r = raised(&c);
    assert_eq!(r.len(), 1, "{c:#?}");
    assert_eq!(r[0].rule, Rule::ReservationBreach);
    assert_eq!(r[0].triage, Triage::NeedsReview);
    assert_eq!(r[0].detail["held_units_taken"], "1");
    assert!(r[0].compensations.is_empty());
    assert!(r[0].evidence.contains(&id("s1-d9", 2)), "names the grant");
    // The reserved order itself buying is not a breach.
    let c = run(
        &mut d,
        &[sale(
            "s1",
            "s1-d1",
            3,
            T0 + 5 * H,
            "o-web",
            &[Line("A", 1, 100)],
        )],
    );
    assert!(
        raised(&c).iter().all(|v| v.rule != Rule::ReservationBreach),
        "{c:#?}"
    );
    // A release from +2 h arrives late: at +4 h nothing was held: superseded.
    let c = run(
        &mut d,
        &[release("s1", "s1-d9", 3, T0 + 2 * H, "r-1", "A", 2)],
    );
    let s = superseded(&c);
    assert_eq!(s.len(), 1, "{c:#?}");
    assert_eq!(s[0].0.rule, Rule::ReservationBreach);
}

#[test]
fn price_variance_within_tolerance_beyond_it_and_under_skew() {
    let mut d = det();
    d.apply_price_list(
        &price_list("s1", 1, T0, &[("A", 500), ("B", 500)]),
        Mode::Live,
    )
    .unwrap();
    d.apply_price_list(
        &price_list("s1", 2, T0 + 10 * H, &[("A", 450), ("B", 500)]),
        Mode::Live,
    )
    .unwrap();
    let c = run(
        &mut d,
        &[
            // 3 cents over: within max(5, 1% of 500 = 5): auto-accepted, for finance.
            sale("s1", "s1-d1", 1, T0 + 3 * H, "o-1", &[Line("A", 2, 503)]),
            // 50 under: review by merchandising, the adjustment carries +1.00 (2 x 0.50).
            sale("s1", "s1-d1", 2, T0 + 4 * H, "o-2", &[Line("A", 2, 450)]),
            // At +9 h, priced as v2 (effective +10 h): within the skew tolerance: review.
            sale("s1", "s1-d2", 1, T0 + 9 * H, "o-3", &[Line("A", 1, 450)]),
            // Exactly the approved price: nothing.
            sale(
                "s1",
                "s1-d2",
                2,
                T0 + 11 * H,
                "o-4",
                &[Line("A", 1, 450), Line("B", 1, 500)],
            ),
        ],
    );
    let r: Vec<&Verdict> = raised(&c)
        .into_iter()
        .filter(|v| v.rule == Rule::PriceVariance)
        .collect();
    assert_eq!(r.len(), 3, "{c:#?}");
    assert_eq!(
        (r[0].triage, r[0].owner),
        (Triage::AutoResolved, Owner::Finance)
    );
    assert_eq!(
        r[0].compensations[0].kind,
        CompensationKind::PriceAdjustment
    );
    assert_eq!(
        r[0].compensations[0].money,
        Some(eur(-6)),
        "(500 - 503) x 2"
    );
    assert_eq!(
        (r[1].triage, r[1].owner),
        (Triage::NeedsReview, Owner::Merchandising)
    );
    assert_eq!(
        r[1].compensations[0].money,
        Some(eur(100)),
        "(500 - 450) x 2"
    );
    assert_eq!(r[2].triage, Triage::NeedsReview);
    assert_eq!(r[2].detail["skew_ambiguous"], "true");
    assert!(
        r[2].explanation.contains("pl-s1-v2"),
        "{}",
        r[2].explanation
    );
}

#[test]
fn a_price_list_arriving_late_supersedes_a_variance() {
    let mut d = det();
    d.apply_price_list(&price_list("s1", 1, T0, &[("A", 500)]), Mode::Live)
        .unwrap();
    let c = run(
        &mut d,
        &[
            receipt("s1", "s1-d1", 1, T0, "A", 9),
            sale("s1", "s1-d1", 2, T0 + 8 * H, "o-1", &[Line("A", 1, 450)]),
        ],
    );
    assert_eq!(raised(&c).len(), 1);
    // The list that made 4.50 the price from +4 h reaches the history topic only now.
    let late = price_list("s1", 2, T0 + 4 * H, &[("A", 450)]);
    let c = d.apply_price_list(&late, Mode::Live).unwrap().unwrap();
    let s = superseded(&c);
    assert_eq!(s.len(), 1, "{c:#?}");
    assert_eq!(s[0].1, late.event_id);
    assert!(raised(&c).is_empty());
    // Known already: nothing.
    assert_eq!(d.apply_price_list(&late, Mode::Live).unwrap(), None);
}

#[test]
fn loyalty_double_redemption_first_wins_and_a_late_first_takes_over() {
    let cfg = CoreConfig {
        single_use_rewards: ["WELCOME".to_string()].into(),
        ..Default::default()
    };
    let mut d = Detector::new(cfg);
    let c = run(
        &mut d,
        &[
            redeem("s1", "s1-d1", 1, T0 + 5 * H, "rd-1", "M1", "FREECOFFEE"),
            redeem("s1", "s1-d2", 1, T0 + 8 * H, "rd-1", "M1", "FREECOFFEE"),
        ],
    );
    let r = raised(&c);
    assert_eq!(r.len(), 1);
    assert_eq!(
        (r[0].rule, r[0].triage),
        (Rule::LoyaltyDoubleRedemption, Triage::AutoResolved)
    );
    assert_eq!(
        r[0].evidence[0],
        id("s1-d2", 1),
        "the second is clawed back"
    );
    let comp = &r[0].compensations[0];
    assert_eq!(
        (comp.kind, comp.qty, comp.money.clone()),
        (CompensationKind::PointsClawback, 500, Some(eur(500)))
    );
    // A third copy that happened first (offline since +1 h): it is the original now.
    let c = run(
        &mut d,
        &[redeem("s1", "s1-d3", 1, T0 + H, "rd-1", "M1", "FREECOFFEE")],
    );
    assert_eq!(superseded(&c).len(), 1, "{c:#?}");
    assert_eq!(raised(&c).len(), 2);
    // Single-use reward under two redemption ids, 30 min apart on two devices: review.
    let c = run(
        &mut d,
        &[
            redeem("s1", "s1-d1", 2, T0 + 20 * H, "rd-7", "M2", "WELCOME"),
            redeem(
                "s1",
                "s1-d2",
                2,
                T0 + 20 * H + 1_800_000,
                "rd-8",
                "M2",
                "WELCOME",
            ),
        ],
    );
    let r = raised(&c);
    assert_eq!(r.len(), 1, "{c:#?}");
    assert_eq!(
        (r[0].rule, r[0].triage),
        (Rule::LoyaltyDoubleRedemption, Triage::NeedsReview)
    );
    assert!(r[0].explanation.contains("skew tolerance"));
    // Same redemption id, another member: a reused number, not a double redemption.
    let c = run(
        &mut d,
        &[redeem("s1", "s1-d1", 3, T0 + 30 * H, "rd-7", "M9", "OTHER")],
    );
    assert_eq!(raised(&c)[0].rule, Rule::DuplicateBusinessKey);
}

#[test]
fn duplicate_order_ids_go_to_review_without_compensation() {
    let mut d = det();
    let c = run(
        &mut d,
        &[
            receipt("s1", "s1-d1", 1, T0, "A", 10),
            sale("s1", "s1-d1", 2, T0 + H, "o-42", &[Line("A", 1, 100)]),
            sale("s1", "s1-d1", 9, T0 + 9 * H, "o-42", &[Line("A", 1, 100)]),
        ],
    );
    let r = raised(&c);
    assert_eq!(r.len(), 1, "{c:#?}");
    assert_eq!(
        (r[0].rule, r[0].triage),
        (Rule::DuplicateBusinessKey, Triage::NeedsReview)
    );
    assert_eq!(r[0].detail["key_field"], "order_id");
    assert!(r[0].explanation.contains("device reset"));
    assert!(r[0].compensations.is_empty());
}

#[test]
fn stale_count_is_applied_as_a_delta_and_recorded() {
    let mut d = det();
    let c = run(
        &mut d,
        &[
            receipt("s1", "s1-d1", 1, T0, "A", 10),
            // The counter's device had not seen this sale of 1 (5 h before the count).
            sale("s1", "s1-d2", 1, T0 + H, "o-1", &[Line("A", 1, 100)]),
            adjust(
                "s1",
                "s1-d1",
                2,
                T0 + 6 * H,
                AdjustmentKind::Count,
                "A",
                8,
                Some(10),
            ),
        ],
    );
    let r = raised(&c);
    assert_eq!(r.len(), 1, "{c:#?}");
    let v = r[0];
    assert_eq!(
        (v.rule, v.triage),
        (Rule::StaleCount, Triage::Info),
        "1 unit is within the threshold"
    );
    // Event-time on-hand 9, expected 10: difference -1; delta 8 - 10 = -2: on-hand 7.
    assert_eq!(v.detail["difference"], "-1");
    assert_eq!(v.detail["applied_delta"], "-2");
    assert_eq!(d.store("s1").unwrap().skus["A"].on_hand(), 7);
    // A bigger difference: review. Then one within the threshold, but with another device's sale
    // within the skew tolerance of the count: review too, and the explanation says why.
    let c = run(
        &mut d,
        &[
            sale("s1", "s1-d2", 2, T0 + 7 * H, "o-2", &[Line("A", 3, 100)]),
            adjust(
                "s1",
                "s1-d1",
                3,
                T0 + 12 * H,
                AdjustmentKind::Count,
                "A",
                4,
                Some(7),
            ),
            sale("s1", "s1-d2", 3, T0 + 15 * H, "o-3", &[Line("A", 1, 100)]),
            adjust(
                "s1",
                "s1-d1",
                4,
                T0 + 15 * H + 60_000,
                AdjustmentKind::Count,
                "A",
                0,
                Some(1),
            ),
        ],
    );
    // d2's sale 1 h after the first count lies within the skew tolerance of it: that count's
    // verdict becomes ambiguous (superseded, raised again for review).
    let s = superseded(&c);
    assert_eq!(s.len(), 1, "{c:#?}");
    assert_eq!(s[0].0.evidence[0], id("s1-d1", 2));
    assert_eq!(s[0].1, id("s1-d2", 2));
    let r = raised(&c);
    assert_eq!(r.len(), 3, "{c:#?}");
    assert_eq!(
        (r[0].triage, r[0].detail["skew_ambiguous"].as_str()),
        (Triage::NeedsReview, "true")
    );
    // 7 - 3 = 4 on hand, expected 7: -3; delta 4 - 7: on-hand 1.
    assert_eq!(
        (r[1].triage, r[1].detail["difference"].as_str()),
        (Triage::NeedsReview, "-3")
    );
    assert_eq!(r[1].detail["skew_ambiguous"], "false");
    // 1 - 1 = 0 on hand, expected 1: -1, the +15 h sale of d2 is 1 min away.
    assert_eq!(
        (r[2].triage, r[2].detail["difference"].as_str()),
        (Triage::NeedsReview, "-1")
    );
    assert_eq!(r[2].detail["skew_ambiguous"], "true");
    assert!(r[2].explanation.contains("skew tolerance"));
    assert_eq!(d.store("s1").unwrap().skus["A"].on_hand(), -1);
    // A count that saw everything: no verdict.
    let c = run(
        &mut d,
        &[
            receipt("s1", "s1-d1", 5, T0 + 20 * H, "A", 5),
            adjust(
                "s1",
                "s1-d1",
                6,
                T0 + 25 * H,
                AdjustmentKind::Count,
                "A",
                4,
                Some(4),
            ),
        ],
    );
    assert!(c.is_empty(), "{c:#?}");
}

#[test]
fn events_beyond_the_horizon_are_folded_not_judged() {
    let cfg = CoreConfig {
        horizon_ms: 24 * H,
        prune_every_ms: H,
        ..Default::default()
    };
    let mut d = Detector::new(cfg);
    run(
        &mut d,
        &[
            receipt("s1", "s1-d1", 1, T0, "A", 5),
            sale("s1", "s1-d1", 2, T0 + 30 * H, "o-1", &[Line("A", 1, 100)]),
            sale("s1", "s1-d1", 3, T0 + 50 * H, "o-2", &[Line("A", 1, 100)]),
        ],
    );
    let st = d.store("s1").unwrap();
    assert_eq!(st.retained_from, T0 + 50 * H - 24 * H);
    assert_eq!(st.skus["A"].entries.len(), 2, "the receipt is folded");
    assert_eq!(st.skus["A"].base, 5);
    // An offline sale of 10 from long before the retained history: counted, folded, not judged.
    let e = sale("s1", "s1-d2", 1, T0 + 2 * H, "o-0", &[Line("A", 10, 100)]);
    let a = d.apply(&e, T0 + 51 * H, Mode::Live).unwrap();
    assert!(a.beyond_horizon);
    // Its stock effect counts: the retained sales had no stock any more and are judged again; the
    // folded sale itself gets no verdict.
    let r = raised(&a.changes);
    let about: Vec<&str> = r.iter().map(|v| v.evidence[0].as_str()).collect();
    assert_eq!(
        about,
        vec![id("s1-d1", 2), id("s1-d1", 3)],
        "{:#?}",
        a.changes
    );
    assert_eq!(d.store("s1").unwrap().skus["A"].on_hand(), -7);
}

#[test]
fn money_that_would_overflow_is_refused_with_a_reason() {
    let mut d = det();
    let huge = sale("s1", "s1-d1", 1, T0, "o-1", &[Line("A", 3, i64::MAX / 2)]);
    let err = d.apply(&huge, T0, Mode::Live).unwrap_err();
    assert_eq!(err.reason, reason::MONEY_OUT_OF_RANGE);
    let zero = sale("s1", "s1-d1", 2, T0, "o-2", &[Line("A", 0, 100)]);
    assert_eq!(
        d.apply(&zero, T0, Mode::Live).unwrap_err().reason,
        reason::INVALID_QUANTITY
    );
    let list = price_list("s1", 1, T0, &[("A", i64::MIN)]);
    assert_eq!(
        d.apply_price_list(&list, Mode::Live).unwrap_err().reason,
        reason::MONEY_OUT_OF_RANGE
    );
    // Nothing of the refused inputs stayed.
    assert!(d.store("s1").is_none_or(|s| s.skus.is_empty()));
    assert_eq!(d.price_list_count(), 0);
    // The largest admitted amounts still compute exactly.
    let max = money::MAX_UNIT_MINOR;
    d.apply_price_list(&price_list("s1", 2, T0, &[("A", -max)]), Mode::Live)
        .unwrap();
    let c = run(
        &mut d,
        &[sale(
            "s1",
            "s1-d1",
            3,
            T0 + H,
            "o-3",
            &[Line("A", money::MAX_QTY as i32, max)],
        )],
    );
    let v = raised(&c)
        .into_iter()
        .find(|v| v.rule == Rule::PriceVariance)
        .unwrap();
    assert_eq!(
        v.compensations[0].money.as_ref().unwrap().amount_minor,
        -2 * max * money::MAX_QTY
    );
}

#[test]
fn identity_collisions_enter_the_queue_as_they_are() {
    let c = samples::conflict();
    assert!(collision::is_dedup_collision(&c));
    let v = collision::queue_entry(&c);
    assert_eq!(v.conflict_id, c.conflict_id);
    assert_eq!(
        (v.rule, v.triage, v.owner),
        (
            Rule::IdentityCollision,
            Triage::NeedsReview,
            Owner::StoreOps
        )
    );
    assert_eq!(v.evidence, c.event_ids);
    let mut own = c.clone();
    own.detector = DETECTOR.into();
    assert!(!collision::is_dedup_collision(&own));
}

#[test]
fn records_carry_rule_triage_owner_and_explanation() {
    let mut d = det();
    let c = run(
        &mut d,
        &[sale("s1", "s1-d1", 1, T0, "o-1", &[Line("A", 1, 100)])],
    );
    let v = raised(&c)[0];
    let rec = records::detected(v);
    assert_eq!(rec.kind, ConflictKind::Oversold);
    assert_eq!(rec.severity, Severity::Info);
    assert_eq!(rec.detector, DETECTOR);
    assert_eq!(rec.detail["rule"], "oversell");
    assert_eq!(rec.detail["triage"], "auto-resolved");
    assert_eq!(rec.detail["owner"], "store-ops");
    assert!(rec.detail["explanation"].contains(&id("s1-d1", 1)));
    assert_eq!(rec.detected_at, T0);
    let (r, comps) = records::reviewed(
        &v.conflict_id,
        "s1",
        "oversell",
        records::ReviewAction::Reject,
        "alice",
        "miscount",
        T0 + 9,
        &v.compensations,
    )
    .unwrap();
    assert_eq!(r.resolution, "rejected by alice: miscount");
    assert_eq!(r.resolved_by, "alice");
    assert_eq!(comps[0].qty, -1);
    assert_eq!(comps[0].issued_by, "review:alice");
    let (r, comps) = records::reviewed(
        &v.conflict_id,
        "s1",
        "oversell",
        records::ReviewAction::Accept,
        "alice",
        "ok",
        T0 + 9,
        &v.compensations,
    )
    .unwrap();
    assert!(comps.is_empty());
    assert_eq!(r.resolution, "accepted by alice: ok");
}

#[test]
fn replay_then_reconcile_finds_the_same_verdicts_or_what_changed_meanwhile() {
    let events = vec![
        receipt("s1", "s1-d1", 1, T0, "A", 1),
        sale("s1", "s1-d1", 2, T0 + H, "o-1", &[Line("A", 1, 500)]),
        sale("s1", "s1-d2", 1, T0 + 5 * H, "o-2", &[Line("A", 1, 450)]),
        sale(
            "s1",
            "s1-d2",
            2,
            T0 + 5 * H + 10,
            "o-2",
            &[Line("A", 1, 500)],
        ),
    ];
    let list = price_list("s1", 1, T0, &[("A", 500)]);
    let mut live = det();
    live.apply_price_list(&list, Mode::Live).unwrap();
    let verdicts: Vec<Verdict> = raised(&run(&mut live, &events))
        .into_iter()
        .cloned()
        .collect();
    assert_eq!(
        verdicts.len(),
        4,
        "two oversells, a variance, a duplicate order id"
    );
    // Restore: replay (no evaluation) and reconcile with what the database holds: nothing to do.
    let mut restored = det();
    restored.apply_price_list(&list, Mode::Replay).unwrap();
    for e in &events {
        assert!(
            restored
                .apply(e, e.occurred_at(), Mode::Replay)
                .unwrap()
                .changes
                .is_empty()
        );
    }
    let c = restored
        .reconcile("s1", verdicts.clone(), Default::default(), "restore")
        .unwrap();
    assert!(c.is_empty(), "{c:#?}");
    // A list that arrived while nobody owned the store: the restore supersedes the variance.
    let mut moved = det();
    moved.apply_price_list(&list, Mode::Replay).unwrap();
    moved
        .apply_price_list(
            &price_list("s1", 2, T0 + 4 * H, &[("A", 450)]),
            Mode::Replay,
        )
        .unwrap();
    for e in &events {
        moved.apply(e, e.occurred_at(), Mode::Replay).unwrap();
    }
    let c = moved
        .reconcile("s1", verdicts, Default::default(), "restore")
        .unwrap();
    let s = superseded(&c);
    assert_eq!(s.len(), 1, "{c:#?}");
    assert_eq!(s[0].0.rule, Rule::PriceVariance);
    // The +5 h sales at 5.00 are now variances against 4.50.
    assert_eq!(raised(&c).len(), 1);
}

// ---------------------------------------------------------------------------------------------
// Determinism
// ---------------------------------------------------------------------------------------------

/// The shared fixture workload: 6 stores, 120 events each, 70% of one device's events late.
fn workload(seed: u64) -> (Vec<PriceListApproved>, BTreeMap<String, Vec<DeviceEvent>>) {
    let w = crate::fixtures::workload(seed, 6, 120, T0, 70);
    (w.lists, w.per_store)
}

/// Runs the detector over one interleaving and returns, per partition, the encoded output
/// records in order.
fn outputs(
    lists: &[PriceListApproved],
    partitions: &[Vec<DeviceEvent>],
    order: &[usize],
) -> Vec<Vec<Vec<u8>>> {
    let mut d = det();
    for l in lists {
        d.apply_price_list(l, Mode::Live).unwrap();
    }
    let mut next = vec![0usize; partitions.len()];
    let mut out: Vec<Vec<Vec<u8>>> = vec![Vec::new(); partitions.len()];
    for &p in order {
        let e = &partitions[p][next[p]];
        next[p] += 1;
        let applied = d.apply(e, e.occurred_at(), Mode::Live).unwrap();
        for c in applied.changes {
            let bytes: Vec<Vec<u8>> = match &c {
                Change::Raised(v) => {
                    let mut b = vec![
                        codec::encode_record(EventKind::ConflictDetected, &records::detected(v))
                            .unwrap(),
                    ];
                    for comp in &v.compensations {
                        b.push(codec::encode_record(EventKind::Compensation, comp).unwrap());
                    }
                    if let Some(r) = records::auto_resolution(v) {
                        b.push(codec::encode_record(EventKind::ConflictResolved, &r).unwrap());
                    }
                    b
                }
                Change::Superseded { verdict, by, at } => {
                    let (r, rev) =
                        records::superseded(verdict, by, *at, &verdict.compensations).unwrap();
                    let mut b =
                        vec![codec::encode_record(EventKind::ConflictResolved, &r).unwrap()];
                    for comp in &rev {
                        b.push(codec::encode_record(EventKind::Compensation, comp).unwrap());
                    }
                    b
                }
            };
            out[p].extend(bytes);
        }
    }
    out
}

#[test]
fn any_interleaving_that_keeps_partition_order_gives_byte_identical_outputs_twice() {
    let (lists, per_store) = workload(7);
    // Stores over 3 partitions (two stores share each partition, interleaved in a fixed order).
    let mut partitions: Vec<Vec<DeviceEvent>> = vec![Vec::new(); 3];
    let stores: Vec<&Vec<DeviceEvent>> = per_store.values().collect();
    for (i, events) in stores.iter().enumerate() {
        let p = &mut partitions[i % 3];
        let mut merged = Vec::new();
        let (mut a, mut b) = (
            std::mem::take(p).into_iter().peekable(),
            events.iter().cloned().peekable(),
        );
        let mut flip = false;
        while a.peek().is_some() || b.peek().is_some() {
            flip = !flip;
            match (flip, a.peek().is_some(), b.peek().is_some()) {
                (true, true, _) | (false, true, false) => merged.push(a.next().unwrap()),
                _ => merged.push(b.next().unwrap()),
            }
        }
        *p = merged;
    }
    let base_order: Vec<usize> = partitions
        .iter()
        .enumerate()
        .flat_map(|(p, evs)| std::iter::repeat_n(p, evs.len()))
        .collect();
    let reference = outputs(&lists, &partitions, &base_order);
    let total: usize = reference.iter().map(Vec::len).sum();
    assert!(
        total > 50,
        "the workload must raise and supersede plenty: {total}"
    );
    let mut rng = ChaCha8Rng::seed_from_u64(99);
    for round in 0..6 {
        let mut order = base_order.clone();
        order.shuffle(&mut rng);
        for run in 0..2 {
            let got = outputs(&lists, &partitions, &order);
            assert_eq!(got, reference, "interleaving {round}, run {run}");
        }
    }
}

#[test]
fn the_determinism_check_notices_a_different_partition_order() {
    // The test above must be able to fail: swapping two events of one store changes its outputs.
    let (lists, per_store) = workload(7);
    let mut events = per_store["s0000"].clone();
    let reference = outputs(
        &lists,
        std::slice::from_ref(&events),
        &vec![0; events.len()],
    );
    let late = events
        .iter()
        .position(|e| e.device_id().ends_with("-d1"))
        .unwrap();
    let e = events.remove(late);
    events.push(e);
    let changed = outputs(
        &lists,
        std::slice::from_ref(&events),
        &vec![0; events.len()],
    );
    assert_ne!(changed, reference);
}

#[test]
fn the_fixture_workload_raises_and_supersedes_under_most_rules() {
    // The determinism tests are only as strong as the workload: it must exercise the rules and
    // late events must change verdicts.
    let (lists, per_store) = workload(7);
    let mut d = det();
    for l in &lists {
        d.apply_price_list(l, Mode::Live).unwrap();
    }
    let mut rules = std::collections::BTreeSet::new();
    let (mut raised_n, mut superseded_n) = (0, 0);
    for events in per_store.values() {
        for e in events {
            for c in d.apply(e, e.occurred_at(), Mode::Live).unwrap().changes {
                match c {
                    Change::Raised(v) => {
                        raised_n += 1;
                        rules.insert(v.rule);
                    }
                    Change::Superseded { .. } => superseded_n += 1,
                }
            }
        }
    }
    assert!(
        superseded_n > 5,
        "late events must supersede: {superseded_n}"
    );
    assert!(raised_n > 50, "{raised_n}");
    for r in [
        Rule::Oversell,
        Rule::PriceVariance,
        Rule::LoyaltyDoubleRedemption,
        Rule::DuplicateBusinessKey,
        Rule::StaleCount,
    ] {
        assert!(rules.contains(&r), "{r:?} never fired: {rules:?}");
    }
}

#[test]
fn a_restore_reconciles_to_exactly_the_live_verdicts() {
    // Live, verdicts come incrementally (late events re-evaluate from their position); a restore
    // evaluates everything at once. Both must agree, or every restart would rewrite verdicts.
    for (seed, stores, per_store, late) in [(7, 6, 120, 70), (11, 24, 60, 40), (23, 16, 60, 50)] {
        let w = crate::fixtures::workload(seed, stores, per_store, T0, late);
        let (lists, per_store) = (w.lists, w.per_store);
        let mut live = det();
        for l in &lists {
            live.apply_price_list(l, Mode::Live).unwrap();
        }
        let mut active: BTreeMap<String, Verdict> = BTreeMap::new();
        let mut generations: rustc_hash::FxHashMap<String, u32> = Default::default();
        for events in per_store.values() {
            for e in events {
                for c in live.apply(e, e.occurred_at(), Mode::Live).unwrap().changes {
                    match c {
                        Change::Raised(v) => {
                            active.insert(v.conflict_id.clone(), v);
                        }
                        Change::Superseded { verdict, .. } => {
                            let g = generations.entry(verdict.base_id.clone()).or_insert(0);
                            *g = (*g).max(verdict.generation + 1);
                            active.remove(&verdict.conflict_id);
                        }
                    }
                }
            }
        }
        let mut restored = det();
        for l in &lists {
            restored.apply_price_list(l, Mode::Replay).unwrap();
        }
        for events in per_store.values() {
            for e in events {
                restored.apply(e, e.occurred_at(), Mode::Replay).unwrap();
            }
        }
        for store in per_store.keys() {
            let persisted: Vec<Verdict> = active
                .values()
                .filter(|v| &v.store_id == store)
                .cloned()
                .collect();
            let c = restored
                .reconcile(store, persisted, generations.clone(), "restore")
                .unwrap();
            assert!(
                c.is_empty(),
                "seed {seed} store {store}: {:#?}",
                c.iter().take(2).collect::<Vec<_>>()
            );
        }
    }
}
