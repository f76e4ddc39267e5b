//! Unit tests of the pure projection (`model.rs`): stock, sales, refunds, counts, reservations,
//! offline lag and the gate rows, event kind by event kind. No I/O.

use std::collections::BTreeMap;

use super::*;
use tillstream_contracts::samples;
use tillstream_contracts::*;

fn env(event: impl Into<DeviceEvent>, offset: i64, lag: i64) -> Envelope {
    let event = event.into();
    Envelope {
        partition: 0,
        offset,
        record_ts: event.occurred_at() + lag,
        event,
    }
}

fn adjust(seq: i64, kind: AdjustmentKind, qty: i32, expected: Option<i32>) -> DeviceEvent {
    samples::adjustment("s1", "s1-d1", seq, kind, "SKU-A", qty, expected)
}

fn sale(seq: i64, sku: &str, qty: i32) -> DeviceEvent {
    let mut o = samples::order("s1", "s1-d1", seq, 1);
    o.lines[0].sku = sku.into();
    o.lines[0].qty = qty;
    o.into()
}

#[test]
fn sale_moves_stock_down_and_books_sales_in_its_hour() {
    let o = samples::order("s1", "s1-d1", 4, 3);
    let e = env(o.clone(), 10, 5);
    let d = project(&[&e], &ProjectionParams::default()).unwrap();
    assert_eq!(d.movements.len(), 3);
    assert!(
        d.movements
            .iter()
            .zip(&o.lines)
            .all(|(m, l)| m.qty_delta == Some(-i64::from(l.qty)) && m.movement == "SALE")
    );
    let gross: i64 = d.sales.iter().map(|s| s.d.gross).sum();
    let net: i64 = d.sales.iter().map(|s| s.d.net).sum();
    assert_eq!(gross, o.totals.gross.amount_minor);
    assert_eq!(net, o.totals.net.amount_minor);
    assert!(d.sales.iter().all(|s| s.hour_start % HOUR_MS == 0));
    assert!(d.sales.iter().all(|s| s.hour_start <= o.occurred_at));
    assert_eq!(d.sync.len(), 1);
    assert_eq!(d.sync[0].last_lag_ms, 5);
    assert_eq!(d.sync[0].offline_events, 0);
    assert_eq!(d.days[0].d.orders, 1);
}

#[test]
fn refunds_restock_only_when_flagged() {
    let mut r = match samples::sample(EventKind::OrderRefunded, "s1", "s1-d1", 3) {
        Some(DeviceEvent::OrderRefunded(r)) => r,
        _ => unreachable!(),
    };
    r.lines[0].restock = true;
    let mut r2 = r.clone();
    r2.event_id = "other".into();
    r2.lines[0].restock = false;
    let (a, b) = (env(r, 1, 0), env(r2, 2, 0));
    let d = project(&[&a, &b], &ProjectionParams::default()).unwrap();
    assert_eq!(d.movements.len(), 1);
    assert_eq!(d.movements[0].movement, "RETURN");
    assert_eq!(d.movements[0].qty_delta, Some(1));
    assert_eq!(d.sales[0].d.qty_returned, 2);
    assert_eq!(d.sales[0].d.refund_lines, 2);
}

#[test]
fn count_with_expected_is_a_variance_and_blind_count_overwrites() {
    let evs = [
        env(adjust(1, AdjustmentKind::Receipt, 10, None), 1, 0),
        env(sale(2, "SKU-A", 2), 2, 0),
        env(adjust(3, AdjustmentKind::Count, 7, Some(8)), 3, 0),
    ];
    let refs: Vec<_> = evs.iter().collect();
    let d = project(&refs, &ProjectionParams::default()).unwrap();
    let s = d.stock.iter().find(|s| s.sku == "SKU-A").unwrap();
    assert_eq!((s.set, s.add, s.moves), (None, 10 - 2 - 1, 3));
    assert_eq!(d.movements[2].movement, "COUNT_VARIANCE");
    assert_eq!(d.movements[2].counted_qty, Some(7));

    let evs = [
        env(adjust(1, AdjustmentKind::Receipt, 10, None), 1, 0),
        env(adjust(2, AdjustmentKind::Count, 4, None), 2, 0),
        env(adjust(3, AdjustmentKind::Shrink, 1, None), 3, 0),
    ];
    let refs: Vec<_> = evs.iter().collect();
    let d = project(&refs, &ProjectionParams::default()).unwrap();
    let s = &d.stock[0];
    assert_eq!((s.set, s.add, s.moves), (Some(4), -1, 3));
    assert_eq!(s.last_event_id, evs[2].event.event_id());
    assert_eq!(d.movements[1].qty_delta, None);
}

