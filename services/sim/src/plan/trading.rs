//! The trading phase: opening stock, then the loop that spreads the run's store events over the
//! timeline — price-list approvals when due, constructed oversells at fixed positions, the other
//! rules' constructed cases when due (`conflicts`), and otherwise
//! a random device doing one thing: a sale (then a restock of whatever ran low), a refund, a stock
//! adjustment or transfer, a reservation, a loyalty redemption; heartbeats every few events. Pure:
//! each method draws from the generator's random source in a fixed order.

use std::collections::BTreeSet;

use rand::Rng;
use tillstream_contracts::{
    AdjustmentKind, AdjustmentLine, DeviceHealth, DeviceStatus, LoyaltyRedeemed, OrderRefunded,
    RefundLine, ReleaseReason, StockReservationReleased, StockReservationRequested, Tender,
    TenderMethod,
};

use super::fleet::{
    FleetGenerator, PlannedHeartbeat, eur, random_uuid, sku_name, store_event, store_name,
};
use super::timeline::Timeline;

/// Units a store receives of a sku that runs low, and after a constructed oversell.
const RESTOCK_UNITS: i32 = 60;
/// Stock below which a store restocks a sku after a sale.
const LOW_STOCK: i64 = 5;

/// What a stock adjustment draw recorded.
enum StockMove {
    /// One adjustment of the drawn device's store.
    InStore,
    /// Goods leaving the drawn device's store and arriving at another: two events.
    Transfer,
}

/// Positions (event numbers) of the constructed oversells, spread evenly over the run; none without
/// two devices per store.
fn oversell_positions(oversells: u32, devices_per_store: u32, total: u64) -> BTreeSet<u64> {
    if devices_per_store < 2 {
        return BTreeSet::new();
    }
    (0..oversells)
        .map(|k| total * (u64::from(k) + 1) / (u64::from(oversells) + 2))
        .collect()
}

/// Positions of the price-list approvals, spread evenly over the run, latest first (popped when due).
fn price_list_positions(approvals: u32, total: u64) -> Vec<u64> {
    (0..approvals)
        .map(|k| total * (u64::from(k) + 1) / (u64::from(approvals) + 1))
        .rev()
        .collect()
}

impl FleetGenerator {
    /// Opening stock: the first device of each store receives every sku, on its clock one skew
    /// before the run starts (before any device's first event in event time, whatever the clocks).
    /// Returns the events recorded.
    pub(super) fn receive_opening_stock(&mut self, timeline: &Timeline) -> u64 {
        let mut recorded = 0;
        for s in 0..self.spec.stores {
            let d = self.store_devices(&store_name(s))[0];
            let skus: Vec<(String, i32)> = (0..self.spec.skus)
                .map(|k| (sku_name(k), self.rng.random_range(40..120)))
                .collect();
            let opening =
                timeline.time_of(0) - self.spec.clock_skew_ms.abs() - self.devices[d].clock_skew_ms;
            let receipt = self.receipt(d, opening, skus);
            self.record(d, receipt);
            recorded += 1;
        }
        recorded
    }

    /// Generates store events from number `first` up to the run's total.
    pub(super) fn trade(&mut self, timeline: &Timeline, first: u64) {
        let total = timeline.total_events;
        let stores: Vec<String> = (0..self.spec.stores).map(store_name).collect();
        let oversell_at =
            oversell_positions(self.spec.oversell, self.spec.devices_per_store, total);
        let mut price_lists_due = price_list_positions(self.spec.price_changes, total);
        let mut cases_due = self.conflict_case_positions(total);
        let mut generated = first;
        while generated < total {
            let n = generated;
            let at = timeline.time_of(n);
            let business_date = timeline.business_date(n);
            while price_lists_due.last().is_some_and(|p| *p <= n) {
                price_lists_due.pop();
                let store = stores[self.rng.random_range(0..stores.len())].clone();
                self.approve_price_list(&store, at);
            }
            if oversell_at.contains(&n) {
                self.construct_oversell(&stores, at, business_date);
                generated += 4;
                continue;
            }
            if cases_due.last().is_some_and(|(p, _)| *p <= n)
                && let Some((_, case)) = cases_due.pop()
            {
                let recorded = self.construct_case(case, &stores, at, business_date);
                if recorded > 0 {
                    generated += recorded;
                    continue;
                }
            }
            let d = self.rng.random_range(0..self.devices.len());
            // Out of 100: sales 70, refunds 5 (a device with nothing to refund redeems loyalty
            // instead), adjustments 10, reservations 5, loyalty 10. The draw's type is part of the
            // random sequence: keep it i32.
            let roll: i32 = self.rng.random_range(0..100);
            match roll {
                0..=69 => {
                    self.sell(d, at, business_date);
                    generated += 1;
                    if generated < total && self.replenish_low_stock(d, at + 1) {
                        generated += 1;
                    }
                }
                70..=74 if !self.devices[d].sales.is_empty() => {
                    self.refund(d, at, business_date);
                    generated += 1;
                }
                75..=84 => match self.adjust_stock(d, at, &stores) {
                    StockMove::InStore => generated += 1,
                    StockMove::Transfer => {
                        // The plan has always gone on to the next event after a transfer, without
                        // the heartbeat check: kept, so plans stay byte-identical.
                        generated += 2;
                        continue;
                    }
                },
                85..=89 => {
                    self.reserve_or_release(d, at);
                    generated += 1;
                }
                _ => {
                    self.redeem_loyalty(d, at, business_date);
                    generated += 1;
                }
            }
            self.heartbeat_if_due(d, at, timeline.start_ms);
        }
    }

