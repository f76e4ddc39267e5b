//! Event builders for the detector's tests and bench: deterministic store events and price lists
//! with just the fields the rules read (the rest is filled, consistent enough for the codec).
//! Pure; no I/O.

use tillstream_contracts::*;

/// 2026-11-05T10:00:00Z.
pub const T0: i64 = 1_793_872_800_000;
/// One hour in milliseconds.
pub const H: i64 = 3_600_000;

/// `m` EUR minor units.
pub fn eur(m: i64) -> Money {
    Money::new(m, "EUR")
}

/// The event id of a device's `seq`-th event.
pub fn id(device: &str, seq: i64) -> String {
    samples::event_uuid(device, seq)
}

/// A sale line: (sku, qty, unit price in EUR minor units).
pub struct Line<'a>(pub &'a str, pub i32, pub i64);

/// A sale with the given lines (line numbers from 1).
pub fn sale(
    store: &str,
    device: &str,
    seq: i64,
    at: i64,
    order: &str,
    lines: &[Line<'_>],
) -> DeviceEvent {
    OrderCreated {
        event_id: id(device, seq),
        device_id: device.into(),
        store_id: store.into(),
        seq,
        occurred_at: at,
        schema_version: 2,
        order_id: order.into(),
        business_date: samples::DAY0,
        lines: lines
            .iter()
            .enumerate()
            .map(|(i, Line(sku, qty, price))| OrderLine {
                line_no: i as i32 + 1,
                sku: (*sku).into(),
                qty: *qty,
                unit_price: eur(*price),
                discounts: vec![],
                tax: eur(0),
            })
            .collect(),
        tenders: vec![],
        totals: OrderTotals {
            gross: eur(0),
            discounts: eur(0),
            tax: eur(0),
            net: eur(0),
        },
        loyalty_member_id: None,
    }
    .into()
}

/// An adjustment of one line.
#[allow(clippy::too_many_arguments)]
pub fn adjust(
    store: &str,
    device: &str,
    seq: i64,
    at: i64,
    kind: AdjustmentKind,
    sku: &str,
    qty: i32,
    expected: Option<i32>,
) -> DeviceEvent {
    InventoryAdjusted {
        event_id: id(device, seq),
        device_id: device.into(),
        store_id: store.into(),
        seq,
        occurred_at: at,
        schema_version: 1,
        adjustment_id: format!("adj-{device}-{seq}"),
        kind,
        lines: vec![AdjustmentLine {
            sku: sku.into(),
            quantity: qty,
            expected_on_hand: expected,
        }],
        reference: None,
        counterparty_store_id: None,
        reason: None,
    }
    .into()
}

/// A goods receipt of one sku.
pub fn receipt(store: &str, device: &str, seq: i64, at: i64, sku: &str, qty: i32) -> DeviceEvent {
    adjust(
        store,
        device,
        seq,
        at,
        AdjustmentKind::Receipt,
        sku,
        qty,
        None,
    )
}

/// A redemption of 500 points worth 5.00 EUR.
pub fn redeem(
    store: &str,
    device: &str,
    seq: i64,
    at: i64,
    redemption: &str,
    member: &str,
    reward: &str,
) -> DeviceEvent {
    LoyaltyRedeemed {
        event_id: id(device, seq),
        device_id: device.into(),
        store_id: store.into(),
        seq,
        occurred_at: at,
        schema_version: 1,
        redemption_id: redemption.into(),
        member_id: member.into(),
        points: 500,
        reward_code: reward.into(),
        value: eur(500),
        order_id: None,
        business_date: samples::DAY0,
    }
    .into()
}

/// Version `version` of a store's list, effective (and approved) at `effective`.
pub fn price_list(
    store: &str,
    version: i64,
    effective: i64,
    prices: &[(&str, i64)],
) -> PriceListApproved {
    PriceListApproved {
        event_id: samples::event_uuid(&format!("pricing/{store}"), version),
        device_id: "pricing".into(),
        store_id: store.into(),
        seq: version,
        occurred_at: effective,
        schema_version: 1,
        price_list_id: format!("pl-{store}-v{version}"),
        effective_from: effective,
        approved_by: "pricing@hq".into(),
        items: prices
            .iter()
            .map(|(sku, p)| PriceItem {
                sku: (*sku).into(),
                price: eur(*p),
            })
            .collect(),
    }
}

/// A reservation request (`order`) and its grant one millisecond later, by a web device.
#[allow(clippy::too_many_arguments)]
pub fn reserve(
    store: &str,
    device: &str,
    seq: i64,
    at: i64,
    reservation: &str,
    sku: &str,
    qty: i32,
    order: &str,
) -> Vec<DeviceEvent> {
    vec![
        StockReservationRequested {
            event_id: id(device, seq),
            device_id: device.into(),
            store_id: store.into(),
            seq,
            occurred_at: at,
            schema_version: 1,
            reservation_id: reservation.into(),
            sku: sku.into(),
            qty,
            order_ref: Some(order.into()),
            expires_at: at + 24 * H,
        }
        .into(),
        StockReservationGranted {
            event_id: id(device, seq + 1),
            device_id: device.into(),
            store_id: store.into(),
            seq: seq + 1,
            occurred_at: at + 1,
            schema_version: 1,
            reservation_id: reservation.into(),
            sku: sku.into(),
            qty,
            granted_by: "hq".into(),
            expires_at: at + 24 * H,
        }
        .into(),
    ]
}

/// A reservation's release.
pub fn release(
    store: &str,
    device: &str,
    seq: i64,
    at: i64,
    reservation: &str,
    sku: &str,
    qty: i32,
) -> DeviceEvent {
    StockReservationReleased {
        event_id: id(device, seq),
        device_id: device.into(),
        store_id: store.into(),
        seq,
        occurred_at: at,
        schema_version: 1,
        reservation_id: reservation.into(),
        sku: sku.into(),
        qty,
        reason: ReleaseReason::Cancelled,
    }
    .into()
}