#[test]
fn reservations_merge_across_kinds_and_expire() {
    let mk = |kind, seq| env(samples::sample(kind, "s1", "s1-d1", seq).unwrap(), seq, 0);
    let mut granted = mk(EventKind::StockReservationGranted, 2);
    let mut released = mk(EventKind::StockReservationReleased, 3);
    // Same reservation id for all three.
    for e in [&mut granted, &mut released] {
        match &mut e.event {
            DeviceEvent::StockReservationGranted(g) => g.reservation_id = "res1".into(),
            DeviceEvent::StockReservationReleased(r) => {
                r.reservation_id = "res1".into();
                r.reason = ReleaseReason::Expired;
            }
            _ => unreachable!(),
        }
    }
    let requested = mk(EventKind::StockReservationRequested, 1);
    let d = project(&[&requested, &granted], &ProjectionParams::default()).unwrap();
    assert_eq!(d.reservations.len(), 1);
    assert_eq!(d.reservations[0].status(), "GRANTED");
    assert_eq!(d.reservations[0].requested_qty, Some(1));
    assert_eq!(
        d.reservations[0].expires_at,
        Some(granted.event.occurred_at() + 900_000)
    );
    let d = project(
        &[&requested, &granted, &released],
        &ProjectionParams::default(),
    )
    .unwrap();
    assert_eq!(d.reservations[0].status(), "EXPIRED");
}

#[test]
fn offline_events_and_lag_follow_the_threshold() {
    let p = ProjectionParams {
        offline_threshold_ms: 1000,
    };
    let a = env(sale(1, "X", 1), 1, 5000);
    let b = env(sale(2, "X", 1), 2, 10);
    let d = project(&[&a, &b], &p).unwrap();
    let s = &d.sync[0];
    assert_eq!((s.events, s.offline_events), (2, 1));
    assert_eq!((s.last_lag_ms, s.max_lag_ms), (10, 5000));
    assert_eq!(s.last_seen_at, b.record_ts.max(a.record_ts));
}

#[test]
fn gate_rows_keep_the_first_copy_of_an_event_id() {
    let a = env(sale(1, "X", 1), 1, 0);
    let mut b = a.clone();
    b.offset = 9;
    let batch = vec![a, b];
    let rows: Vec<i64> = gate_rows(&batch).iter().map(|r| r.offset).collect();
    assert_eq!(rows, vec![1]);
}

/// Amounts at and around the edges of 64 bits, and ordinary ones.
const EXTREME_AMOUNTS: [i64; 12] = [
    i64::MIN,
    i64::MIN + 1,
    -4_611_686_018_427_387_904,
    -100_000_000_000,
    -1,
    0,
    1,
    199,
    100_000_000_000,
    4_611_686_018_427_387_904,
    5_000_000_000_000_000_000,
    i64::MAX,
];

/// What the sales rows must hold, computed exactly (128 bits) in stream order: `Err(event id)` of
/// the first event one of whose figures, or whose addition to a sum, leaves 64 bits.
fn exact_sales(batch: &[&Envelope]) -> Result<BTreeMap<(String, i64), [i128; 6]>, String> {
    let fits = |v: i128| v >= i128::from(i64::MIN) && v <= i128::from(i64::MAX);
    let mut rows: BTreeMap<(String, i64), [i128; 6]> = BTreeMap::new();
    for env in batch {
        let hour = env.event.occurred_at().div_euclid(HOUR_MS) * HOUR_MS;
        let mut figures: Vec<(String, [i128; 6])> = Vec::new();
        match &env.event {
            DeviceEvent::OrderCreated(o) => {
                for l in &o.lines {
                    let gross = i128::from(l.unit_price.amount_minor) * i128::from(l.qty);
                    let mut disc = 0i128;
                    for d in &l.discounts {
                        disc += i128::from(d.amount.amount_minor);
                        if !fits(disc) {
                            return Err(o.event_id.clone());
                        }
                    }
                    let tax = i128::from(l.tax.amount_minor);
                    let net = gross - disc + tax;
                    if !fits(gross) || !fits(gross - disc) || !fits(net) {
                        return Err(o.event_id.clone());
                    }
                    figures.push((l.sku.clone(), [gross, disc, tax, net, 0, 0]));
                }
            }
            DeviceEvent::OrderRefunded(r) => {
                for l in &r.lines {
                    let (a, t) = (
                        i128::from(l.amount.amount_minor),
                        i128::from(l.tax.amount_minor),
                    );
                    figures.push((l.sku.clone(), [0, 0, 0, 0, a, t]));
                }
            }
            _ => {}
        }
        for (sku, f) in figures {
            let row = rows.entry((sku, hour)).or_default();
            for (acc, v) in row.iter_mut().zip(f) {
                *acc += v;
                if !fits(*acc) {
                    return Err(env.event.event_id().to_string());
                }
            }
        }
    }
    Ok(rows)
}

