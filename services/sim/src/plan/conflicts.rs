//! The conflict detector's constructed cases beyond the oversell: a reservation breach, price
//! variances beyond and within the tolerance, loyalty double redemptions, a duplicate business key
//! and stale counts, each at a fixed position of the run; then, once every event is known, the
//! counts settled in event time (`settle_counts`). Pure.
//!
//! Device clocks are skewed (±`clock_skew_ms`), and the detector orders events by `occurred_at`:
//! every constructed event is given an explicit event time (the device's skew taken back out of its
//! true time), so a case's verdict does not depend on which devices it drew. Where two devices'
//! events lie within the skew tolerance on purpose, the expected verdict is the review the detector
//! classifies them as. Constructed events are published offline like the oversell's (never lost,
//! never a collision variant).
//!
//! Counts: a count's `expected_on_hand` is what the counter believed. The fleet's ordinary counts
//! expect the event-time on-hand (what the detector computes), so they are no conflict; only the
//! constructed stale counts expect more than event time had (a sale the counter had not seen).

use std::collections::BTreeMap;

use rand::Rng;
use serde::{Deserialize, Serialize};
use tillstream_contracts::{
    AdjustmentKind, AdjustmentLine, DeviceEvent, LoyaltyRedeemed, ReleaseReason,
    StockReservationGranted, StockReservationReleased, StockReservationRequested,
};

use super::fleet::{FleetGenerator, eur, sku_name, store_event};
use crate::truth::ExpectedConflict;

/// Units a constructed stale count's counter expected beyond the event-time on-hand: above the
/// detector's default review threshold (2), so the verdict is a review whatever lies near it.
pub const STALE_BY: i64 = 5;
/// The detector's default skew tolerance (`rules.skew_tolerance_ms`): two devices' events closer
/// than this have no trustworthy order.
pub const SKEW_TOLERANCE_MS: i64 = 2 * 3_600_000;
/// Prefix of a constructed stale count's `adjustment_id` (how `settle_counts` finds it).
const STALE_PREFIX: &str = "stale-";
/// Units received after a constructed reservation breach (the count left 1 unit).
const RESTOCK_UNITS: i32 = 60;
const MINUTE_MS: i64 = 60_000;
const HOUR_MS: i64 = 3_600_000;

/// How many cases of each rule the plan constructs.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct ConflictSpec {
    /// Rule 2: a count leaves 2 units, a reservation of both is granted for one order, another
    /// order sells one of them.
    pub reservation_breach: u32,
    /// Rule 3: a sale line priced about 10% under the list in force (review, merchandising).
    pub price_beyond_tolerance: u32,
    /// Rule 3: a sale line priced 3 minor units under the list in force (auto-accepted, finance).
    pub price_within_tolerance: u32,
    /// Rule 4: one member's redemption redeemed again on another device: even cases 3 h apart
    /// (auto-resolved clawback), odd cases 1 min apart (within the skew tolerance: review).
    pub double_redemption: u32,
    /// Rule 5: a redemption id reused for another member on another device (review).
    pub duplicate_key: u32,
    /// Rule 6: a count whose counter expected [`STALE_BY`] units more than event time had.
    pub stale_count: u32,
}

impl Default for ConflictSpec {
    fn default() -> Self {
        ConflictSpec {
            reservation_breach: 1,
            price_beyond_tolerance: 1,
            price_within_tolerance: 1,
            double_redemption: 2,
            duplicate_key: 1,
            stale_count: 2,
        }
    }
}

/// One constructed case.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Case {
    ReservationBreach,
    PriceBeyond,
    PriceWithin,
    DoubleRedemption(u32),
    DuplicateKey,
    StaleCount,
}

