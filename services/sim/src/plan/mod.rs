//! Fleet plan: a seeded, deterministic description of what every POS device of a fleet does — the
//! events it emits (in seq order) and how it publishes them over MQTT (online, offline with a local
//! buffer and a burst on reconnect, retries that duplicate, reordering, a mix of schema v1 and v2,
//! clock skew, poison payloads) — and the price lists the cloud approves meanwhile (devices price
//! their sales from the list in force; the lists themselves travel cloud → Kafka → bridge downlink →
//! retained MQTT). The ground truth is computed while planning. Pure: the same spec and seed always
//! give byte-identical payloads.
//!
//! This file holds the public types and [`generate`], which runs the phases in order. Every phase
//! draws from the one seeded generator, so their order is part of the output:
//! - `fleet`: the generator state (devices, their day books, prices, truth) and the builders of the
//!   events several phases record;
//! - `timeline`: where the n-th store event falls in time and on which business date;
//! - `pricing`: shelf prices and the price lists the cloud approves;
//! - `trading`: opening stock, then the trading loop, one method per kind of event;
//! - `late`: the late tills (online only once their store's first day was exported: their events
//!   are the finance export's adjustment lines);
//! - `close`: every device's day close;
//! - `conflicts`: the conflict detector's constructed cases (reservation breach, price variances,
//!   double redemptions, a reused business key, stale counts), and every count's expectation
//!   settled in event time once the lost events are known;
//! - `losses`: the events devices lose (sequence gaps) and the truth recomputed without them;
//! - `expect`: the oversells and price variances ordinary trading triggers too, computed in event
//!   time (the truth names every verdict the detector must hold);
//! - `steps`: the identity collisions, then how each device publishes (online, offline bursts,
//!   replays, duplicates, collision variants);
//! - `poison`: the payloads that must end up as dead letters.

mod close;
mod conflicts;
mod expect;
mod fleet;
mod late;
mod losses;
mod poison;
mod pricing;
mod steps;
mod timeline;
mod trading;

use serde::{Deserialize, Serialize};
use tillstream_contracts::{DeviceEvent, PriceListApproved};

use crate::truth::Truth;
pub use conflicts::ConflictSpec;
use fleet::FleetGenerator;
use timeline::Timeline;

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
    /// Payloads naming another device than the one publishing (the topic's device level).
    pub spoofed_device: u32,
    pub unknown_schema_version: u32,
}

impl PoisonSpec {
    pub fn total(&self) -> u32 {
        self.bad_json
            + self.missing_field
            + self.wrong_type
            + self.oversize
            + self.spoofed_store
            + self.spoofed_device
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
    /// The other rules' constructed cases (see `conflicts`; the truth names each expected verdict).
    pub conflicts: ConflictSpec,
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
    /// Late tills (one per store, from the first store on): each trades on the first business date
    /// and closes it, but comes online only after its store's day was exported (`sim run
    /// --finance-exports` holds it back until then).
    pub late_tills: u32,
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
            conflicts: ConflictSpec::default(),
            health_every: 25,
            price_changes: 4,
            clock_skew_ms: 2 * 3_600_000,
            skewed_fraction: 0.2,
            poison: PoisonSpec::default(),
            oversize_bytes: 300_000,
            late_tills: 1,
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
    /// A late till (see [`FleetSpec::late_tills`]).
    pub late: bool,
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

    /// (the plan without its late tills, the late tills alone): what publishes first and what
    /// publishes once the late tills' store-days were exported. Both carry the truth.
    pub fn split_late(&self) -> (Plan, Plan) {
        let (late, on_time): (Vec<DevicePlan>, Vec<DevicePlan>) =
            self.devices.iter().cloned().partition(|d| d.late);
        let part = |devices| Plan {
            devices,
            price_lists: self.price_lists.clone(),
            truth: self.truth.clone(),
        };
        (part(on_time), part(late))
    }

    /// (store, business date) of each late till's day: the store-days that must be exported
    /// before the late tills publish.
    pub fn late_store_days(&self) -> &std::collections::BTreeSet<(String, i32)> {
        &self.truth.late_days
    }

    /// The store master data the finance export needs (`store_id,time_zone,currency,legal_entity`)
    /// for the plan's stores: time zones and legal entities rotate over three countries.
    pub fn stores_csv(&self) -> String {
        const ZONES: [(&str, &str); 3] = [
            ("Europe/Berlin", "TS-DE-01"),
            ("Europe/Paris", "TS-FR-01"),
            ("Europe/Amsterdam", "TS-NL-01"),
        ];
        let stores: std::collections::BTreeSet<&str> =
            self.devices.iter().map(|d| d.store_id.as_str()).collect();
        let mut s = String::from("store_id,time_zone,currency,legal_entity\n");
        for (i, store) in stores.into_iter().enumerate() {
            let (tz, entity) = ZONES[i % ZONES.len()];
            s.push_str(&format!("{store},{tz},{},{entity}\n", self.truth.currency));
        }
        s
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

/// The MQTT topic a device publishes `event` on (device contract v2: `store/{store}/{device}/...`).
pub fn mqtt_topic(event: &DeviceEvent) -> String {
    let (s, d) = (event.store_id(), event.device_id());
    let path = match event {
        DeviceEvent::OrderCreated(_) => "pos/order.created",
        DeviceEvent::OrderRefunded(_) => "pos/order.refunded",
        DeviceEvent::InventoryAdjusted(_) => "inventory/adjusted",
        DeviceEvent::StockReservationRequested(_) => "inventory/reservation.requested",
        DeviceEvent::StockReservationGranted(_) => "inventory/reservation.granted",
        DeviceEvent::StockReservationReleased(_) => "inventory/reservation.released",
        DeviceEvent::LoyaltyRedeemed(_) => "loyalty/redeemed",
        DeviceEvent::StoreDayClosed(_) => "day/closed",
        DeviceEvent::DeviceHealth(_) => return format!("fleet/{d}/health.status"),
        DeviceEvent::PriceListApproved(_) => return format!("store/{s}/catalog/price-list"),
    };
    format!("store/{s}/{d}/{path}")
}

/// Builds the plan for `spec` (deterministic in `spec.seed`).
pub fn generate(spec: &FleetSpec) -> Plan {
    let mut fleet = FleetGenerator::new(spec);
    if fleet.devices.is_empty() {
        return fleet.into_plan(Vec::new());
    }
    let timeline = Timeline::new(spec, fleet.devices.len());
    let opening_events = fleet.receive_opening_stock(&timeline);
    fleet.trade(&timeline, opening_events);
    fleet.trade_late(&timeline);
    fleet.close_days(&timeline);
    fleet.lose_events();
    fleet.settle_counts();
    fleet.recompute_truth_without_lost_events();
    fleet.expect_conflicts();
    let collisions = fleet.pick_collisions();
    let mut devices = fleet.build_steps(&collisions);
    fleet.add_poison(&mut devices);
    fleet.count_publishes(&devices);
    fleet.into_plan(devices)
}

#[cfg(test)]
mod tests;
