//! Deterministic sample events of every kind, for tests, examples and benchmarks in every crate.
//! Pure; no I/O.

use std::collections::BTreeMap;

use crate::catalog::EventKind;
use crate::codec::DeviceEvent;
use crate::events::*;

/// 2026-11-02T10:00:00Z in ms.
pub const T0: i64 = 1_793_872_800_000;
/// 2026-11-02 as days since the epoch.
pub const DAY0: i32 = 20_759;

/// A deterministic UUID-shaped id for sample number `n` of a device.
pub fn event_uuid(device_id: &str, seq: i64) -> String {
    uuid::Uuid::new_v5(
        &uuid::Uuid::NAMESPACE_OID,
        format!("{device_id}/{seq}").as_bytes(),
    )
    .to_string()
}

fn eur(minor: i64) -> Money {
    Money::new(minor, "EUR")
}

/// A valid, internally consistent sale with `lines` lines.
pub fn order(store: &str, device: &str, seq: i64, lines: usize) -> OrderCreated {
    let mut order_lines = Vec::new();
    let (mut gross, mut disc, mut tax) = (0i64, 0i64, 0i64);
    for i in 0..lines.max(1) {
        let qty = 1 + (seq as i32 + i as i32) % 3;
        let price = 199 + 100 * ((seq + i as i64) % 7);
        let line_gross = price * qty as i64;
        let d = if i % 2 == 1 { line_gross / 10 } else { 0 };
        let t = (line_gross - d) * 20 / 100;
        gross += line_gross;
        disc += d;
        tax += t;
        order_lines.push(OrderLine {
            line_no: i as i32 + 1,
            sku: format!("SKU-{:04}", (seq as usize * 7 + i * 13) % 50),
            qty,
            unit_price: eur(price),
            discounts: if d > 0 {
                vec![Discount {
                    code: "PROMO10".into(),
                    amount: eur(d),
                }]
            } else {
                vec![]
            },
            tax: eur(t),
        });
    }
    let net = gross - disc + tax;
    OrderCreated {
        event_id: event_uuid(device, seq),
        device_id: device.into(),
        store_id: store.into(),
        seq,
        occurred_at: T0 + seq * 1000,
        schema_version: 2,
        order_id: format!("{device}-o{seq}"),
        business_date: DAY0,
        lines: order_lines,
        tenders: vec![Tender {
            method: if seq % 2 == 0 {
                TenderMethod::Card
            } else {
                TenderMethod::Cash
            },
            amount: eur(net),
            reference: (seq % 2 == 0).then(|| format!("auth-{seq}")),
        }],
        totals: OrderTotals {
            gross: eur(gross),
            discounts: eur(disc),
            tax: eur(tax),
            net: eur(net),
        },
        loyalty_member_id: (seq % 3 == 0).then(|| format!("M{seq:05}")),
    }
}

