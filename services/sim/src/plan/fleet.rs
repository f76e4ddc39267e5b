//! The generator's state — the seeded random source, every device with its seq counter, its planned
//! events and heartbeats, its day books and past sales, the prices in force and the truth so far —
//! and the builders of the events several phases record (the header every event shares, sales, stock
//! adjustments). Pure: everything random comes from the one seeded source, in call order.

use std::collections::BTreeMap;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use tillstream_contracts::{
    AdjustmentKind, AdjustmentLine, DeviceEvent, Discount, Header, InventoryAdjusted, Money,
    OrderCreated, OrderLine, OrderTotals, PriceListApproved, Tender, TenderMethod,
};

use super::{CURRENCY, DevicePlan, FleetSpec, Plan};
use crate::truth::Truth;

/// A device's record of one business date's trading, for its day close.
#[derive(Debug, Clone, Default)]
pub(super) struct DayBook {
    pub(super) orders: i32,
    pub(super) refunds: i32,
    pub(super) gross: i64,
    pub(super) discounts: i64,
    pub(super) tax: i64,
    pub(super) net: i64,
    pub(super) refunded: i64,
    /// Net sales per tender method (its `Debug` name).
    pub(super) tenders: BTreeMap<String, i64>,
    /// Seq of the day's first sale (0 until one is recorded).
    pub(super) first_seq: i64,
}

/// One generated store event of a device and how it travels.
#[derive(Debug, Clone)]
pub(super) struct PlannedEvent {
    pub(super) event: DeviceEvent,
    /// Never published (a gap).
    pub(super) missing: bool,
    /// Must be published while the device is offline (constructed oversell).
    pub(super) force_offline: bool,
}

/// A heartbeat and where it is published: before the device's event at `before_event` (its count of
/// events when the heartbeat was due).
#[derive(Debug, Clone)]
pub(super) struct PlannedHeartbeat {
    pub(super) before_event: usize,
    pub(super) event: DeviceEvent,
}

/// One simulated POS device while its plan is generated.
pub(super) struct PlannedDevice {
    pub(super) id: String,
    pub(super) store: String,
    /// 1 (the old app) or 2: the OrderCreated schema version it writes.
    pub(super) order_schema_version: i32,
    /// Offset of the device's clock from true time (ms), added to every `occurred_at`.
    pub(super) clock_skew_ms: i64,
    /// Seq of its latest store event.
    pub(super) seq: i64,
    /// Seq of its latest heartbeat (heartbeats count on their own).
    pub(super) health_seq: i64,
    pub(super) events: Vec<PlannedEvent>,
    pub(super) heartbeats: Vec<PlannedHeartbeat>,
    /// Per business date.
    pub(super) day_books: BTreeMap<i32, DayBook>,
    /// Every sale it recorded, for refunds.
    pub(super) sales: Vec<OrderCreated>,
    /// A late till (`late`): online only after its store's first day was exported.
    pub(super) late: bool,
}

impl PlannedDevice {
    /// Device number `n` (from 1) of `store`, before it has recorded anything.
    pub(super) fn new(
        store: String,
        n: u32,
        order_schema_version: i32,
        clock_skew_ms: i64,
        late: bool,
    ) -> Self {
        PlannedDevice {
            id: format!("{store}-d{n:02}"),
            store,
            order_schema_version,
            clock_skew_ms,
            seq: 0,
            health_seq: 0,
            events: Vec::new(),
            heartbeats: Vec::new(),
            day_books: BTreeMap::new(),
            sales: Vec::new(),
            late,
        }
    }
}

/// The state every phase of [`super::generate`] reads and extends.
pub(super) struct FleetGenerator {
    pub(super) spec: FleetSpec,
    pub(super) rng: ChaCha8Rng,
    pub(super) devices: Vec<PlannedDevice>,
    pub(super) truth: Truth,
    /// Prices changed by an approved price list, per (store, sku); other skus sell at
    /// [`super::pricing::base_price`].
    pub(super) prices: BTreeMap<(String, u32), i64>,
    pub(super) price_lists: Vec<PriceListApproved>,
}

