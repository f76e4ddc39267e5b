//! Unit tests of the pure projection (`model.rs`): stock, sales, refunds, counts, reservations,
//! offline lag and the gate rows, event kind by event kind. No I/O.

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
    let Some(DeviceEvent::InventoryAdjusted(mut a)) =
        samples::sample(EventKind::InventoryAdjusted, "s1", "s1-d1", seq)
    else {
        unreachable!()
    };
    a.kind = kind;
    a.lines = vec![AdjustmentLine {
        sku: "SKU-A".into(),
        quantity: qty,
        expected_on_hand: expected,
    }];
    a.into()
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
    let d = project(&[&e], &ProjectionParams::default());
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
    let d = project(&[&a, &b], &ProjectionParams::default());
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
    let d = project(&refs, &ProjectionParams::default());
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
    let d = project(&refs, &ProjectionParams::default());
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
    let d = project(&[&requested, &granted], &ProjectionParams::default());
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
    );
    assert_eq!(d.reservations[0].status(), "EXPIRED");
}

#[test]
fn offline_events_and_lag_follow_the_threshold() {
    let p = ProjectionParams {
        offline_threshold_ms: 1000,
    };
    let a = env(sale(1, "X", 1), 1, 5000);
    let b = env(sale(2, "X", 1), 2, 10);
    let d = project(&[&a, &b], &p);
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