/// One sample event of `kind` for (store, device, seq); every optional field set on odd seqs.
pub fn sample(kind: EventKind, store: &str, device: &str, seq: i64) -> Option<DeviceEvent> {
    let event_id = event_uuid(device, seq);
    let (device_id, store_id) = (device.to_string(), store.to_string());
    let occurred_at = T0 + seq * 1000;
    let odd = seq % 2 == 1;
    Some(match kind {
        EventKind::OrderCreated => order(store, device, seq, 3).into(),
        EventKind::OrderRefunded => OrderRefunded {
            event_id,
            device_id,
            store_id,
            seq,
            occurred_at,
            schema_version: 1,
            refund_id: format!("r{seq}"),
            order_id: format!("{device}-o{}", seq - 1),
            business_date: DAY0,
            lines: vec![RefundLine {
                line_no: 1,
                sku: "SKU-0007".into(),
                qty: 1,
                amount: eur(240),
                tax: eur(40),
                restock: odd,
            }],
            tenders: vec![Tender {
                method: TenderMethod::Cash,
                amount: eur(240),
                reference: None,
            }],
            total: eur(240),
            reason: "damaged".into(),
        }
        .into(),
        EventKind::InventoryAdjusted => InventoryAdjusted {
            event_id,
            device_id,
            store_id,
            seq,
            occurred_at,
            schema_version: 1,
            adjustment_id: format!("a{seq}"),
            kind: if odd {
                AdjustmentKind::Count
            } else {
                AdjustmentKind::Receipt
            },
            lines: vec![AdjustmentLine {
                sku: "SKU-0001".into(),
                quantity: 12,
                expected_on_hand: odd.then_some(13),
            }],
            reference: odd.then(|| "PO-77".to_string()),
            counterparty_store_id: None,
            reason: odd.then(|| "cycle count".to_string()),
        }
        .into(),
        EventKind::StockReservationRequested => StockReservationRequested {
            event_id,
            device_id,
            store_id,
            seq,
            occurred_at,
            schema_version: 1,
            reservation_id: format!("res{seq}"),
            sku: "SKU-0003".into(),
            qty: 1,
            order_ref: odd.then(|| "o-1".to_string()),
            expires_at: occurred_at + 900_000,
        }
        .into(),
        EventKind::StockReservationGranted => StockReservationGranted {
            event_id,
            device_id,
            store_id,
            seq,
            occurred_at,
            schema_version: 1,
            reservation_id: format!("res{seq}"),
            sku: "SKU-0003".into(),
            qty: 1,
            granted_by: "reservation-service".into(),
            expires_at: occurred_at + 900_000,
        }
        .into(),
        EventKind::StockReservationReleased => StockReservationReleased {
            event_id,
            device_id,
            store_id,
            seq,
            occurred_at,
            schema_version: 1,
            reservation_id: format!("res{seq}"),
            sku: "SKU-0003".into(),
            qty: 1,
            reason: ReleaseReason::Fulfilled,
        }
        .into(),
        EventKind::PriceListApproved => PriceListApproved {
            event_id,
            device_id,
            store_id,
            seq,
            occurred_at,
            schema_version: 1,
            price_list_id: format!("pl-{store}-{seq}"),
            effective_from: occurred_at,
            approved_by: "pricing@hq".into(),
            items: (0..3)
                .map(|i| PriceItem {
                    sku: format!("SKU-{i:04}"),
                    price: eur(199 + i * 100),
                })
                .collect(),
        }
        .into(),
        EventKind::LoyaltyRedeemed => LoyaltyRedeemed {
            event_id,
            device_id,
            store_id,
            seq,
            occurred_at,
            schema_version: 1,
            redemption_id: format!("red{seq}"),
            member_id: "M00042".into(),
            points: 500,
            reward_code: "COFFEE".into(),
            value: eur(350),
            order_id: odd.then(|| "o-9".to_string()),
            business_date: DAY0,
        }
        .into(),
        EventKind::DeviceHealth => DeviceHealth {
            event_id,
            device_id,
            store_id,
            seq,
            occurred_at,
            schema_version: 1,
            status: if odd {
                DeviceStatus::OfflineBuffering
            } else {
                DeviceStatus::Ok
            },
            app_version: "4.2.0".into(),
            uptime_s: 3600,
            outbox_depth: if odd { 17 } else { 0 },
            battery_pct: odd.then_some(80),
            last_sync_at: odd.then_some(occurred_at - 60_000),
        }
        .into(),
        EventKind::StoreDayClosed => StoreDayClosed {
            event_id,
            device_id,
            store_id,
            seq,
            occurred_at,
            schema_version: 1,
            business_date: DAY0,
            order_count: 2,
            refund_count: 0,
            gross: eur(1000),
            discounts: eur(0),
            tax: eur(200),
            net: eur(1200),
            refunds: eur(0),
            tender_totals: vec![TenderTotal {
                method: TenderMethod::Card,
                amount: eur(1200),
            }],
            first_seq: 1,
            last_seq: seq - 1,
        }
        .into(),
        _ => return None,
    })
}

