//! Fleet plan: a seeded, deterministic description of what every POS device of a fleet does — the
//! events it emits (in seq order) and how it publishes them over MQTT (online, offline with a local
//! buffer and a burst on reconnect, retries that duplicate, reordering, a mix of schema v1 and v2,
//! clock skew, poison payloads) — and the price lists the cloud approves meanwhile (devices price
//! their sales from the list in force; the lists themselves travel cloud → Kafka → bridge downlink →
//! retained MQTT). The ground truth is computed while planning. Pure: the same spec and seed always
//! give byte-identical payloads.

use std::collections::{BTreeMap, BTreeSet};

use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use tillstream_contracts::*;

use crate::truth::{Gap, Truth};

/// 2026-11-02T06:00:00Z: default opening time of the first simulated trading day.
pub const T0: i64 = 1_793_858_400_000;
const DAY_MS: i64 = 86_400_000;

/// 06:00 UTC of the day `days_back` days before the day of `now_ms`: a start that keeps a run's
/// events recent (inside the dedup horizon) while staying the same for every run started that day.
pub fn recent_start(now_ms: i64, days_back: u32) -> i64 {
    (now_ms.div_euclid(DAY_MS) - i64::from(days_back)) * DAY_MS + 6 * 3_600_000
}
const CURRENCY: &str = "EUR";

/// Poison publishes: each must end up as exactly one dead letter with its reason.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct PoisonSpec {
    pub bad_json: u32,
    pub missing_field: u32,
    pub wrong_type: u32,
    pub oversize: u32,
    pub spoofed_store: u32,
    pub unknown_schema_version: u32,
}

impl PoisonSpec {
    pub fn total(&self) -> u32 {
        self.bad_json
            + self.missing_field
            + self.wrong_type
            + self.oversize
            + self.spoofed_store
            + self.unknown_schema_version
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct FleetSpec {
    pub seed: u64,
    pub stores: u32,
    pub devices_per_store: u32,
    /// Store events to generate (health heartbeats and poison come on top).
    pub events: u64,
    pub skus: u32,
    /// Trading days the run spans (one business date each).
    pub days: u32,
    /// Share of devices still running the v1 app (OrderCreated v1).
    pub v1_fraction: f64,
    /// Share of devices that go offline at least once.
    pub offline_fraction: f64,
    /// Offline periods per offline device.
    pub offline_periods: u32,
    /// Events a device records while offline, per period (its local buffer).
    pub offline_events: u32,
    /// Probability that an event is published twice (a retry after a lost ack).
    pub duplicate_rate: f64,
    /// Events sent just before a disconnect that are re-sent after reconnecting.
    pub replay_on_reconnect: u32,
    /// Reordering window of a reconnect burst.
    pub reorder_window: usize,
    /// Events re-published with the same event_id but different content (a device bug).
    pub collisions: u32,
    /// Events a device loses and never publishes (sequence gaps).
    pub missing: u32,
    /// Constructed oversells: two offline devices of one store both sell its last unit.
    pub oversell: u32,
    /// One heartbeat every N store events of a device (0 = none).
    pub health_every: u32,
    /// Price lists the cloud approves during the run (each for one store, changing a few prices;
    /// the store's devices price later sales from it).
    pub price_changes: u32,
    /// Clock skew of skewed devices, +/- this many ms.
    pub clock_skew_ms: i64,
    pub skewed_fraction: f64,
    pub poison: PoisonSpec,
    /// Payload size used for oversize poison (above the bridge's limit).
    pub oversize_bytes: usize,
    /// Opening time (UTC ms) of the first trading day; default 2026-11-02T06:00Z. Part of the plan:
    /// the same spec, start and seed give the same payloads.
    pub start_ms: Option<i64>,
}

impl Default for FleetSpec {
    fn default() -> Self {
        FleetSpec {
            seed: 42,
            stores: 4,
            devices_per_store: 2,
            events: 2_000,
            skus: 40,
            days: 2,
            v1_fraction: 0.3,
            offline_fraction: 0.5,
            offline_periods: 2,
            offline_events: 30,
            duplicate_rate: 0.02,
            replay_on_reconnect: 5,
            reorder_window: 6,
            collisions: 3,
            missing: 4,
            oversell: 2,
            health_every: 25,
            price_changes: 4,
            clock_skew_ms: 2 * 3_600_000,
            skewed_fraction: 0.2,
            poison: PoisonSpec::default(),
            oversize_bytes: 300_000,
            start_ms: None,
        }
    }
}

/// Why a payload is published.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Purpose {
    Event,
    Duplicate,
    Collision,
    Poison(String),
}

/// One MQTT publish of a device.
#[derive(Debug, Clone)]
pub struct Publish {
    pub topic: String,
    pub payload: Vec<u8>,
    pub purpose: Purpose,
}

#[derive(Debug, Clone)]
pub enum Step {
    Publish(Publish),
    /// The device loses its uplink (disconnects); what follows until `Online` is buffered.
    Offline,
    /// The uplink returns.
    Online,
}

#[derive(Debug, Clone)]
pub struct DevicePlan {
    pub device_id: String,
    pub store_id: String,
    pub steps: Vec<Step>,
}

impl DevicePlan {
    pub fn publishes(&self) -> usize {
        self.steps
            .iter()
            .filter(|s| matches!(s, Step::Publish(_)))
            .count()
    }
}

#[derive(Debug, Clone)]
pub struct Plan {
    pub devices: Vec<DevicePlan>,
    /// Cloud → store documents, in approval order: what the pricing service publishes on the
    /// downlink topic (key [`price_list_key`]).
    pub price_lists: Vec<PriceListApproved>,
    pub truth: Truth,
}

/// The issuer of the simulated price lists (their `device_id`).
pub const PRICING_SERVICE: &str = "cloud-pricing";

/// The downlink topic's key of a store's price list: `{store_id}/price-list` (the bridge publishes it
/// retained on `store/{store_id}/catalog/price-list`).
pub fn price_list_key(store_id: &str) -> String {
    format!("{store_id}/price-list")
}

impl Plan {
    pub fn publishes(&self) -> usize {
        self.devices.iter().map(DevicePlan::publishes).sum()
    }