impl FleetGenerator {
    /// Positions of the constructed cases, rule by rule in turn, spread over 30%..95% of the run
    /// (after the first price lists), latest first (popped when due).
    pub(super) fn conflict_case_positions(&self, total: u64) -> Vec<(u64, Case)> {
        let c = &self.spec.conflicts;
        type Make = fn(u32) -> Case;
        let kinds: [(u32, Make); 6] = [
            (c.reservation_breach, |_| Case::ReservationBreach),
            (c.price_beyond_tolerance, |_| Case::PriceBeyond),
            (c.price_within_tolerance, |_| Case::PriceWithin),
            (c.double_redemption, Case::DoubleRedemption),
            (c.duplicate_key, |_| Case::DuplicateKey),
            (c.stale_count, |_| Case::StaleCount),
        ];
        let rounds = kinds.iter().map(|(n, _)| *n).max().unwrap_or(0);
        let mut cases = Vec::new();
        for k in 0..rounds {
            for (n, case) in &kinds {
                if k < *n {
                    cases.push(case(k));
                }
            }
        }
        let n = cases.len() as u64;
        let mut due: Vec<(u64, Case)> = cases
            .into_iter()
            .enumerate()
            .map(|(i, case)| (total * (30 + 65 * (i as u64 + 1) / (n + 1)) / 100, case))
            .collect();
        due.reverse();
        due
    }

    /// Records `case` at true time `at`; returns the store events it recorded (0: it could not be
    /// built, e.g. a price case before any price list).
    pub(super) fn construct_case(
        &mut self,
        case: Case,
        stores: &[String],
        at: i64,
        business_date: i32,
    ) -> u64 {
        let store = stores[self.rng.random_range(0..stores.len())].clone();
        let sku = self.rng.random_range(0..self.spec.skus);
        match case {
            Case::ReservationBreach => self.reservation_breach(&store, sku, at, business_date),
            Case::PriceBeyond => self.price_variance(sku, at, business_date, false),
            Case::PriceWithin => self.price_variance(sku, at, business_date, true),
            Case::DoubleRedemption(k) => {
                let gap = if k % 2 == 0 { 3 * HOUR_MS } else { MINUTE_MS };
                self.redeem_twice(&store, at, business_date, k, gap, true)
            }
            Case::DuplicateKey => self.redeem_twice(&store, at, business_date, 0, MINUTE_MS, false),
            Case::StaleCount => {
                let devs = self.store_devices(&store);
                let d = devs[devs.len() - 1];
                let line = AdjustmentLine {
                    sku: sku_name(sku),
                    quantity: 0,
                    expected_on_hand: Some(0),
                };
                let mut count = self.inventory_adjusted(
                    d,
                    self.true_time(d, at),
                    AdjustmentKind::Count,
                    vec![line],
                    None,
                );
                count.adjustment_id = format!("{STALE_PREFIX}{}-{}", count.device_id, count.seq);
                self.record_offline(d, count);
                1
            }
        }
    }

    /// The true time at which device `d`'s clock reads `occurred_at`.
    fn true_time(&self, d: usize, occurred_at: i64) -> i64 {
        occurred_at - self.devices[d].clock_skew_ms
    }

    /// Rule 2 at event time `t`: a count leaves 2 units (settled in event time), a reservation of
    /// both is requested and granted for order `ord-res-…`, another device sells 1 unit to another
    /// order, the reservation is released, stock is received. Six events.
    fn reservation_breach(&mut self, store: &str, sku: u32, t: i64, business_date: i32) -> u64 {
        let devs = self.store_devices(store);
        let (a, b) = (devs[0], devs[devs.len().min(2) - 1]);
        let name = sku_name(sku);
        let count = self.inventory_adjusted(
            a,
            self.true_time(a, t),
            AdjustmentKind::Count,
            vec![AdjustmentLine {
                sku: name.clone(),
                quantity: 2,
                expected_on_hand: Some(0),
            }],
            None,
        );
        self.record_offline(a, count);
        let h = self.header(a, self.true_time(a, t + 1));
        let reservation_id = format!("res-{}-{}", h.device_id, h.seq);
        let requested = store_event!(StockReservationRequested, h, {
            reservation_id: reservation_id.clone(),
            sku: name.clone(),
            qty: 2,
            order_ref: Some(format!("ord-{reservation_id}")),
            expires_at: t + 15 * MINUTE_MS,
        });
        self.record_offline(a, requested);
        let h = self.header(a, self.true_time(a, t + 1));
        let granted = store_event!(StockReservationGranted, h, {
            reservation_id: reservation_id.clone(),
            sku: name.clone(),
            qty: 2,
            granted_by: "store-ops".into(),
            expires_at: t + 15 * MINUTE_MS,
        });
        let grant_id = granted.event_id.clone();
        self.record_offline(a, granted);
        let sale = self.order_created(b, self.true_time(b, t + 2), business_date, vec![(sku, 1)]);
        let sale_id = sale.event_id.clone();
        self.record_offline(b, sale);
        let h = self.header(a, self.true_time(a, t + 3));
        let released = store_event!(StockReservationReleased, h, {
            reservation_id,
            sku: name.clone(),
            qty: 2,
            reason: ReleaseReason::Cancelled,
        });
        self.record_offline(a, released);
        let restock = self.receipt(
            a,
            self.true_time(a, t + 4),
            vec![(name.clone(), RESTOCK_UNITS)],
        );
        self.record_offline(a, restock);
        self.truth.expect_conflict(
            "reservation-breach",
            ExpectedConflict {
                store_id: store.to_string(),
                sku: Some(name),
                about: sale_id.clone(),
                evidence: vec![sale_id, grant_id],
                triage: "needs-review".into(),
                constructed: true,
            },
        );
        6
    }