#[test]
fn extreme_amounts_either_sum_exactly_or_name_the_event_that_overflows() {
    use rand::{Rng, SeedableRng};
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(12);
    let mut refused = 0;
    for case in 0..2_000 {
        let events: Vec<Envelope> = (0..rng.random_range(1..6))
            .map(|i| {
                let seq = case * 10 + i + 1;
                let amount = |rng: &mut rand_chacha::ChaCha8Rng| {
                    EXTREME_AMOUNTS[rng.random_range(0..EXTREME_AMOUNTS.len())]
                };
                let event: DeviceEvent = if rng.random_bool(0.7) {
                    let mut o = samples::order("s1", "s1-d1", seq, 2);
                    for l in &mut o.lines {
                        l.sku = "SKU-X".into();
                        l.qty = [1, 2, 3, 1_000, i32::MAX][rng.random_range(0..5)];
                        l.unit_price.amount_minor = amount(&mut rng);
                        l.tax.amount_minor = amount(&mut rng);
                        for d in &mut l.discounts {
                            d.amount.amount_minor = amount(&mut rng);
                        }
                    }
                    o.into()
                } else {
                    let Some(DeviceEvent::OrderRefunded(mut r)) =
                        samples::sample(EventKind::OrderRefunded, "s1", "s1-d1", seq)
                    else {
                        unreachable!()
                    };
                    r.lines[0].sku = "SKU-X".into();
                    r.lines[0].amount.amount_minor = amount(&mut rng);
                    r.lines[0].tax.amount_minor = amount(&mut rng);
                    r.into()
                };
                env(event, seq, 5)
            })
            .collect();
        let refs: Vec<&Envelope> = events.iter().collect();
        match (
            project(&refs, &ProjectionParams::default()),
            exact_sales(&refs),
        ) {
            (Ok(d), Ok(want)) => {
                let got: BTreeMap<(String, i64), [i128; 6]> = d
                    .sales
                    .iter()
                    .map(|r| {
                        let s = &r.d;
                        let f = [
                            s.gross,
                            s.discounts,
                            s.tax,
                            s.net,
                            s.refunded,
                            s.refunded_tax,
                        ];
                        ((r.sku.to_string(), r.hour_start), f.map(i128::from))
                    })
                    .collect();
                assert_eq!(got, want, "case {case}");
            }
            (Err(e), Err(first)) => {
                assert_eq!(e.event_id, first, "case {case}: {e}");
                assert!(e.to_string().starts_with(OVERFLOW_REASON));
                refused += 1;
            }
            (got, want) => panic!("case {case}: projected {got:?}, exact {want:?}"),
        }
    }
    // Both outcomes were exercised.
    assert!(
        refused > 100 && refused < 1_900,
        "{refused} of 2000 refused"
    );
}

#[test]
fn two_orders_of_five_quintillion_each_do_not_wrap() {
    let mut a = samples::order("s1", "s1-d1", 1, 1);
    let mut b = samples::order("s1", "s1-d1", 2, 1);
    for o in [&mut a, &mut b] {
        o.lines[0].sku = "SKU-X".into();
        o.lines[0].qty = 1;
        o.lines[0].unit_price.amount_minor = 5_000_000_000_000_000_000;
        o.lines[0].tax.amount_minor = 0;
        o.lines[0].discounts.clear();
    }
    let (a, b) = (env(a, 1, 5), env(b, 2, 5));
    let one = project(&[&a], &ProjectionParams::default()).unwrap();
    assert_eq!(one.sales[0].d.gross, 5_000_000_000_000_000_000);
    let err = project(&[&a, &b], &ProjectionParams::default()).unwrap_err();
    assert_eq!(err.event_id, b.event.event_id());
    assert_eq!(err.what, "gross");
}