    /// The fleet registry CSV (device_id,store_id) the bridge and mosquitto need.
    pub fn fleet_csv(&self) -> String {
        let mut s = String::from("device_id,store_id\n");
        for d in &self.devices {
            s.push_str(&format!("{},{}\n", d.device_id, d.store_id));
        }
        s
    }
}

/// The MQTT topic a device publishes an event of `kind` on.
pub fn mqtt_topic(event: &DeviceEvent) -> String {
    let s = event.store_id();
    match event {
        DeviceEvent::OrderCreated(_) => format!("store/{s}/pos/order.created"),
        DeviceEvent::OrderRefunded(_) => format!("store/{s}/pos/order.refunded"),
        DeviceEvent::InventoryAdjusted(_) => format!("store/{s}/inventory/adjusted"),
        DeviceEvent::StockReservationRequested(_) => {
            format!("store/{s}/inventory/reservation.requested")
        }
        DeviceEvent::StockReservationGranted(_) => {
            format!("store/{s}/inventory/reservation.granted")
        }
        DeviceEvent::StockReservationReleased(_) => {
            format!("store/{s}/inventory/reservation.released")
        }
        DeviceEvent::LoyaltyRedeemed(_) => format!("store/{s}/loyalty/redeemed"),
        DeviceEvent::StoreDayClosed(_) => format!("store/{s}/day/closed"),
        DeviceEvent::DeviceHealth(_) => format!("fleet/{}/health.status", event.device_id()),
        DeviceEvent::PriceListApproved(_) => format!("store/{s}/catalog/price-list"),
    }
}

/// A device's record of what it sold, for refunds and its day close.
#[derive(Debug, Clone, Default)]
struct DayBook {
    orders: i32,
    refunds: i32,
    gross: i64,
    discounts: i64,
    tax: i64,
    net: i64,
    refunded: i64,
    tenders: BTreeMap<String, i64>,
    first_seq: i64,
}

/// One generated store event of a device and how it travels.
#[derive(Debug, Clone)]
struct Planned {
    event: DeviceEvent,
    /// Never published (a gap).
    missing: bool,
    /// Must be published while the device is offline (constructed oversell).
    force_offline: bool,
}

struct Device {
    id: String,
    store: String,
    version: i32,
    skew: i64,
    seq: i64,
    health_seq: i64,
    events: Vec<Planned>,
    health: Vec<(usize, DeviceEvent)>,
    books: BTreeMap<i32, DayBook>,
    sales: Vec<OrderCreated>,
}

fn uuid(rng: &mut ChaCha8Rng) -> String {
    uuid::Builder::from_random_bytes(rng.random())
        .into_uuid()
        .to_string()
}

fn eur(minor: i64) -> Money {
    Money::new(minor, CURRENCY)
}

fn sku_name(i: u32) -> String {
    format!("SKU-{i:05}")
}

/// Deterministic opening shelf price of a sku (minor units).
fn base_price(sku: u32) -> i64 {
    149 + i64::from(sku * 37 % 40) * 50
}

struct Gen {
    spec: FleetSpec,
    rng: ChaCha8Rng,
    devices: Vec<Device>,
    truth: Truth,
    /// Prices changed by an approved price list, per (store, sku); other skus sell at `base_price`.
    prices: BTreeMap<(String, u32), i64>,
    price_lists: Vec<PriceListApproved>,
}

impl Gen {
    fn price(&self, store: &str, sku: u32) -> i64 {
        self.prices
            .get(&(store.to_string(), sku))
            .copied()
            .unwrap_or_else(|| base_price(sku))
    }

    /// The cloud approves a new price list for `store` at `at`: 1-5 skus change price by -20%..+25%
    /// (rounded to 9 minor units); the list carries every sku's price. Sales after it use it.
    fn approve_price_list(&mut self, store: &str, at: i64) {
        let changes = self.rng.random_range(1..=5);
        for _ in 0..changes {
            let sku = self.rng.random_range(0..self.spec.skus.max(1));
            let old = self.price(store, sku);
            let pct = self.rng.random_range(-20..=25);
            let new = ((old * (100 + pct) / 100) / 10 * 10 + 9).max(9);
            self.prices.insert((store.to_string(), sku), new);
        }
        let version = self
            .price_lists
            .iter()
            .filter(|p| p.store_id == store)
            .count() as i64
            + 1;
        let list = PriceListApproved {
            event_id: uuid(&mut self.rng),
            device_id: PRICING_SERVICE.into(),
            store_id: store.to_string(),
            seq: version,
            occurred_at: at,
            schema_version: 1,
            price_list_id: format!("pl-{store}-v{version}"),
            effective_from: at,
            approved_by: "pricing@hq".into(),
            items: (0..self.spec.skus)
                .map(|k| PriceItem {
                    sku: sku_name(k),
                    price: eur(self.price(store, k)),
                })
                .collect(),
        };
        self.truth
            .price_lists
            .insert(store.to_string(), list.price_list_id.clone());
        self.price_lists.push(list);
    }

    fn header(&mut self, d: usize, at: i64) -> Header {
        let event_id = uuid(&mut self.rng);
        let dev = &mut self.devices[d];
        dev.seq += 1;
        Header {
            event_id,
            device_id: dev.id.clone(),
            store_id: dev.store.clone(),
            seq: dev.seq,
            occurred_at: at + dev.skew,
            schema_version: 1,
        }
    }