    /// Rule 3 at event time `t`: a device of the store with the latest approved list sells one unit
    /// of `sku` under that list's price: 3 minor units under (`within`), or about 10% under (the
    /// difference ends in 5, so the charged price is no list's price: lists end in 9). One event.
    fn price_variance(&mut self, sku: u32, t: i64, business_date: i32, within: bool) -> u64 {
        let Some(list) = self.price_lists.last() else {
            return 0;
        };
        let store = list.store_id.clone();
        let approved = self.price(&store, sku);
        let charged = if within {
            approved - 3
        } else {
            approved - (approved / 100 * 10 + 5)
        };
        let devs = self.store_devices(&store);
        let d = devs[self.rng.random_range(0..devs.len())];
        let key = (store.clone(), sku);
        let kept = self.prices.insert(key.clone(), charged);
        let sale = self.order_created(d, self.true_time(d, t), business_date, vec![(sku, 1)]);
        match kept {
            Some(p) => self.prices.insert(key, p),
            None => self.prices.remove(&key),
        };
        self.truth.expect_conflict(
            "price-variance",
            ExpectedConflict {
                store_id: store,
                sku: Some(sku_name(sku)),
                about: sale.event_id.clone(),
                evidence: vec![sale.event_id.clone()],
                triage: if within {
                    "auto-resolved"
                } else {
                    "needs-review"
                }
                .into(),
                constructed: true,
            },
        );
        self.record_offline(d, sale);
        1
    }

    /// Rules 4 and 5: one redemption id redeemed at event time `t` on the store's first device and
    /// again `gap` later on its last, by the same member (`same_member`: a double redemption; first
    /// wins) or by another (a reused business key). Two events.
    fn redeem_twice(
        &mut self,
        store: &str,
        t: i64,
        business_date: i32,
        k: u32,
        gap: i64,
        same_member: bool,
    ) -> u64 {
        let devs = self.store_devices(store);
        let (a, b) = (devs[0], devs[devs.len() - 1]);
        let kind = if same_member { "dbl" } else { "dup" };
        let redemption_id = format!("lr-{kind}-{store}-{k}-{t}");
        let member = |n: u32| format!("M9{:05}", n);
        let mut ids = Vec::new();
        for (d, at, who) in [
            (a, t, member(2 * k)),
            (b, t + gap, member(2 * k + u32::from(!same_member))),
        ] {
            let h = self.header(d, self.true_time(d, at));
            let redeemed = store_event!(LoyaltyRedeemed, h, {
                redemption_id: redemption_id.clone(),
                member_id: who,
                points: 500,
                reward_code: "COFFEE".into(),
                value: eur(350),
                order_id: None,
                business_date,
            });
            ids.push(redeemed.event_id.clone());
            self.record_offline(d, redeemed);
        }
        let ambiguous = a != b && gap <= SKEW_TOLERANCE_MS;
        let (rule, triage) = match (same_member, ambiguous) {
            (true, false) => ("loyalty-double-redemption", "auto-resolved"),
            (true, true) => ("loyalty-double-redemption", "needs-review"),
            (false, _) => ("duplicate-business-key", "needs-review"),
        };
        self.truth.expect_conflict(
            rule,
            ExpectedConflict {
                store_id: store.to_string(),
                sku: None,
                about: ids[1].clone(),
                evidence: vec![ids[1].clone(), ids[0].clone()],
                triage: triage.into(),
                constructed: true,
            },
        );
        2
    }

