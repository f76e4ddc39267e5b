//! The ground truth of a simulated run: what the fleet really sold and moved, computed from the
//! unique events it emitted with an independent reference implementation of the event semantics
//! (deliberately not the projection's code). Pure; written to `truth.json` by the simulator and read
//! by the oracle.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use tillstream_contracts::{AdjustmentKind, DeviceEvent, TenderMethod};

/// Money sums of one store's trading day (minor units; the fleet trades in one currency).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DayTotals {
    pub orders: u64,
    pub gross: i64,
    pub discounts: i64,
    pub tax: i64,
    pub net: i64,
    pub refunds: u64,
    pub refunded: i64,
}

/// One till's figures for one business date, in the shape of its `StoreDayClosed`: counts of sales
/// and refunds, gross (unit price x qty, tax excluded), discounts, tax and net of the sales, refunds
/// (tax included) and the sales' tenders per method (the contract's name: `CARD`, `CASH`, ...).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceDayTotals {
    pub orders: u64,
    pub refunds: u64,
    pub gross: i64,
    pub discounts: i64,
    pub tax: i64,
    pub net: i64,
    pub refunded: i64,
    pub tenders: BTreeMap<String, i64>,
}

/// What the finance export must hold about one device-day: what the till declared in its day
/// close, what reached the broker (so what the ledger must book), and the reconciliation outcome
/// that follows (`matched` when they are equal, else `mismatched`; `missing_close` without a close).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceDay {
    pub store_id: String,
    /// The till's `StoreDayClosed` (`None`: it never closed the day).
    pub declared: Option<DeviceDayTotals>,
    /// The sales and refunds of the device-day that were published.
    pub booked: DeviceDayTotals,
    /// Set by [`Truth::settle_reconciliation`].
    pub expected_status: String,
}

/// The contract's name of a tender method (the ledger's `tender` column).
pub fn tender_code(method: TenderMethod) -> &'static str {
    match method {
        TenderMethod::Cash => "CASH",
        TenderMethod::Card => "CARD",
        TenderMethod::Mobile => "MOBILE",
        TenderMethod::Voucher => "VOUCHER",
        TenderMethod::LoyaltyPoints => "LOYALTY_POINTS",
        TenderMethod::StoreCredit => "STORE_CREDIT",
        TenderMethod::Other => "OTHER",
    }
}

/// What one (store, sku) sold.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SkuSales {
    pub qty: i64,
    pub gross: i64,
    pub discounts: i64,
    pub tax: i64,
    pub net: i64,
}

/// A sequence range a device never published (the dedup must report it as a gap).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Gap {
    pub device_id: String,
    pub store_id: String,
    pub from_seq: i64,
    pub to_seq: i64,
}

const HOUR_MS: i64 = 3_600_000;

/// The conflict detector's rules, by the name its records carry in `detail["rule"]`.
pub const RULES: [&str; 7] = [
    "oversell",
    "reservation-breach",
    "price-variance",
    "loyalty-double-redemption",
    "duplicate-business-key",
    "stale-count",
    "identity-collision",
];

/// A verdict the conflict detector must hold at the end of a run (not superseded): the event it is
/// about (its record's first evidence id), the other evidence the plan knows it rests on, and how
/// it must be classified (`info`, `auto-resolved`, `needs-review`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExpectedConflict {
    pub store_id: String,
    pub sku: Option<String>,
    pub about: String,
    /// Evidence event ids the record must name (the `about` event first).
    pub evidence: Vec<String>,
    pub triage: String,
    /// Constructed on purpose by the plan (the others arise from the fleet's ordinary trading).
    pub constructed: bool,
}

impl ExpectedConflict {
    /// The key the oracle matches observed records on: `{store}/{sku or -}/{about}`.
    pub fn key(&self) -> String {
        conflict_key(&self.store_id, self.sku.as_deref(), &self.about)
    }
}

/// See [`ExpectedConflict::key`].
pub fn conflict_key(store: &str, sku: Option<&str>, about: &str) -> String {
    format!("{store}/{}/{about}", sku.unwrap_or("-"))
}