/// An `InventoryAdjusted` of one line: `qty` of `sku`, with the count the device expected (for a
/// cycle count).
pub fn adjustment(
    store: &str,
    device: &str,
    seq: i64,
    kind: AdjustmentKind,
    sku: &str,
    qty: i32,
    expected: Option<i32>,
) -> DeviceEvent {
    let Some(DeviceEvent::InventoryAdjusted(mut a)) =
        sample(EventKind::InventoryAdjusted, store, device, seq)
    else {
        unreachable!("sample always gives the kind asked for")
    };
    a.kind = kind;
    a.lines = vec![AdjustmentLine {
        sku: sku.into(),
        quantity: qty,
        expected_on_hand: expected,
    }];
    a.into()
}

/// Sample pipeline records (they are not `DeviceEvent`s).
pub fn dead_letter() -> DeadLetter {
    DeadLetter {
        dead_letter_id: event_uuid("dlq", 1),
        service: "store-bridge".into(),
        reason: "bad_json".into(),
        detail: "expected value at line 1 column 1".into(),
        source_kind: SourceKind::Mqtt,
        source_topic: "store/s001/pos/order.created".into(),
        source_partition: None,
        source_offset: Some(7),
        key: Some(b"s001".to_vec()),
        payload: vec![0xff, 0x00, b'{'],
        headers: BTreeMap::from([("mqtt.qos".to_string(), "1".to_string())]),
        store_id: Some("s001".into()),
        device_id: None,
        event_id: None,
        failed_at: T0,
    }
}

pub fn conflict() -> ConflictDetected {
    ConflictDetected {
        conflict_id: event_uuid("conflict", 1),
        kind: ConflictKind::IdentityCollision,
        severity: Severity::Critical,
        store_id: "s001".into(),
        sku: Some("SKU-0001".into()),
        event_ids: vec![event_uuid("d", 1)],
        detail: BTreeMap::from([("first_fingerprint".to_string(), "ab".to_string())]),
        detected_at: T0,
        detector: "dedup".into(),
    }
}

pub fn conflict_resolved() -> ConflictResolved {
    ConflictResolved {
        conflict_id: event_uuid("conflict", 1),
        store_id: "s001".into(),
        rule: "first_timestamp_wins".into(),
        resolution: "second sale backordered".into(),
        compensating_event_ids: vec![event_uuid("comp", 1)],
        resolved_at: T0 + 5,
        resolved_by: "conflict-detector".into(),
    }
}

pub fn compensation() -> Compensation {
    Compensation {
        compensation_id: event_uuid("comp", 1),
        conflict_id: event_uuid("conflict", 1),
        kind: CompensationKind::Backorder,
        store_id: "s001".into(),
        sku: Some("SKU-0001".into()),
        qty: 1,
        money: Some(eur(499)),
        evidence_event_ids: vec![event_uuid("d", 1), event_uuid("d", 2)],
        reason: "the later of two sales of the last unit".into(),
        reverses: None,
        effective_at: T0,
        issued_by: "conflict-detector".into(),
    }
}

pub fn gap() -> SequenceGap {
    SequenceGap {
        gap_id: event_uuid("gap", 1),
        device_id: "s001-d01".into(),
        store_id: "s001".into(),
        from_seq: 5,
        to_seq: 9,
        status: GapStatus::PartiallyFilled,
        still_missing: 3,
        observed_at: T0,
    }
}

pub fn receipt() -> DeviceReceipt {
    DeviceReceipt {
        device_id: "s001-d01".into(),
        store_id: "s001".into(),
        epoch: 0,
        epoch_started_at: T0,
        from_seq: 1,
        acked_through_seq: 12,
        missing: vec![
            SeqRange {
                from_seq: 5,
                to_seq: 6,
            },
            SeqRange {
                from_seq: 9,
                to_seq: 9,
            },
        ],
        issued_at: T0 + 7,
    }
}