/// A store event record `$event { .. }` whose identity and ordering fields come from the
/// [`Header`] `$header` (with its schema version), followed by the record's own fields. The
/// contracts' event records are flat, so without this every builder spells the six out.
macro_rules! store_event {
    ($event:ident, $header:ident, { $($fields:tt)* }) => {
        $event {
            event_id: $header.event_id,
            device_id: $header.device_id,
            store_id: $header.store_id,
            seq: $header.seq,
            occurred_at: $header.occurred_at,
            schema_version: $header.schema_version,
            $($fields)*
        }
    };
}
pub(super) use store_event;

pub(super) fn random_uuid(rng: &mut ChaCha8Rng) -> String {
    uuid::Builder::from_random_bytes(rng.random())
        .into_uuid()
        .to_string()
}

pub(super) fn eur(minor: i64) -> Money {
    Money::new(minor, CURRENCY)
}

pub(super) fn sku_name(i: u32) -> String {
    format!("SKU-{i:05}")
}

pub(super) fn store_name(i: u32) -> String {
    format!("s{i:03}")
}

impl FleetGenerator {
    /// Seeds the random source and draws each device's app version and clock skew, store by store.
    pub(super) fn new(spec: &FleetSpec) -> Self {
        let mut rng = ChaCha8Rng::seed_from_u64(spec.seed);
        let mut devices = Vec::new();
        for s in 0..spec.stores {
            for d in 0..spec.devices_per_store {
                let order_schema_version = if rng.random_bool(spec.v1_fraction.clamp(0.0, 1.0)) {
                    1
                } else {
                    2
                };
                let clock_skew_ms = if rng.random_bool(spec.skewed_fraction.clamp(0.0, 1.0)) {
                    if rng.random_bool(0.5) {
                        spec.clock_skew_ms
                    } else {
                        -spec.clock_skew_ms
                    }
                } else {
                    0
                };
                devices.push(PlannedDevice::new(
                    store_name(s),
                    d + 1,
                    order_schema_version,
                    clock_skew_ms,
                    false,
                ));
            }
        }
        FleetGenerator {
            spec: spec.clone(),
            rng,
            devices,
            truth: Truth::new(CURRENCY),
            prices: BTreeMap::new(),
            price_lists: Vec::new(),
        }
    }

    pub(super) fn into_plan(mut self, devices: Vec<DevicePlan>) -> Plan {
        for dev in self.devices.iter().filter(|d| d.late) {
            for date in dev.day_books.keys() {
                self.truth.late_days.insert((dev.store.clone(), *date));
            }
            // The ones the ledger books (the receipt moves stock only).
            let ids = dev
                .events
                .iter()
                .filter(|p| {
                    matches!(
                        p.event,
                        DeviceEvent::OrderCreated(_)
                            | DeviceEvent::OrderRefunded(_)
                            | DeviceEvent::LoyaltyRedeemed(_)
                            | DeviceEvent::StoreDayClosed(_)
                    )
                })
                .map(|p| p.event.event_id().to_string());
            self.truth.late_events.extend(ids);
        }
        Plan {
            devices,
            price_lists: self.price_lists,
            truth: self.truth,
        }
    }

    /// Indices of the devices of `store`, in device order.
    pub(super) fn store_devices(&self, store: &str) -> Vec<usize> {
        (0..self.devices.len())
            .filter(|i| self.devices[*i].store == store)
            .collect()
    }

    /// The next store event header of device `d` at true time `at`: a fresh event id, the next seq,
    /// the device's clock.
    pub(super) fn header(&mut self, d: usize, at: i64) -> Header {
        let event_id = random_uuid(&mut self.rng);
        let dev = &mut self.devices[d];
        dev.seq += 1;
        Header {
            event_id,
            device_id: dev.id.clone(),
            store_id: dev.store.clone(),
            seq: dev.seq,
            occurred_at: at + dev.clock_skew_ms,
            schema_version: 1,
        }
    }

    /// Appends `event` to device `d`'s events and applies it to the truth.
    pub(super) fn record(&mut self, d: usize, event: impl Into<DeviceEvent>) {
        self.record_planned(d, event.into(), false);
    }

    /// Like [`Self::record`], for an event the device must publish while offline.
    pub(super) fn record_offline(&mut self, d: usize, event: impl Into<DeviceEvent>) {
        self.record_planned(d, event.into(), true);
    }

    fn record_planned(&mut self, d: usize, event: DeviceEvent, force_offline: bool) {
        self.truth.apply(&event);
        self.devices[d].events.push(PlannedEvent {
            event,
            missing: false,
            force_offline,
        });
    }