/// The key of an hourly sales bucket: `{sku}@{hour_start_ms}`.
pub fn hour_key(sku: &str, hour_start: i64) -> String {
    format!("{sku}@{hour_start}")
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Truth {
    pub currency: String,
    /// Stock on hand per store, per sku.
    pub stock: BTreeMap<String, BTreeMap<String, i64>>,
    /// Sales per (store, business_date).
    pub days: BTreeMap<String, BTreeMap<i32, DayTotals>>,
    /// Sales per store, per sku.
    pub sku_sales: BTreeMap<String, BTreeMap<String, SkuSales>>,
    /// Sales per store, per [`hour_key`] (sku and the UTC hour of the sale's `occurred_at` as the
    /// device recorded it, skewed clock included): (qty, net).
    #[serde(default)]
    pub hourly_sales: BTreeMap<String, BTreeMap<String, (i64, i64)>>,
    /// Every unique store event that reached the broker (not counting health heartbeats).
    pub store_event_ids: BTreeSet<String>,
    /// Stock-moving lines expected in the ledger.
    pub ledger_lines: u64,
    pub health_events: u64,
    /// Event ids published twice with different content (identity collisions).
    pub collisions: BTreeSet<String>,
    /// Sequence ranges never published.
    pub gaps: BTreeSet<Gap>,
    /// Poison publishes by the dead-letter reason they must produce.
    pub dead_letters: BTreeMap<String, u64>,
    /// (store, sku) constructed so two offline devices sold the last unit.
    pub oversold: BTreeSet<(String, String)>,
    /// The conflict detector's verdicts at the end of the run: rule ([`RULES`], identity collisions
    /// excepted: those are `collisions`) -> [`ExpectedConflict::key`] -> the verdict.
    #[serde(default)]
    pub conflicts: BTreeMap<String, BTreeMap<String, ExpectedConflict>>,
    /// Publishes by kind: events, duplicates, collision variants, poison.
    pub published: BTreeMap<String, u64>,
    /// The latest approved price list per store (its `price_list_id`): what the store's retained
    /// catalog message must hold once the downlink has delivered.
    #[serde(default)]
    pub price_lists: BTreeMap<String, String>,
    /// Per device, per business date: its day close, its published sales and refunds, and the
    /// reconciliation outcome the finance export must report.
    #[serde(default)]
    pub device_days: BTreeMap<String, BTreeMap<i32, DeviceDay>>,
    /// Store events of the late tills (tills that came online only after their store's day was
    /// exported): each must reach the finance export as adjustment lines of a later export.
    #[serde(default)]
    pub late_events: BTreeSet<String>,
    /// (store, business date) the late tills traded on: exported before they publish.
    #[serde(default)]
    pub late_days: BTreeSet<(String, i32)>,
    /// Whether the run held the late tills back until their store-day was exported (`sim run
    /// --finance-exports`); without that they publish with the others and may be on time.
    #[serde(default)]
    pub late_held_back: bool,
}

impl Truth {
    pub fn new(currency: &str) -> Self {
        Truth {
            currency: currency.to_string(),
            ..Default::default()
        }
    }

    pub fn stock_of(&self, store: &str, sku: &str) -> i64 {
        self.stock
            .get(store)
            .and_then(|m| m.get(sku))
            .copied()
            .unwrap_or(0)
    }

    fn add_stock(&mut self, store: &str, sku: &str, delta: i64) {
        *self
            .stock
            .entry(store.to_string())
            .or_default()
            .entry(sku.to_string())
            .or_default() += delta;
    }

    fn device_day(&mut self, event: &DeviceEvent, business_date: i32) -> &mut DeviceDay {
        let day = self
            .device_days
            .entry(event.device_id().to_string())
            .or_default()
            .entry(business_date)
            .or_default();
        day.store_id = event.store_id().to_string();
        day
    }

    /// The reconciliation outcome of every device-day: what reached the broker against what the
    /// till declared. Call once every event is applied.
    pub fn settle_reconciliation(&mut self) {
        for day in self.device_days.values_mut().flat_map(|m| m.values_mut()) {
            day.expected_status = match &day.declared {
                None => "missing_close",
                Some(d) if *d == day.booked => "matched",
                Some(_) => "mismatched",
            }
            .to_string();
        }
    }

    /// Applies one unique event that reached the broker.
    pub fn apply(&mut self, event: &DeviceEvent) {
        match event {
            DeviceEvent::DeviceHealth(_) => {
                self.health_events += 1;
                return;
            }
            _ => {
                self.store_event_ids.insert(event.event_id().to_string());
            }
        }
        let store = event.store_id().to_string();
        match event {
            DeviceEvent::OrderCreated(o) => {
                let day = self
                    .days
                    .entry(store.clone())
                    .or_default()
                    .entry(o.business_date)
                    .or_default();
                day.orders += 1;
                day.gross += o.totals.gross.amount_minor;
                day.discounts += o.totals.discounts.amount_minor;
                day.tax += o.totals.tax.amount_minor;
                day.net += o.totals.net.amount_minor;
                let booked = &mut self.device_day(event, o.business_date).booked;
                booked.orders += 1;
                booked.gross += o.totals.gross.amount_minor;
                booked.discounts += o.totals.discounts.amount_minor;
                booked.tax += o.totals.tax.amount_minor;
                booked.net += o.totals.net.amount_minor;
                for t in &o.tenders {
                    *booked
                        .tenders
                        .entry(tender_code(t.method).to_string())
                        .or_default() += t.amount.amount_minor;
                }
                let hour = o.occurred_at.div_euclid(HOUR_MS) * HOUR_MS;
                for l in &o.lines {
                    let gross = l.unit_price.amount_minor * i64::from(l.qty);
                    let disc: i64 = l.discounts.iter().map(|d| d.amount.amount_minor).sum();
                    let h = self
                        .hourly_sales
                        .entry(store.clone())
                        .or_default()
                        .entry(hour_key(&l.sku, hour))
                        .or_default();
                    h.0 += i64::from(l.qty);
                    h.1 += gross - disc + l.tax.amount_minor;
                    let s = self
                        .sku_sales
                        .entry(store.clone())
                        .or_default()
                        .entry(l.sku.clone())
                        .or_default();
                    s.qty += i64::from(l.qty);
                    s.gross += gross;
                    s.discounts += disc;
                    s.tax += l.tax.amount_minor;
                    s.net += gross - disc + l.tax.amount_minor;
                    self.add_stock(&store, &l.sku, -i64::from(l.qty));
                    self.ledger_lines += 1;
                }
            }
            DeviceEvent::OrderRefunded(r) => {
                let day = self
                    .days
                    .entry(store.clone())
                    .or_default()
                    .entry(r.business_date)
                    .or_default();
                day.refunds += 1;
                day.refunded += r.total.amount_minor;
                let booked = &mut self.device_day(event, r.business_date).booked;
                booked.refunds += 1;
                booked.refunded += r.total.amount_minor;
                for l in &r.lines {
                    if l.restock {
                        self.add_stock(&store, &l.sku, i64::from(l.qty));
                        self.ledger_lines += 1;
                    }
                }
            }
            DeviceEvent::InventoryAdjusted(a) => {
                for l in &a.lines {
                    let q = i64::from(l.quantity);
                    let delta = match a.kind {
                        AdjustmentKind::Receipt | AdjustmentKind::TransferIn => q,
                        AdjustmentKind::Shrink | AdjustmentKind::TransferOut => -q,
                        AdjustmentKind::Count => match l.expected_on_hand {
                            Some(expected) => q - i64::from(expected),
                            None => q - self.stock_of(&store, &l.sku),
                        },
                    };
                    self.add_stock(&store, &l.sku, delta);
                    self.ledger_lines += 1;
                }
            }
            DeviceEvent::StoreDayClosed(c) => {
                let mut tenders = BTreeMap::new();
                for t in &c.tender_totals {
                    *tenders
                        .entry(tender_code(t.method).to_string())
                        .or_default() += t.amount.amount_minor;
                }
                self.device_day(event, c.business_date).declared = Some(DeviceDayTotals {
                    orders: u64::try_from(c.order_count).unwrap_or(0),
                    refunds: u64::try_from(c.refund_count).unwrap_or(0),
                    gross: c.gross.amount_minor,
                    discounts: c.discounts.amount_minor,
                    tax: c.tax.amount_minor,
                    net: c.net.amount_minor,
                    refunded: c.refunds.amount_minor,
                    tenders,
                });
            }
            _ => {}
        }
    }

    /// Records a verdict the detector must hold.
    pub fn expect_conflict(&mut self, rule: &str, c: ExpectedConflict) {
        self.conflicts
            .entry(rule.to_string())
            .or_default()
            .insert(c.key(), c);
    }

    pub fn count_published(&mut self, what: &str) {
        *self.published.entry(what.to_string()).or_default() += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tillstream_contracts::samples;

    #[test]
    fn sale_refund_and_adjustments_move_stock() {
        let mut t = Truth::new("EUR");
        let order = samples::order("s1", "d1", 1, 2);
        let sold: i64 = order.lines.iter().map(|l| i64::from(l.qty)).sum();
        let sku0 = order.lines[0].sku.clone();
        t.apply(&order.clone().into());
        let total_stock: i64 = t.stock["s1"].values().sum();
        assert_eq!(total_stock, -sold);
        assert_eq!(t.days["s1"][&order.business_date].orders, 1);
        assert_eq!(
            t.days["s1"][&order.business_date].net,
            order.totals.net.amount_minor
        );
        assert_eq!(t.ledger_lines, 2);

        let mut count = match samples::sample(
            tillstream_contracts::EventKind::InventoryAdjusted,
            "s1",
            "d1",
            3,
        )
        .unwrap()
        {
            DeviceEvent::InventoryAdjusted(a) => a,
            _ => unreachable!(),
        };
        assert_eq!(count.kind, AdjustmentKind::Count);
        count.lines[0].sku = sku0.clone();
        count.lines[0].quantity = 10;
        count.lines[0].expected_on_hand = Some(12);
        let before = t.stock_of("s1", &sku0);
        t.apply(&count.into());
        assert_eq!(
            t.stock_of("s1", &sku0),
            before - 2,
            "a count moves stock by its variance"
        );
    }

    #[test]
    fn health_is_counted_not_stocked() {
        let mut t = Truth::new("EUR");
        let h =
            samples::sample(tillstream_contracts::EventKind::DeviceHealth, "s1", "d1", 1).unwrap();
        t.apply(&h);
        assert_eq!(t.health_events, 1);
        assert!(t.store_event_ids.is_empty());
    }
}