    /// Sets every published count's `expected_on_hand` in event time, the detector's order
    /// `(occurred_at, device, seq, line)`: the ordinary counts expect the on-hand of every stock move
    /// before them (no conflict); a constructed stale count expects [`STALE_BY`] more and counts
    /// what was there (a rule-6 review). Lost events moved nothing.
    pub(super) fn settle_counts(&mut self) {
        // (store, sku) -> (event-time key, device, event index, line index)
        type Key = (i64, String, i64, i32);
        type Line = (Key, usize, usize, usize);
        let mut timelines: BTreeMap<(String, String), Vec<Line>> = BTreeMap::new();
        for (d, dev) in self.devices.iter().enumerate() {
            for (i, p) in dev.events.iter().enumerate().filter(|(_, p)| !p.missing) {
                let e = &p.event;
                let key = |line: i32| (e.occurred_at(), e.device_id().to_string(), e.seq(), line);
                let mut add = |sku: &str, line: i32, l: usize| {
                    timelines
                        .entry((e.store_id().to_string(), sku.to_string()))
                        .or_default()
                        .push((key(line), d, i, l));
                };
                match e {
                    DeviceEvent::OrderCreated(o) => {
                        for (l, line) in o.lines.iter().enumerate() {
                            add(&line.sku, line.line_no, l);
                        }
                    }
                    DeviceEvent::OrderRefunded(r) => {
                        for (l, line) in r.lines.iter().enumerate().filter(|(_, x)| x.restock) {
                            add(&line.sku, line.line_no, l);
                        }
                    }
                    DeviceEvent::InventoryAdjusted(a) => {
                        for (l, line) in a.lines.iter().enumerate() {
                            add(&line.sku, l as i32 + 1, l);
                        }
                    }
                    _ => {}
                }
            }
        }
        for ((store, sku), mut entries) in timelines {
            entries.sort();
            let mut on_hand: i64 = 0;
            for (_, d, i, l) in entries {
                let event = &mut self.devices[d].events[i].event;
                on_hand = match event {
                    DeviceEvent::OrderCreated(o) => on_hand - i64::from(o.lines[l].qty),
                    DeviceEvent::OrderRefunded(r) => on_hand + i64::from(r.lines[l].qty),
                    DeviceEvent::InventoryAdjusted(a) => {
                        let stale = a.adjustment_id.starts_with(STALE_PREFIX);
                        let kind = a.kind;
                        let line = &mut a.lines[l];
                        let q = i64::from(line.quantity);
                        match kind {
                            AdjustmentKind::Receipt | AdjustmentKind::TransferIn => on_hand + q,
                            AdjustmentKind::Shrink | AdjustmentKind::TransferOut => on_hand - q,
                            AdjustmentKind::Count if line.expected_on_hand.is_none() => q,
                            AdjustmentKind::Count if stale => {
                                line.quantity = on_hand.max(0) as i32;
                                line.expected_on_hand = Some((on_hand + STALE_BY) as i32);
                                let (id, store, sku) =
                                    (a.event_id.clone(), store.clone(), sku.clone());
                                self.truth.expect_conflict(
                                    "stale-count",
                                    ExpectedConflict {
                                        store_id: store,
                                        sku: Some(sku),
                                        about: id.clone(),
                                        evidence: vec![id],
                                        triage: "needs-review".into(),
                                        constructed: true,
                                    },
                                );
                                on_hand.max(0) - STALE_BY
                            }
                            AdjustmentKind::Count => {
                                line.expected_on_hand = Some(on_hand as i32);
                                q
                            }
                        }
                    }
                    _ => on_hand,
                };
            }
        }
    }
}