    fn push(&mut self, d: usize, event: DeviceEvent, missing: bool, force_offline: bool) {
        if !missing {
            self.truth.apply(&event);
        }
        self.devices[d].events.push(Planned {
            event,
            missing,
            force_offline,
        });
    }

    fn sale(&mut self, d: usize, at: i64, day: i32, lines: Vec<(u32, i32)>) -> OrderCreated {
        let h = self.header(d, at);
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
        let version = self.devices[d].version;
        let loyalty = (version == 2 && self.rng.random_bool(0.3))
            .then(|| format!("M{:06}", self.rng.random_range(0..100_000)));
        let order = OrderCreated {
            event_id: h.event_id,
            device_id: h.device_id,
            store_id: h.store_id,
            seq: h.seq,
            occurred_at: h.occurred_at,
            schema_version: version,
            order_id: format!("{}-{}", self.devices[d].id, h.seq),
            business_date: day,
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
        };
        let book = self.devices[d].books.entry(day).or_default();
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

    fn adjustment(
        &mut self,
        d: usize,
        at: i64,
        kind: AdjustmentKind,
        lines: Vec<AdjustmentLine>,
        counterparty: Option<String>,
    ) -> InventoryAdjusted {
        let h = self.header(d, at);
        InventoryAdjusted {
            event_id: h.event_id,
            device_id: h.device_id,
            store_id: h.store_id,
            seq: h.seq,
            occurred_at: h.occurred_at,
            schema_version: 1,
            adjustment_id: format!("adj-{}-{}", self.devices[d].id, h.seq),
            kind,
            lines,
            reference: matches!(kind, AdjustmentKind::Receipt).then(|| format!("PO-{}", h.seq)),
            counterparty_store_id: counterparty,
            reason: matches!(kind, AdjustmentKind::Shrink).then(|| "damaged".to_string()),
        }
    }

    fn store_devices(&self, store: &str) -> Vec<usize> {
        (0..self.devices.len())
            .filter(|i| self.devices[*i].store == store)
            .collect()
    }
}

/// Builds the plan for `spec` (deterministic in `spec.seed`).
pub fn generate(spec: &FleetSpec) -> Plan {
    let mut g = Gen {
        spec: spec.clone(),
        rng: ChaCha8Rng::seed_from_u64(spec.seed),
        devices: Vec::new(),
        truth: Truth::new(CURRENCY),
        prices: BTreeMap::new(),
        price_lists: Vec::new(),
    };
    let t0 = spec.start_ms.unwrap_or(T0);
    let day0 = t0.div_euclid(DAY_MS) as i32;
    let skew_ms = spec.clock_skew_ms;
    for s in 0..spec.stores {
        for d in 0..spec.devices_per_store {
            let version = if g.rng.random_bool(spec.v1_fraction.clamp(0.0, 1.0)) {
                1
            } else {
                2
            };
            let skew = if g.rng.random_bool(spec.skewed_fraction.clamp(0.0, 1.0)) {
                if g.rng.random_bool(0.5) {
                    skew_ms
                } else {
                    -skew_ms
                }
            } else {
                0
            };
            let store = format!("s{s:03}");
            g.devices.push(Device {
                id: format!("{store}-d{:02}", d + 1),
                store,
                version,
                skew,
                seq: 0,
                health_seq: 0,
                events: Vec::new(),
                health: Vec::new(),
                books: BTreeMap::new(),
                sales: Vec::new(),
            });
        }
    }
    let n_dev = g.devices.len();
    if n_dev == 0 {
        return Plan {
            devices: Vec::new(),
            price_lists: Vec::new(),
            truth: g.truth,
        };
    }
    let days = spec.days.max(1);
    let total = spec.events.max(n_dev as u64 * 4);
    let day_of = |i: u64| -> i32 { (i * u64::from(days) / total) as i32 };
    let time_of = |i: u64| -> i64 {
        let day = day_of(i);
        let per_day = total / u64::from(days);
        let within = i - u64::from(day as u32) * per_day;
        // Trading hours 06:00..20:00.
        t0 + i64::from(day) * DAY_MS + (within as i64 * 14 * 3_600_000) / per_day.max(1) as i64
    };

    // Opening stock: the first device of each store receives every sku.
    let stores: Vec<String> = (0..spec.stores).map(|s| format!("s{s:03}")).collect();
    let mut generated = 0u64;
    for store in &stores {
        let d = g.store_devices(store)[0];
        let lines: Vec<AdjustmentLine> = (0..spec.skus)
            .map(|k| AdjustmentLine {
                sku: sku_name(k),
                quantity: g.rng.random_range(40..120),
                expected_on_hand: None,
            })
            .collect();
        let e = g.adjustment(d, time_of(0), AdjustmentKind::Receipt, lines, None);
        g.push(d, e.into(), false, false);
        generated += 1;
    }

    // Which events are lost (gaps) or constructed oversells: decided by position up front.
    let mut oversell_at: BTreeSet<u64> = BTreeSet::new();
    if spec.devices_per_store >= 2 {
        for k in 0..spec.oversell {
            oversell_at.insert(total * (u64::from(k) + 1) / (u64::from(spec.oversell) + 2));
        }
    }

    // Price-list approvals, spread evenly over the run.
    let mut price_change_at: Vec<u64> = (0..spec.price_changes)
        .map(|k| total * (u64::from(k) + 1) / (u64::from(spec.price_changes) + 1))
        .rev()
        .collect();

    while generated < total {
        let i = generated;
        let at = time_of(i);
        let day = day0 + day_of(i);
        while price_change_at.last().is_some_and(|p| *p <= i) {
            price_change_at.pop();
            let store = stores[g.rng.random_range(0..stores.len())].clone();
            g.approve_price_list(&store, at);
        }
        if oversell_at.contains(&i) {
            // Two devices of one store, both offline, each sell the store's last unit of a sku.
            let store = stores[g.rng.random_range(0..stores.len())].clone();
            let devs = g.store_devices(&store);
            let sku = g.rng.random_range(0..spec.skus);
            let current = g.truth.stock_of(&store, &sku_name(sku));
            let count = g.adjustment(
                devs[0],
                at,
                AdjustmentKind::Count,
                vec![AdjustmentLine {
                    sku: sku_name(sku),
                    quantity: 1,
                    expected_on_hand: Some(current as i32),
                }],
                None,
            );
            g.push(devs[0], count.into(), false, false);
            for dev in devs.iter().take(2) {
                let o = g.sale(*dev, at + 1, day, vec![(sku, 1)]);
                g.push(*dev, o.into(), false, true);
            }
            g.truth.oversold.insert((store.clone(), sku_name(sku)));
            let restock = g.adjustment(
                devs[0],
                at + 2,
                AdjustmentKind::Receipt,
                vec![AdjustmentLine {
                    sku: sku_name(sku),
                    quantity: 60,
                    expected_on_hand: None,
                }],
                None,
            );
            g.push(devs[0], restock.into(), false, false);
            generated += 4;
            continue;
        }
        let d = g.rng.random_range(0..n_dev);
        let store = g.devices[d].store.clone();
        let roll = g.rng.random_range(0..100);
        let event: DeviceEvent = match roll {
            0..=69 => {
                let n = g.rng.random_range(1..=4);
                let mut lines = Vec::new();
                let mut used = BTreeSet::new();
                for _ in 0..n {
                    let sku = g.rng.random_range(0..spec.skus);
                    if used.insert(sku) {
                        lines.push((sku, g.rng.random_range(1..=3)));
                    }
                }
                g.sale(d, at, day, lines).into()
            }
            70..=74 if !g.devices[d].sales.is_empty() => {
                let idx = g.rng.random_range(0..g.devices[d].sales.len());
                let sale = g.devices[d].sales[idx].clone();
                let line = &sale.lines[g.rng.random_range(0..sale.lines.len())];
                let unit = line.unit_price.amount_minor;
                let line_disc: i64 = line.discounts.iter().map(|x| x.amount.amount_minor).sum();
                let per_unit_net = (unit * i64::from(line.qty) - line_disc) / i64::from(line.qty);
                let tax = per_unit_net * 20 / 100;
                let amount = per_unit_net + tax;
                let restock = g.rng.random_bool(0.7);
                let h = g.header(d, at);
                let book = g.devices[d].books.entry(day).or_default();
                book.refunds += 1;
                book.refunded += amount;
                OrderRefunded {
                    event_id: h.event_id,
                    device_id: h.device_id,
                    store_id: h.store_id,
                    seq: h.seq,
                    occurred_at: h.occurred_at,
                    schema_version: 1,
                    refund_id: format!("rf-{}-{}", g.devices[d].id, h.seq),
                    order_id: sale.order_id.clone(),
                    business_date: day,
                    lines: vec![RefundLine {
                        line_no: line.line_no,
                        sku: line.sku.clone(),
                        qty: 1,
                        amount: eur(amount),
                        tax: eur(tax),
                        restock,
                    }],
                    tenders: vec![Tender {
                        method: TenderMethod::Cash,
                        amount: eur(amount),
                        reference: None,
                    }],
                    total: eur(amount),
                    reason: "customer return".into(),
                }
                .into()
            }
            75..=84 => {
                let sku = g.rng.random_range(0..spec.skus);
                let name = sku_name(sku);
                let on_hand = g.truth.stock_of(&store, &name);
                let kind = match g.rng.random_range(0..10) {
                    0..=3 => AdjustmentKind::Receipt,
                    4..=5 => AdjustmentKind::Shrink,
                    6..=7 => AdjustmentKind::Count,
                    _ => AdjustmentKind::TransferOut,
                };
                let qty = g.rng.random_range(1..=12);
                match kind {
                    AdjustmentKind::Count => {
                        let counted = (on_hand - g.rng.random_range(0..=2)).max(0) as i32;
                        let line = AdjustmentLine {
                            sku: name,
                            quantity: counted,
                            expected_on_hand: Some(on_hand as i32),
                        };
                        g.adjustment(d, at, kind, vec![line], None).into()
                    }
                    AdjustmentKind::TransferOut if stores.len() > 1 => {
                        // The goods leave this store and arrive at another one.
                        let other = loop {
                            let o = &stores[g.rng.random_range(0..stores.len())];
                            if *o != store {
                                break o.clone();
                            }
                        };
                        let line = AdjustmentLine {
                            sku: name.clone(),
                            quantity: qty,
                            expected_on_hand: None,
                        };
                        let out =
                            g.adjustment(d, at, kind, vec![line.clone()], Some(other.clone()));
                        g.push(d, out.into(), false, false);
                        let od = g.store_devices(&other)[0];
                        let arrival = g.adjustment(
                            od,
                            at + 60_000,
                            AdjustmentKind::TransferIn,
                            vec![line],
                            Some(store.clone()),
                        );
                        g.push(od, arrival.into(), false, false);
                        generated += 2;
                        continue;
                    }
                    _ => {
                        let line = AdjustmentLine {
                            sku: name,
                            quantity: qty,
                            expected_on_hand: None,
                        };
                        let kind = if kind == AdjustmentKind::TransferOut {
                            AdjustmentKind::Receipt
                        } else {
                            kind
                        };
                        g.adjustment(d, at, kind, vec![line], None).into()
                    }
                }
            }
            85..=89 => {
                let h = g.header(d, at);
                let sku = sku_name(g.rng.random_range(0..spec.skus));
                if g.rng.random_bool(0.5) {
                    StockReservationRequested {
                        event_id: h.event_id,
                        device_id: h.device_id,
                        store_id: h.store_id,
                        seq: h.seq,
                        occurred_at: h.occurred_at,
                        schema_version: 1,
                        reservation_id: format!("res-{}-{}", g.devices[d].id, h.seq),
                        sku,
                        qty: 1,
                        order_ref: None,
                        expires_at: h.occurred_at + 900_000,
                    }
                    .into()
                } else {
                    StockReservationReleased {
                        event_id: h.event_id,
                        device_id: h.device_id,
                        store_id: h.store_id,
                        seq: h.seq,
                        occurred_at: h.occurred_at,
                        schema_version: 1,
                        reservation_id: format!("res-{}-{}", g.devices[d].id, h.seq - 1),
                        sku,
                        qty: 1,
                        reason: ReleaseReason::Expired,
                    }
                    .into()
                }
            }
            _ => {
                let h = g.header(d, at);
                LoyaltyRedeemed {
                    event_id: h.event_id,
                    device_id: h.device_id,
                    store_id: h.store_id,
                    seq: h.seq,
                    occurred_at: h.occurred_at,
                    schema_version: 1,
                    redemption_id: format!("lr-{}-{}", g.devices[d].id, h.seq),
                    member_id: format!("M{:06}", g.rng.random_range(0..100_000)),
                    points: 500,
                    reward_code: "COFFEE".into(),
                    value: eur(350),
                    order_id: None,
                    business_date: day,
                }
                .into()
            }
        };
        g.push(d, event, false, false);
        generated += 1;
        // Replenish whatever a sale pushed low, as a store would.
        if roll <= 69 {
            let low: Vec<String> = g.truth.stock[&store]
                .iter()
                .filter(|(_, q)| **q < 5)
                .map(|(s, _)| s.clone())
                .collect();
            if !low.is_empty() && generated < total {
                let lines = low
                    .into_iter()
                    .map(|sku| AdjustmentLine {
                        sku,
                        quantity: 60,
                        expected_on_hand: None,
                    })
                    .collect();
                let e = g.adjustment(d, at + 1, AdjustmentKind::Receipt, lines, None);
                g.push(d, e.into(), false, false);
                generated += 1;
            }
        }
        if spec.health_every > 0 && g.devices[d].seq % i64::from(spec.health_every) == 0 {
            g.devices[d].health_seq += 1;
            let event_id = uuid(&mut g.rng);
            let dev = &g.devices[d];
            let h = DeviceHealth {
                event_id,
                device_id: dev.id.clone(),
                store_id: dev.store.clone(),
                seq: dev.health_seq,
                occurred_at: at + dev.skew,
                schema_version: 1,
                status: DeviceStatus::Ok,
                app_version: if dev.version == 1 { "3.9.2" } else { "4.1.0" }.into(),
                uptime_s: (at - t0) / 1000,
                outbox_depth: 0,
                battery_pct: Some(g.rng.random_range(20..100)),
                last_sync_at: Some(at + dev.skew),
            };
            g.truth.apply(&h.clone().into());
            let pos = g.devices[d].events.len();
            g.devices[d].health.push((pos, h.into()));
        }
    }

    // Day close: every device closes every day it traded, with its own totals.
    for d in 0..n_dev {
        let books: Vec<(i32, DayBook)> = g.devices[d]
            .books
            .iter()
            .map(|(k, v)| (*k, v.clone()))
            .collect();
        for (day, book) in books {
            let at = t0 + i64::from(day - day0) * DAY_MS + 14 * 3_600_000 + 60_000;
            let h = g.header(d, at);
            let close = StoreDayClosed {
                event_id: h.event_id,
                device_id: h.device_id,
                store_id: h.store_id,
                seq: h.seq,
                occurred_at: h.occurred_at,
                schema_version: 1,
                business_date: day,
                order_count: book.orders,
                refund_count: book.refunds,
                gross: eur(book.gross),
                discounts: eur(book.discounts),
                tax: eur(book.tax),
                net: eur(book.net),
                refunds: eur(book.refunded),
                tender_totals: book
                    .tenders
                    .iter()
                    .map(|(m, a)| TenderTotal {
                        method: match m.as_str() {
                            "Card" => TenderMethod::Card,
                            "Cash" => TenderMethod::Cash,
                            _ => TenderMethod::Mobile,
                        },
                        amount: eur(*a),
                    })
                    .collect(),
                first_seq: book.first_seq.max(1),
                last_seq: h.seq - 1,
            };
            g.push(d, close.into(), false, false);
        }
    }

    // Lost events (gaps): never the first or last event of a device, never constructed ones, and
    // never adjacent to each other, so each loss is exactly one gap of one seq.
    let mut candidates: Vec<(usize, usize)> = Vec::new();
    for (d, dev) in g.devices.iter().enumerate() {
        for i in (2..dev.events.len().saturating_sub(2)).step_by(3) {
            if !dev.events[i].force_offline
                && !dev.events[i - 1].force_offline
                && !matches!(dev.events[i].event, DeviceEvent::StoreDayClosed(_))
            {
                candidates.push((d, i));
            }
        }
    }
    candidates.shuffle(&mut g.rng);
    let mut lost: Vec<(usize, usize)> =
        candidates.into_iter().take(spec.missing as usize).collect();
    lost.sort();
    // The truth was applied for every event: take the lost ones back out by recomputing from scratch.
    for (d, i) in &lost {
        g.devices[*d].events[*i].missing = true;
        let e = &g.devices[*d].events[*i].event;
        g.truth.gaps.insert(Gap {
            device_id: e.device_id().to_string(),
            store_id: e.store_id().to_string(),
            from_seq: e.seq(),
            to_seq: e.seq(),
        });
    }
    let mut truth = Truth::new(CURRENCY);
    truth.gaps = std::mem::take(&mut g.truth.gaps);
    truth.oversold = std::mem::take(&mut g.truth.oversold);
    truth.price_lists = std::mem::take(&mut g.truth.price_lists);
    for dev in &g.devices {
        for p in dev.events.iter().filter(|p| !p.missing) {
            truth.apply(&p.event);
        }
        for (_, h) in &dev.health {
            truth.apply(h);
        }
    }
    g.truth = truth;

    // Identity collisions: sales re-published with the same event_id and a different tender
    // reference (content differs, stock and money do not: the truth holds whichever arrives first).
    let mut sale_refs: Vec<(usize, usize)> = Vec::new();
    for (d, dev) in g.devices.iter().enumerate() {
        for (i, p) in dev.events.iter().enumerate() {
            if !p.missing && !p.force_offline && matches!(p.event, DeviceEvent::OrderCreated(_)) {
                sale_refs.push((d, i));
            }
        }
    }
    sale_refs.shuffle(&mut g.rng);
    let collide: BTreeSet<(usize, usize)> = sale_refs
        .into_iter()
        .take(spec.collisions as usize)
        .collect();
    for (d, i) in &collide {
        g.truth
            .collisions
            .insert(g.devices[*d].events[*i].event.event_id().to_string());
    }

    let devices = build_steps(&mut g, &collide);
    Plan {
        devices,
        price_lists: g.price_lists,
        truth: g.truth,
    }
}

fn json_bytes(e: &DeviceEvent) -> Vec<u8> {
    serde_json::to_vec(&e.to_json()).unwrap_or_default()
}

/// Turns each device's events into publish steps: online stretches, offline stretches buffered and
/// burst (reordered) on reconnect with a replay of the last events before the disconnect,
/// duplicates, collisions and poison.
// The per-device loop runs to n inclusive (heartbeats due after the last event), so it indexes.
#[allow(clippy::needless_range_loop)]
fn build_steps(g: &mut Gen, collide: &BTreeSet<(usize, usize)>) -> Vec<DevicePlan> {
    let spec = g.spec.clone();
    let n_dev = g.devices.len();
    let offline_devices: BTreeSet<usize> = (0..n_dev)
        .filter(|_| g.rng.random_bool(spec.offline_fraction.clamp(0.0, 1.0)))
        .collect();
    let mut plans = Vec::new();
    for d in 0..n_dev {
        let dev = &g.devices[d];
        let n = dev.events.len();
        // Offline windows over event indices.
        let mut offline: Vec<bool> = dev.events.iter().map(|p| p.force_offline).collect();
        if offline_devices.contains(&d) && n > 4 {
            for _ in 0..spec.offline_periods {
                let len = (spec.offline_events as usize).min(n / 2).max(1);
                let start = g.rng.random_range(1..n.saturating_sub(len).max(2));
                for o in offline.iter_mut().skip(start).take(len) {
                    *o = true;
                }
            }
        }
        // Health heartbeats are published online only, at their position.
        let mut health_at: BTreeMap<usize, Vec<DeviceEvent>> = BTreeMap::new();
        for (pos, h) in &dev.health {
            health_at.entry(*pos).or_default().push(h.clone());
        }
        let mut steps = Vec::new();
        let mut sent: Vec<Publish> = Vec::new();
        let mut buffer: Vec<Publish> = Vec::new();
        let mut is_offline = false;
        for i in 0..=n {
            if let Some(hs) = health_at.get(&i) {
                for h in hs {
                    let p = Publish {
                        topic: mqtt_topic(h),
                        payload: json_bytes(h),
                        purpose: Purpose::Event,
                    };
                    if is_offline {
                        buffer.push(p);
                    } else {
                        steps.push(Step::Publish(p));
                    }
                }
            }
            if i == n {
                break;
            }
            let p = &dev.events[i];
            if offline[i] && !is_offline {
                steps.push(Step::Offline);
                is_offline = true;
            } else if !offline[i] && is_offline {
                flush_burst(&mut g.rng, &spec, &mut steps, &mut buffer, &sent);
                is_offline = false;
            }
            if p.missing {
                continue;
            }
            let publish = Publish {
                topic: mqtt_topic(&p.event),
                payload: json_bytes(&p.event),
                purpose: Purpose::Event,
            };
            let mut extra = Vec::new();
            if g.rng.random_bool(spec.duplicate_rate.clamp(0.0, 1.0)) {
                extra.push(Publish {
                    purpose: Purpose::Duplicate,
                    ..publish.clone()
                });
            }
            if collide.contains(&(d, i))
                && let DeviceEvent::OrderCreated(o) = &p.event
            {
                let mut variant = o.clone();
                variant.tenders[0].reference = Some(format!("retry-{}", variant.seq));
                extra.push(Publish {
                    topic: publish.topic.clone(),
                    payload: json_bytes(&variant.into()),
                    purpose: Purpose::Collision,
                });
            }
            if is_offline {
                buffer.push(publish.clone());
                buffer.extend(extra);
            } else {
                steps.push(Step::Publish(publish.clone()));
                steps.extend(extra.into_iter().map(Step::Publish));
            }
            sent.push(publish);
        }
        if is_offline {
            flush_burst(&mut g.rng, &spec, &mut steps, &mut buffer, &sent);
        }
        plans.push(DevicePlan {
            device_id: dev.id.clone(),
            store_id: dev.store.clone(),
            steps,
        });
    }
    add_poison(g, &mut plans);
    for plan in &plans {
        for s in &plan.steps {
            if let Step::Publish(p) = s {
                g.truth.count_published(match &p.purpose {
                    Purpose::Event => "event",
                    Purpose::Duplicate => "duplicate",
                    Purpose::Collision => "collision",
                    Purpose::Poison(_) => "poison",
                });
            }
        }
    }
    plans
}

fn flush_burst(
    rng: &mut ChaCha8Rng,
    spec: &FleetSpec,
    steps: &mut Vec<Step>,
    buffer: &mut Vec<Publish>,
    sent_before: &[Publish],
) {
    steps.push(Step::Online);
    // A POS that lost its acks re-sends the last events it sent before the outage.
    let replay = (spec.replay_on_reconnect as usize).min(sent_before.len());
    let cut = sent_before.len().saturating_sub(replay + buffer.len());
    for p in sent_before[cut..].iter().take(replay) {
        if !buffer.iter().any(|b| b.payload == p.payload) {
            steps.push(Step::Publish(Publish {
                purpose: Purpose::Duplicate,
                ..p.clone()
            }));
        }
    }
    let w = spec.reorder_window.max(1);
    for chunk in buffer.chunks_mut(w) {
        chunk.shuffle(rng);
    }
    steps.extend(buffer.drain(..).map(Step::Publish));
}

fn add_poison(g: &mut Gen, plans: &mut [DevicePlan]) {
    let spec = g.spec.poison.clone();
    let mut reasons: Vec<&str> = Vec::new();
    for (n, r) in [
        (spec.bad_json, "bad_json"),
        (spec.missing_field, "missing_field"),
        (spec.wrong_type, "wrong_type"),
        (spec.oversize, "payload_too_large"),
        (spec.spoofed_store, "store_mismatch"),
        (spec.unknown_schema_version, "unknown_schema_version"),
    ] {
        reasons.extend(std::iter::repeat_n(r, n as usize));
    }
    for reason in reasons {
        let d = g.rng.random_range(0..plans.len());
        let store = plans[d].store_id.clone();
        let device = plans[d].device_id.clone();
        let sample = samples::order(&store, &device, 1, 1);
        let mut json = serde_json::to_value(&sample).unwrap_or_default();
        json["event_id"] = serde_json::Value::String(uuid(&mut g.rng));
        json["seq"] = serde_json::json!(0);
        let payload: Vec<u8> = match reason {
            "bad_json" => b"{\"event_id\": \"oops\", \"lines\": [".to_vec(),
            "missing_field" => {
                json.as_object_mut().map(|o| o.remove("totals"));
                serde_json::to_vec(&json).unwrap_or_default()
            }
            "wrong_type" => {
                json["lines"][0]["qty"] = serde_json::json!("three");
                serde_json::to_vec(&json).unwrap_or_default()
            }
            "payload_too_large" => {
                json["order_id"] = serde_json::Value::String("x".repeat(g.spec.oversize_bytes));
                serde_json::to_vec(&json).unwrap_or_default()
            }
            "store_mismatch" => {
                json["store_id"] = serde_json::Value::String("s999".into());
                serde_json::to_vec(&json).unwrap_or_default()
            }
            _ => {
                json["schema_version"] = serde_json::json!(99);
                serde_json::to_vec(&json).unwrap_or_default()
            }
        };
        *g.truth.dead_letters.entry(reason.to_string()).or_default() += 1;
        let at = g.rng.random_range(0..=plans[d].steps.len());
        plans[d].steps.insert(
            at,
            Step::Publish(Publish {
                topic: format!("store/{store}/pos/order.created"),
                payload,
                purpose: Purpose::Poison(reason.to_string()),
            }),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn small() -> FleetSpec {
        FleetSpec {
            events: 3_000,
            poison: PoisonSpec {
                bad_json: 1,
                missing_field: 1,
                wrong_type: 1,
                oversize: 1,
                spoofed_store: 1,
                unknown_schema_version: 1,
            },
            ..FleetSpec::default()
        }
    }

    fn payloads(p: &Plan) -> Vec<Vec<u8>> {
        p.devices
            .iter()
            .flat_map(|d| d.steps.iter())
            .filter_map(|s| match s {
                Step::Publish(p) => Some(p.payload.clone()),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn same_seed_same_plan_other_seed_other_plan() {
        let a = generate(&small());
        let b = generate(&small());
        assert_eq!(payloads(&a), payloads(&b));
        assert_eq!(a.truth, b.truth);
        let c = generate(&FleetSpec { seed: 7, ..small() });
        assert_ne!(payloads(&a), payloads(&c));
    }

    /// Replays a plan's publishes through the truth semantics, deduplicating by event id the way a
    /// correct pipeline would: the result must equal the plan's truth.
    #[test]
    fn truth_equals_the_unique_published_events() {
        let plan = generate(&small());
        let mut seen = BTreeSet::new();
        let mut replayed = Truth::new("EUR");
        let mut poison = 0;
        for d in &plan.devices {
            for s in &d.steps {
                let Step::Publish(p) = s else { continue };
                if matches!(p.purpose, Purpose::Poison(_)) {
                    poison += 1;
                    continue;
                }
                let v: serde_json::Value = serde_json::from_slice(&p.payload).unwrap();
                let kind = kind_of_topic(&p.topic);
                let e = DeviceEvent::from_json(kind, &p.payload).unwrap();
                assert_eq!(v["event_id"], e.event_id());
                if seen.insert(e.event_id().to_string()) {
                    replayed.apply(&e);
                }
            }
        }
        assert_eq!(poison, 6);
        assert_eq!(replayed.stock, plan.truth.stock);
        assert_eq!(replayed.days, plan.truth.days);
        assert_eq!(replayed.sku_sales, plan.truth.sku_sales);
        assert_eq!(replayed.store_event_ids, plan.truth.store_event_ids);
        assert_eq!(replayed.health_events, plan.truth.health_events);
        assert_eq!(replayed.ledger_lines, plan.truth.ledger_lines);
    }

    fn kind_of_topic(topic: &str) -> EventKind {
        let tail = topic.split('/').skip(2).collect::<Vec<_>>().join("/");
        match tail.as_str() {
            "pos/order.created" => EventKind::OrderCreated,
            "pos/order.refunded" => EventKind::OrderRefunded,
            "inventory/adjusted" => EventKind::InventoryAdjusted,
            "inventory/reservation.requested" => EventKind::StockReservationRequested,
            "inventory/reservation.released" => EventKind::StockReservationReleased,
            "loyalty/redeemed" => EventKind::LoyaltyRedeemed,
            "day/closed" => EventKind::StoreDayClosed,
            "health.status" => EventKind::DeviceHealth,
            other => panic!("unexpected topic {other}"),
        }
    }

    #[test]
    fn gaps_collisions_and_features_are_present() {
        let spec = small();
        let plan = generate(&spec);
        assert_eq!(plan.truth.gaps.len(), spec.missing as usize);
        assert_eq!(plan.truth.collisions.len(), spec.collisions as usize);
        assert_eq!(plan.truth.oversold.len(), spec.oversell as usize);
        assert!(plan.truth.published["duplicate"] > 0);
        assert!(
            plan.devices
                .iter()
                .any(|d| d.steps.iter().any(|s| matches!(s, Step::Offline)))
        );
        // Every device's seqs, minus the gaps, are all published, and nothing else is.
        for d in &plan.devices {
            let mut seqs = BTreeSet::new();
            for s in &d.steps {
                if let Step::Publish(p) = s
                    && p.purpose == Purpose::Event
                    && p.topic.starts_with("store/")
                {
                    let v: serde_json::Value = serde_json::from_slice(&p.payload).unwrap();
                    seqs.insert(v["seq"].as_i64().unwrap());
                }
            }
            let max = *seqs.iter().max().unwrap();
            let gaps: BTreeSet<i64> = plan
                .truth
                .gaps
                .iter()
                .filter(|g| g.device_id == d.device_id)
                .map(|g| g.from_seq)
                .collect();
            for s in 1..=max {
                assert!(
                    seqs.contains(&s) != gaps.contains(&s),
                    "{} seq {s}",
                    d.device_id
                );
            }
        }
        // Both schema versions are in use, and some clocks are skewed.
        let all = payloads(&plan);
        let v1 = all
            .iter()
            .filter(|p| p.windows(18).any(|w| w == b"\"schema_version\":1"))
            .count();
        assert!(v1 > 0);
        // Oversold (store, sku) pairs end non-negative after the restock but went through -1.
        for (store, sku) in &plan.truth.oversold {
            assert!(plan.truth.stock[store].contains_key(sku));
        }
    }

    /// Sales after a price list use its prices; before it (and in other stores) the old ones; the
    /// truth names each store's latest list, and lists are versioned per store.
    #[test]
    fn sales_follow_the_approved_price_lists() {
        let spec = FleetSpec {
            price_changes: 6,
            events: 3_000,
            ..small()
        };
        let plan = generate(&spec);
        assert_eq!(plan.price_lists.len(), 6);
        let mut versions: BTreeMap<&str, i64> = BTreeMap::new();
        for l in &plan.price_lists {
            let v = versions.entry(&l.store_id).or_default();
            *v += 1;
            assert_eq!(l.seq, *v, "per-store version");
            assert_eq!(l.price_list_id, format!("pl-{}-v{}", l.store_id, l.seq));
            assert_eq!(l.items.len(), spec.skus as usize);
        }
        for (store, id) in &plan.truth.price_lists {
            let last = plan
                .price_lists
                .iter()
                .rfind(|l| &l.store_id == store)
                .unwrap();
            assert_eq!(&last.price_list_id, id);
        }
        assert_eq!(plan.truth.price_lists.len(), versions.len());
        // Every unskewed sale line carries the price in force for its store at its time.
        let mut changed_lines = 0;
        for d in &plan.devices {
            for step in &d.steps {
                let Step::Publish(p) = step else { continue };
                if p.purpose != Purpose::Event || !p.topic.ends_with("pos/order.created") {
                    continue;
                }
                let Ok(DeviceEvent::OrderCreated(o)) =
                    DeviceEvent::from_json(EventKind::OrderCreated, &p.payload)
                else {
                    panic!("an order payload that does not parse");
                };
                for line in &o.lines {
                    let sku: u32 = line.sku[4..].parse().unwrap();
                    // The latest list of the store approved before the sale (device clocks may be
                    // skewed by up to clock_skew_ms, so only lines clear of that window count).
                    let in_force = plan
                        .price_lists
                        .iter()
                        .rfind(|l| l.store_id == o.store_id && l.effective_from <= o.occurred_at);
                    let next = plan
                        .price_lists
                        .iter()
                        .find(|l| l.store_id == o.store_id && l.effective_from > o.occurred_at);
                    let clear = |t: i64| (t - o.occurred_at).abs() > spec.clock_skew_ms + 10;
                    if !in_force.is_none_or(|l| clear(l.effective_from))
                        || !next.is_none_or(|l| clear(l.effective_from))
                    {
                        continue;
                    }
                    let expected = in_force
                        .map(|l| l.items[sku as usize].price.amount_minor)
                        .unwrap_or_else(|| base_price(sku));
                    assert_eq!(line.unit_price.amount_minor, expected, "{o:?}");
                    if expected != base_price(sku) {
                        changed_lines += 1;
                    }
                }
            }
        }
        assert!(changed_lines > 0, "no sale used a changed price");
    }
}