    /// Two devices of one store, both offline, each sell the store's last unit of a sku: a count
    /// sets the stock to 1, both sales follow, then a restock. Four events.
    fn construct_oversell(&mut self, stores: &[String], at: i64, business_date: i32) {
        let store = stores[self.rng.random_range(0..stores.len())].clone();
        let devs = self.store_devices(&store);
        let sku = self.rng.random_range(0..self.spec.skus);
        let current = self.truth.stock_of(&store, &sku_name(sku));
        let count = self.inventory_adjusted(
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
        self.record(devs[0], count);
        for dev in devs.iter().take(2) {
            let order = self.order_created(*dev, at + 1, business_date, vec![(sku, 1)]);
            self.record_offline(*dev, order);
        }
        self.truth.oversold.insert((store.clone(), sku_name(sku)));
        let restock = self.receipt(devs[0], at + 2, vec![(sku_name(sku), RESTOCK_UNITS)]);
        self.record(devs[0], restock);
    }

    /// A sale of 1-4 distinct skus, 1-3 units each.
    fn sell(&mut self, d: usize, at: i64, business_date: i32) {
        let n = self.rng.random_range(1..=4);
        let mut lines = Vec::new();
        let mut used = BTreeSet::new();
        for _ in 0..n {
            let sku = self.rng.random_range(0..self.spec.skus);
            if used.insert(sku) {
                lines.push((sku, self.rng.random_range(1..=3)));
            }
        }
        let order = self.order_created(d, at, business_date, lines);
        self.record(d, order);
    }

    /// Restocks every sku of device `d`'s store that is below [`LOW_STOCK`], as a store would after
    /// a sale. Returns whether it recorded a receipt.
    fn replenish_low_stock(&mut self, d: usize, at: i64) -> bool {
        let store = &self.devices[d].store;
        let low: Vec<(String, i32)> = self.truth.stock[store]
            .iter()
            .filter(|(_, q)| **q < LOW_STOCK)
            .map(|(s, _)| (s.clone(), RESTOCK_UNITS))
            .collect();
        if low.is_empty() {
            return false;
        }
        let receipt = self.receipt(d, at, low);
        self.record(d, receipt);
        true
    }

    /// A cash refund of one unit of one line of one of the device's past sales (restocked 70% of
    /// the time), booked in the day's book.
    fn refund(&mut self, d: usize, at: i64, business_date: i32) {
        let idx = self.rng.random_range(0..self.devices[d].sales.len());
        let sale = self.devices[d].sales[idx].clone();
        let line = &sale.lines[self.rng.random_range(0..sale.lines.len())];
        let unit = line.unit_price.amount_minor;
        let line_disc: i64 = line.discounts.iter().map(|x| x.amount.amount_minor).sum();
        let per_unit_net = (unit * i64::from(line.qty) - line_disc) / i64::from(line.qty);
        let tax = per_unit_net * 20 / 100;
        let amount = per_unit_net + tax;
        let restock = self.rng.random_bool(0.7);
        let h = self.header(d, at);
        let book = self.devices[d].day_books.entry(business_date).or_default();
        book.refunds += 1;
        book.refunded += amount;
        let refund = store_event!(OrderRefunded, h, {
            refund_id: format!("rf-{}-{}", self.devices[d].id, h.seq),
            order_id: sale.order_id.clone(),
            business_date,
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
        });
        self.record(d, refund);
    }

    /// A stock adjustment of one sku: a receipt (40%), shrink (20%), a count finding 0-2 units
    /// missing (20%) or a transfer out to another store, which records its arrival there too (20%;
    /// a receipt when the fleet has one store).
    fn adjust_stock(&mut self, d: usize, at: i64, stores: &[String]) -> StockMove {
        let store = self.devices[d].store.clone();
        let sku = self.rng.random_range(0..self.spec.skus);
        let name = sku_name(sku);
        let on_hand = self.truth.stock_of(&store, &name);
        let kind = match self.rng.random_range(0..10) {
            0..=3 => AdjustmentKind::Receipt,
            4..=5 => AdjustmentKind::Shrink,
            6..=7 => AdjustmentKind::Count,
            _ => AdjustmentKind::TransferOut,
        };
        let qty = self.rng.random_range(1..=12);
        match kind {
            AdjustmentKind::Count => {
                let counted = (on_hand - self.rng.random_range(0..=2)).max(0) as i32;
                let line = AdjustmentLine {
                    sku: name,
                    quantity: counted,
                    expected_on_hand: Some(on_hand as i32),
                };
                let count = self.inventory_adjusted(d, at, kind, vec![line], None);
                self.record(d, count);
                StockMove::InStore
            }
            AdjustmentKind::TransferOut if stores.len() > 1 => {
                let other = loop {
                    let o = &stores[self.rng.random_range(0..stores.len())];
                    if *o != store {
                        break o.clone();
                    }
                };
                let line = AdjustmentLine {
                    sku: name,
                    quantity: qty,
                    expected_on_hand: None,
                };
                let out =
                    self.inventory_adjusted(d, at, kind, vec![line.clone()], Some(other.clone()));
                self.record(d, out);
                let od = self.store_devices(&other)[0];
                let arrival = self.inventory_adjusted(
                    od,
                    at + 60_000,
                    AdjustmentKind::TransferIn,
                    vec![line],
                    Some(store),
                );
                self.record(od, arrival);
                StockMove::Transfer
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
                let adjusted = self.inventory_adjusted(d, at, kind, vec![line], None);
                self.record(d, adjusted);
                StockMove::InStore
            }
        }
    }

    /// A one-unit reservation request of a random sku, or (half the time) the release of the
    /// reservation its previous seq would have requested.
    fn reserve_or_release(&mut self, d: usize, at: i64) {
        let h = self.header(d, at);
        let sku = sku_name(self.rng.random_range(0..self.spec.skus));
        if self.rng.random_bool(0.5) {
            let requested = store_event!(StockReservationRequested, h, {
                reservation_id: format!("res-{}-{}", self.devices[d].id, h.seq),
                sku,
                qty: 1,
                order_ref: None,
                expires_at: h.occurred_at + 900_000,
            });
            self.record(d, requested);
        } else {
            let released = store_event!(StockReservationReleased, h, {
                reservation_id: format!("res-{}-{}", self.devices[d].id, h.seq - 1),
                sku,
                qty: 1,
                reason: ReleaseReason::Expired,
            });
            self.record(d, released);
        }
    }

    /// A member redeems 500 points for a coffee.
    fn redeem_loyalty(&mut self, d: usize, at: i64, business_date: i32) {
        let h = self.header(d, at);
        let redeemed = store_event!(LoyaltyRedeemed, h, {
            redemption_id: format!("lr-{}-{}", self.devices[d].id, h.seq),
            member_id: format!("M{:06}", self.rng.random_range(0..100_000)),
            points: 500,
            reward_code: "COFFEE".into(),
            value: eur(350),
            order_id: None,
            business_date,
        });
        self.record(d, redeemed);
    }

    /// A heartbeat when device `d`'s seq is a multiple of `health_every`; it goes straight into the
    /// truth and is published before the device's next event.
    fn heartbeat_if_due(&mut self, d: usize, at: i64, start_ms: i64) {
        let every = self.spec.health_every;
        if every == 0 || self.devices[d].seq % i64::from(every) != 0 {
            return;
        }
        self.devices[d].health_seq += 1;
        let event_id = random_uuid(&mut self.rng);
        let dev = &self.devices[d];
        let heartbeat = DeviceHealth {
            event_id,
            device_id: dev.id.clone(),
            store_id: dev.store.clone(),
            seq: dev.health_seq,
            occurred_at: at + dev.clock_skew_ms,
            schema_version: 1,
            status: DeviceStatus::Ok,
            app_version: if dev.order_schema_version == 1 {
                "3.9.2"
            } else {
                "4.1.0"
            }
            .into(),
            uptime_s: (at - start_ms) / 1000,
            outbox_depth: 0,
            battery_pct: Some(self.rng.random_range(20..100)),
            last_sync_at: Some(at + dev.clock_skew_ms),
        };
        let event = heartbeat.into();
        self.truth.apply(&event);
        let before_event = self.devices[d].events.len();
        self.devices[d].heartbeats.push(PlannedHeartbeat {
            before_event,
            event,
        });
    }
}
