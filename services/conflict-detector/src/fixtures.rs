//! Event builders for the detector's tests and bench: deterministic store events and price lists
//! with just the fields the rules read (the rest is filled, consistent enough for the codec).
//! Pure; no I/O.

use std::collections::BTreeMap;

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

/// A small deterministic generator (splitmix64): the same seed gives the same workload.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (`n > 0`).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }

    /// True with probability `percent` / 100.
    pub fn percent(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

/// A mixed workload: per store, its events in the order the dedup would emit them, and every
/// store's price lists (three versions, 8 h apart).
#[derive(Debug, Clone, Default)]
pub struct Workload {
    pub lists: Vec<PriceListApproved>,
    pub per_store: BTreeMap<String, Vec<DeviceEvent>>,
}

impl Workload {
    /// Every store's events interleaved round-robin (one store after the other, event by event),
    /// as several stores' traffic reaches the topic.
    pub fn interleaved(&self) -> Vec<DeviceEvent> {
        let mut iters: Vec<std::slice::Iter<'_, DeviceEvent>> =
            self.per_store.values().map(|v| v.iter()).collect();
        let mut out = Vec::new();
        loop {
            let mut any = false;
            for it in &mut iters {
                if let Some(e) = it.next() {
                    out.push(e.clone());
                    any = true;
                }
            }
            if !any {
                return out;
            }
        }
    }

    pub fn len(&self) -> usize {
        self.per_store.values().map(Vec::len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// `stores` stores with `per_store` events each from `t0` on, 12 minutes apart per store: sales
/// (mostly at the list price, some off it), receipts, counts, redemptions, from three devices:
/// `d2`'s clock runs 90 min ahead, and `late_percent` of `d1`'s events go offline (they reach the
/// stream after the store's other events, in their own order). Every rule fires somewhere;
/// oversells happen when sales outrun the small receipts.
pub fn workload(
    seed: u64,
    stores: usize,
    per_store: usize,
    t0: i64,
    late_percent: u64,
) -> Workload {
    let mut rng = Rng::new(seed);
    let mut w = Workload::default();
    for s in 0..stores {
        let store = format!("s{s:04}");
        for v in 0..3i64 {
            let prices: Vec<(String, i64)> = (0..5)
                .map(|k| (format!("K{k}"), 400 + 10 * ((k + v + s as i64) % 4)))
                .collect();
            let refs: Vec<(&str, i64)> = prices.iter().map(|(k, p)| (k.as_str(), *p)).collect();
            w.lists
                .push(price_list(&store, v + 1, t0 + v * 8 * H, &refs));
        }
        let mut events: Vec<DeviceEvent> = Vec::with_capacity(per_store + 5);
        let mut seqs = [0i64; 3];
        for k in 0..5i64 {
            let dev = format!("{store}-d0");
            seqs[0] += 1;
            events.push(receipt(&store, &dev, seqs[0], t0 + k, &format!("K{k}"), 6));
        }
        for i in 0..per_store as i64 {
            let d = rng.below(3) as usize;
            let dev = format!("{store}-d{d}");
            seqs[d] += 1;
            let skew = if d == 2 { 90 * 60_000 } else { 0 };
            let at = t0 + i * 12 * 60_000 + skew;
            let sku = format!("K{}", rng.below(5));
            let e = match rng.below(10) {
                0 => receipt(&store, &dev, seqs[d], at, &sku, 1 + rng.below(4) as i32),
                1 => adjust(
                    &store,
                    &dev,
                    seqs[d],
                    at,
                    AdjustmentKind::Count,
                    &sku,
                    2,
                    Some(3),
                ),
                2 => redeem(
                    &store,
                    &dev,
                    seqs[d],
                    at,
                    &format!("rd-{}", i % 7),
                    "M1",
                    "R",
                ),
                _ => {
                    let order = format!("o-{}", rng.below(100_000));
                    let price = [400, 410, 420, 430, 455][rng.below(5) as usize];
                    sale(
                        &store,
                        &dev,
                        seqs[d],
                        at,
                        &order,
                        &[Line(&sku, 1 + rng.below(2) as i32, price)],
                    )
                }
            };
            events.push(e);
        }
        let (offline, mut online): (Vec<DeviceEvent>, Vec<DeviceEvent>) = events
            .into_iter()
            .partition(|e| e.device_id().ends_with("-d1") && rng.percent(late_percent));
        online.extend(offline);
        w.per_store.insert(store, online);
    }
    w
}

/// A steady-state workload: what a fleet sends on an ordinary day, with conflicts as rare as in a
/// well-run store. Per store: an opening receipt of every sku, then sales at the price in force
/// (1% off it), restocks before a sku runs low, rare counts (0.2%) that saw everything in
/// generation order, unique redemptions (0.1% redeemed twice on another device); `d2`'s clock runs 90 min ahead and `late_percent` of
/// `d1`'s events arrive late. For benches: the rules' common path, not their conflict path.
pub fn steady_workload(
    seed: u64,
    stores: usize,
    per_store: usize,
    t0: i64,
    late_percent: u64,
) -> Workload {
    let mut rng = Rng::new(seed);
    let mut w = Workload::default();
    let skus = 40usize;
    for s in 0..stores {
        let store = format!("s{s:04}");
        let span = per_store as i64 * 60_000;
        let versions = 3i64;
        let mut lists = Vec::new();
        for v in 0..versions {
            let prices: Vec<(String, i64)> = (0..skus)
                .map(|k| (format!("K{k}"), 199 + 10 * ((k as i64 * 7 + v) % 40)))
                .collect();
            let refs: Vec<(&str, i64)> = prices.iter().map(|(k, p)| (k.as_str(), *p)).collect();
            lists.push(price_list(&store, v + 1, t0 + v * span / versions, &refs));
        }
        let price = |sku: usize, at: i64| -> i64 {
            let v = lists
                .iter()
                .rposition(|l| l.effective_from <= at)
                .unwrap_or(0);
            lists[v].items[sku].price.amount_minor
        };
        let mut events: Vec<DeviceEvent> = Vec::with_capacity(per_store + 1);
        let mut seqs = [0i64; 3];
        let mut on_hand = vec![0i64; skus];
        seqs[0] += 1;
        let opening = InventoryAdjusted {
            event_id: id(&format!("{store}-d0"), 1),
            device_id: format!("{store}-d0"),
            store_id: store.clone(),
            seq: 1,
            occurred_at: t0,
            schema_version: 1,
            adjustment_id: format!("open-{store}"),
            kind: AdjustmentKind::Receipt,
            lines: (0..skus)
                .map(|k| {
                    on_hand[k] = 200;
                    AdjustmentLine {
                        sku: format!("K{k}"),
                        quantity: 200,
                        expected_on_hand: None,
                    }
                })
                .collect(),
            reference: None,
            counterparty_store_id: None,
            reason: None,
        };
        events.push(opening.into());
        for i in 0..per_store as i64 {
            let d = rng.below(3) as usize;
            let dev = format!("{store}-d{d}");
            seqs[d] += 1;
            let at = t0 + 1 + i * 60_000 + if d == 2 { 90 * 60_000 } else { 0 };
            let k = rng.below(skus as u64) as usize;
            let sku = format!("K{k}");
            let roll = rng.below(1000);
            let e = if on_hand[k] < 40 {
                on_hand[k] += 200;
                receipt(&store, &dev, seqs[d], at, &sku, 200)
            } else if roll < 2 {
                let c = on_hand[k] as i32;
                adjust(
                    &store,
                    &dev,
                    seqs[d],
                    at,
                    AdjustmentKind::Count,
                    &sku,
                    c,
                    Some(c),
                )
            } else if roll < 22 {
                let rid = if roll < 21 {
                    format!("rd-{dev}-{i}")
                } else {
                    format!("rd-{store}-{}", i / 2)
                };
                redeem(&store, &dev, seqs[d], at, &rid, &format!("M{i}"), "R")
            } else {
                let qty = 1 + rng.below(2) as i32;
                on_hand[k] -= i64::from(qty);
                // Devices price from the list in force by their own clock; 1% off it.
                let p = price(k, at);
                let p = if roll < 32 { p + 60 } else { p };
                sale(
                    &store,
                    &dev,
                    seqs[d],
                    at,
                    &format!("o-{dev}-{i}"),
                    &[Line(&sku, qty, p)],
                )
            };
            events.push(e);
        }
        let (late, mut online): (Vec<DeviceEvent>, Vec<DeviceEvent>) = events
            .into_iter()
            .partition(|e| e.device_id().ends_with("-d1") && rng.percent(late_percent));
        online.extend(late);
        w.lists.extend(lists);
        w.per_store.insert(store, online);
    }
    w
}
