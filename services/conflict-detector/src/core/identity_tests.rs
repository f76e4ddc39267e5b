//! What a verdict's identity rests on, under late events: an event that lands before a verdict's
//! entry re-evaluates it, but only a changed decision (shortfall, compensation, triage, the rule's
//! figures) may supersede it. Issue 16: at 1M events an oversell's id named the run's last winner
//! and every other device's winning sale within the skew tolerance, so each late stock move before
//! a run's crossing point superseded and re-raised every loser after it with the same backorder
//! (1.34M oversell supersedes for 131,838 expected oversells, a compensation reversed and issued
//! again each time).

use tillstream_contracts::*;

use super::tests::{det, raised, run, superseded};
use super::*;

use crate::fixtures::*;

/// How many times each entry (first evidence id) was raised.
fn raises_per_entry(changes: &[Change]) -> BTreeMap<String, usize> {
    let mut n = BTreeMap::new();
    for v in raised(changes) {
        *n.entry(v.evidence[0].clone()).or_insert(0) += 1;
    }
    n
}

#[test]
fn a_late_sale_before_a_run_does_not_re_derive_the_oversells_after_it() {
    let mut d = det();
    // One unit: d1 sells it at +1 h; its +6 h sale is oversold by 1 (backorder, auto: d1 only).
    let c = run(
        &mut d,
        &[
            receipt("s1", "s1-d0", 1, T0, "A", 1),
            sale("s1", "s1-d1", 1, T0 + H, "o-1", &[Line("A", 1, 100)]),
            sale("s1", "s1-d1", 2, T0 + 6 * H, "o-2", &[Line("A", 1, 100)]),
        ],
    );
    let r = raised(&c);
    assert_eq!(r.len(), 1, "{c:#?}");
    let held = r[0].clone();
    assert_eq!(held.evidence[0], id("s1-d1", 2));
    // d2's offline sale from +30 min arrives: it got the unit, so d1's +1 h sale is oversold now
    // (30 min apart on two devices: review). The +6 h sale had no stock before and has none now:
    // same shortfall, same backorder, same triage. Its verdict must stand as it was.
    let c = run(
        &mut d,
        &[sale(
            "s1",
            "s1-d2",
            1,
            T0 + H / 2,
            "o-0",
            &[Line("A", 1, 100)],
        )],
    );
    assert!(
        superseded(&c).is_empty(),
        "the +6 h verdict was re-derived: {c:#?}"
    );
    let r = raised(&c);
    assert_eq!(r.len(), 1, "{c:#?}");
    assert_eq!(r[0].evidence[0], id("s1-d1", 1));
    assert_eq!(r[0].triage, Triage::NeedsReview);
}

#[test]
fn an_offline_backlog_raises_each_oversell_once() {
    // Five units; d1 sells one an hour for ten hours: its last five sales are oversold.
    let mut events = vec![receipt("s1", "s1-d0", 1, T0, "A", 5)];
    for k in 1..=10 {
        events.push(sale(
            "s1",
            "s1-d1",
            k,
            T0 + k * H,
            &format!("o-1-{k}"),
            &[Line("A", 1, 100)],
        ));
    }
    let mut d = det();
    let before = run(&mut d, &events);
    assert_eq!(raised(&before).len(), 5, "{before:#?}");
    // d2 comes back online with three sales from the first half hour: they happened first, so d1's
    // sales 3 to 5 lose their units too, one per late sale. d1's sales 6 to 10 stay oversold by 1
    // each, as they were.
    let backlog: Vec<DeviceEvent> = (1..=3)
        .map(|k| {
            sale(
                "s1",
                "s1-d2",
                k,
                T0 + k * 10 * 60_000,
                &format!("o-2-{k}"),
                &[Line("A", 1, 100)],
            )
        })
        .collect();
    let after = run(&mut d, &backlog);
    assert!(
        superseded(&after).is_empty(),
        "{} verdicts superseded with nothing changed",
        superseded(&after).len()
    );
    let expected: BTreeMap<String, usize> = (3..=5).map(|k| (id("s1-d1", k), 1)).collect();
    assert_eq!(raises_per_entry(&after), expected);
    // Nine late stock moves, one verdict each at most: every oversell raised once over the run.
    let mut all = before;
    all.extend(after);
    assert!(raises_per_entry(&all).values().all(|n| *n == 1));
}

#[test]
fn a_late_move_near_a_count_that_leaves_its_difference_does_not_re_derive_it() {
    let mut d = det();
    // Ten on hand, the counter expected 9 and found 8: difference 1 (info), then d2's sale 30 min
    // after the count lies within the skew tolerance: the verdict goes to review (a real change).
    let c = run(
        &mut d,
        &[
            receipt("s1", "s1-d1", 1, T0, "A", 10),
            adjust(
                "s1",
                "s1-d1",
                2,
                T0 + 5 * H,
                AdjustmentKind::Count,
                "A",
                8,
                Some(9),
            ),
            sale(
                "s1",
                "s1-d2",
                1,
                T0 + 5 * H + 30 * 60_000,
                "o-1",
                &[Line("A", 1, 100)],
            ),
        ],
    );
    assert_eq!(superseded(&c).len(), 1, "{c:#?}");
    let held = raised(&c).last().copied().cloned().unwrap();
    assert_eq!(
        (held.rule, held.triage),
        (Rule::StaleCount, Triage::NeedsReview)
    );
    // d3's sale an hour after the count arrives: after the count (its difference holds) and the
    // count was under review already. Nothing to decide again.
    let c = run(
        &mut d,
        &[sale(
            "s1",
            "s1-d3",
            1,
            T0 + 6 * H,
            "o-2",
            &[Line("A", 1, 100)],
        )],
    );
    assert!(c.is_empty(), "{c:#?}");
}