    /// A sale by device `d` of `(sku, qty)` lines at the store's prices in force, with a random
    /// 10% promotion per line, 20% tax, a random tender and (v2 apps) sometimes a loyalty member.
    /// Booked in the device's day book and kept for refunds; the caller records it.
    pub(super) fn order_created(
        &mut self,
        d: usize,
        at: i64,
        business_date: i32,
        lines: Vec<(u32, i32)>,
    ) -> OrderCreated {
        let mut h = self.header(d, at);
        h.schema_version = self.devices[d].order_schema_version;
        let mut order_lines = Vec::new();
        let (mut gross, mut disc, mut tax) = (0i64, 0i64, 0i64);
        let store = self.devices[d].store.clone();
        for (i, (sku, qty)) in lines.into_iter().enumerate() {
            let price = self.price(&store, sku);
            let line_gross = price * i64::from(qty);
            let d_amt = if self.rng.random_bool(0.2) {
                line_gross / 10
            } else {
                0
            };
            let t = (line_gross - d_amt) * 20 / 100;
            gross += line_gross;
            disc += d_amt;
            tax += t;
            order_lines.push(OrderLine {
                line_no: i as i32 + 1,
                sku: sku_name(sku),
                qty,
                unit_price: eur(price),
                discounts: if d_amt > 0 {
                    vec![Discount {
                        code: "PROMO10".into(),
                        amount: eur(d_amt),
                    }]
                } else {
                    vec![]
                },
                tax: eur(t),
            });
        }
        let net = gross - disc + tax;
        let method = match self.rng.random_range(0..10) {
            0..=5 => TenderMethod::Card,
            6..=8 => TenderMethod::Cash,
            _ => TenderMethod::Mobile,
        };
        let loyalty = (h.schema_version == 2 && self.rng.random_bool(0.3))
            .then(|| format!("M{:06}", self.rng.random_range(0..100_000)));
        let order = store_event!(OrderCreated, h, {
            order_id: format!("{}-{}", self.devices[d].id, h.seq),
            business_date,
            lines: order_lines,
            tenders: vec![Tender {
                method,
                amount: eur(net),
                reference: (method != TenderMethod::Cash).then(|| format!("auth-{}", h.seq)),
            }],
            totals: OrderTotals {
                gross: eur(gross),
                discounts: eur(disc),
                tax: eur(tax),
                net: eur(net),
            },
            loyalty_member_id: loyalty,
        });
        let book = self.devices[d].day_books.entry(business_date).or_default();
        if book.first_seq == 0 {
            book.first_seq = order.seq;
        }
        book.orders += 1;
        book.gross += gross;
        book.discounts += disc;
        book.tax += tax;
        book.net += net;
        *book.tenders.entry(format!("{method:?}")).or_default() += net;
        self.devices[d].sales.push(order.clone());
        order
    }

    /// A stock adjustment by device `d` (receipts carry a PO reference, shrink a reason, transfers
    /// the other store); the caller records it.
    pub(super) fn inventory_adjusted(
        &mut self,
        d: usize,
        at: i64,
        kind: AdjustmentKind,
        lines: Vec<AdjustmentLine>,
        counterparty: Option<String>,
    ) -> InventoryAdjusted {
        let h = self.header(d, at);
        store_event!(InventoryAdjusted, h, {
            adjustment_id: format!("adj-{}-{}", self.devices[d].id, h.seq),
            kind,
            lines,
            reference: matches!(kind, AdjustmentKind::Receipt).then(|| format!("PO-{}", h.seq)),
            counterparty_store_id: counterparty,
            reason: matches!(kind, AdjustmentKind::Shrink).then(|| "damaged".to_string()),
        })
    }

    /// A goods receipt by device `d`: `quantity` units of each `(sku, quantity)`; the caller records
    /// it.
    pub(super) fn receipt(
        &mut self,
        d: usize,
        at: i64,
        skus: Vec<(String, i32)>,
    ) -> InventoryAdjusted {
        let lines = skus
            .into_iter()
            .map(|(sku, quantity)| AdjustmentLine {
                sku,
                quantity,
                expected_on_hand: None,
            })
            .collect();
        self.inventory_adjusted(d, at, AdjustmentKind::Receipt, lines, None)
    }
}
