//! The verdicts of the rules that the fleet's ordinary trading can trigger too — oversells (rule 1)
//! and price variances (rule 3) — computed from every published event in event time, an independent
//! reference of the detector's policy (README "Rules and policy"; deliberately not its code). Skewed
//! clocks put an offline till's sale before a receipt, or a sale under a list that was not yet (or
//! no longer) in force at the device's clock; the truth names those verdicts like the constructed
//! ones. Pure.

use std::collections::BTreeMap;

use tillstream_contracts::{AdjustmentKind, DeviceEvent, PriceListApproved};

use super::conflicts::SKEW_TOLERANCE_MS;
use super::fleet::FleetGenerator;
use crate::truth::ExpectedConflict;

/// The detector's default price tolerance per unit: the larger of 5 minor units and 100 basis
/// points of the approved price.
const PRICE_TOLERANCE_MINOR: i64 = 5;
const PRICE_TOLERANCE_BP: i64 = 100;

/// What a stock entry does (event-time order key first).
#[derive(Debug, Clone)]
struct Entry {
    key: (i64, String, i64, i32),
    event_id: String,
    /// Sale: units sold; `None` for other moves.
    sold: Option<i64>,
    /// Ends a run of competing sales (receipts, transfers in, restocking refunds, counts).
    restocks: bool,
    delta: i64,
    /// A count without expectation: on-hand becomes this.
    absolute: Option<i64>,
    /// Published while offline on purpose (a constructed case).
    constructed: bool,
}

impl FleetGenerator {
    /// Adds the expected oversell and price-variance verdicts to the truth (constructed cases
    /// already named there keep their entry).
    pub(super) fn expect_conflicts(&mut self) {
        let mut found = Vec::new();
        found.extend(self.expected_oversells());
        found.extend(expected_price_variances(
            self.devices
                .iter()
                .flat_map(|d| d.events.iter().filter(|p| !p.missing).map(|p| &p.event)),
            &self.price_lists,
        ));
        for (rule, c) in found {
            let known = self
                .truth
                .conflicts
                .get(rule)
                .is_some_and(|m| m.contains_key(&c.key()));
            if !known {
                self.truth.expect_conflict(rule, c);
            }
        }
    }

    /// Rule 1: per (store, sku) in event time, a sale line that takes on-hand below zero loses the
    /// units it sold beyond the stock left (earliest sales win); it goes to review when a sale of
    /// another device that still got stock lies within the skew tolerance since the last restock.
    fn expected_oversells(&self) -> Vec<(&'static str, ExpectedConflict)> {
        let mut timelines: BTreeMap<(String, String), Vec<Entry>> = BTreeMap::new();
        for dev in &self.devices {
            for p in dev.events.iter().filter(|p| !p.missing) {
                let e = &p.event;
                let mut add = |sku: &str, line: i32, entry: Entry| {
                    timelines
                        .entry((e.store_id().to_string(), sku.to_string()))
                        .or_default()
                        .push(Entry {
                            key: (e.occurred_at(), e.device_id().to_string(), e.seq(), line),
                            event_id: e.event_id().to_string(),
                            constructed: p.force_offline,
                            ..entry
                        });
                };
                let blank = Entry {
                    key: (0, String::new(), 0, 0),
                    event_id: String::new(),
                    sold: None,
                    restocks: false,
                    delta: 0,
                    absolute: None,
                    constructed: false,
                };
                match e {
                    DeviceEvent::OrderCreated(o) => {
                        for l in &o.lines {
                            let qty = i64::from(l.qty);
                            let sale = Entry {
                                sold: Some(qty),
                                delta: -qty,
                                ..blank.clone()
                            };
                            add(&l.sku, l.line_no, sale);
                        }
                    }
                    DeviceEvent::OrderRefunded(r) => {
                        for l in r.lines.iter().filter(|l| l.restock) {
                            let back = Entry {
                                restocks: true,
                                delta: i64::from(l.qty),
                                ..blank.clone()
                            };
                            add(&l.sku, l.line_no, back);
                        }
                    }
                    DeviceEvent::InventoryAdjusted(a) => {
                        for (i, l) in a.lines.iter().enumerate() {
                            let q = i64::from(l.quantity);
                            let mv = match (a.kind, l.expected_on_hand) {
                                (AdjustmentKind::Receipt | AdjustmentKind::TransferIn, _) => {
                                    Entry {
                                        restocks: true,
                                        delta: q,
                                        ..blank.clone()
                                    }
                                }
                                (AdjustmentKind::Shrink | AdjustmentKind::TransferOut, _) => {
                                    Entry {
                                        delta: -q,
                                        ..blank.clone()
                                    }
                                }
                                (AdjustmentKind::Count, Some(expected)) => Entry {
                                    restocks: true,
                                    delta: q - i64::from(expected),
                                    ..blank.clone()
                                },
                                (AdjustmentKind::Count, None) => Entry {
                                    restocks: true,
                                    absolute: Some(q),
                                    ..blank.clone()
                                },
                            };
                            add(&l.sku, i as i32 + 1, mv);
                        }
                    }
                    _ => {}
                }
            }
        }
        let mut out = Vec::new();
        for ((store, sku), mut entries) in timelines {
            entries.sort_by(|a, b| a.key.cmp(&b.key));
            let mut after = Vec::with_capacity(entries.len());
            let mut on_hand = 0i64;
            for e in &entries {
                on_hand = e.absolute.unwrap_or(on_hand + e.delta);
                after.push(on_hand);
            }
            for (i, e) in entries.iter().enumerate() {
                let Some(qty) = e.sold else { continue };
                let shortfall = qty.min((-after[i]).max(0));
                if shortfall == 0 {
                    continue;
                }
                // The verdict rests on the line alone: which earlier sale took the last unit is
                // not part of it (the detector's README, "Verdicts are idempotent").
                let mut ambiguous = false;
                for j in (0..i).rev() {
                    let w = &entries[j];
                    if w.restocks {
                        break;
                    }
                    if w.sold.is_some()
                        && after[j] >= 0
                        && e.key.0 - w.key.0 <= SKEW_TOLERANCE_MS
                        && w.key.1 != e.key.1
                    {
                        ambiguous = true;
                    }
                }
                out.push((
                    "oversell",
                    ExpectedConflict {
                        store_id: store.clone(),
                        sku: Some(sku.clone()),
                        about: e.event_id.clone(),
                        evidence: vec![e.event_id.clone()],
                        triage: if ambiguous {
                            "needs-review"
                        } else {
                            "auto-resolved"
                        }
                        .into(),
                        constructed: e.constructed,
                    },
                ));
            }
        }
        out
    }
}

/// Rule 3: each sale line against the list in force for its store at its `occurred_at` (the latest
/// `effective_from <= occurred_at`; ties: later approval, then list id). A different price is a
/// verdict: auto-accepted within the tolerance, else a review; a review too when the charged price is
/// another list's, in force within the skew tolerance of the sale.
pub(super) fn expected_price_variances<'a>(
    events: impl Iterator<Item = &'a DeviceEvent>,
    lists: &[PriceListApproved],
) -> Vec<(&'static str, ExpectedConflict)> {
    let mut by_store: BTreeMap<&str, Vec<&PriceListApproved>> = BTreeMap::new();
    for l in lists {
        by_store.entry(&l.store_id).or_default().push(l);
    }
    for v in by_store.values_mut() {
        v.sort_by(|a, b| {
            (a.effective_from, a.occurred_at, &a.price_list_id).cmp(&(
                b.effective_from,
                b.occurred_at,
                &b.price_list_id,
            ))
        });
    }
    let price_of = |l: &PriceListApproved, sku: &str| {
        l.items
            .iter()
            .find(|i| i.sku == sku)
            .map(|i| i.price.amount_minor)
    };
    let mut out = Vec::new();
    for e in events {
        let DeviceEvent::OrderCreated(o) = e else {
            continue;
        };
        let Some(store_lists) = by_store.get(o.store_id.as_str()) else {
            continue;
        };
        let t = o.occurred_at;
        let in_force = |at: i64| {
            store_lists
                .partition_point(|l| l.effective_from <= at)
                .checked_sub(1)
        };
        let Some(idx) = in_force(t) else { continue };
        let list = store_lists[idx];
        for line in &o.lines {
            let Some(approved) = price_of(list, &line.sku) else {
                continue;
            };
            let charged = line.unit_price.amount_minor;
            if approved == charged {
                continue;
            }
            let lo = in_force(t - SKEW_TOLERANCE_MS).unwrap_or(0);
            let hi = store_lists.partition_point(|l| l.effective_from <= t + SKEW_TOLERANCE_MS);
            let near = store_lists[lo.min(hi)..hi].iter().any(|l| {
                l.price_list_id != list.price_list_id && price_of(l, &line.sku) == Some(charged)
            });
            let allowed = (approved.abs() * PRICE_TOLERANCE_BP / 10_000).max(PRICE_TOLERANCE_MINOR);
            let within = (approved - charged).abs() <= allowed;
            out.push((
                "price-variance",
                ExpectedConflict {
                    store_id: o.store_id.clone(),
                    sku: Some(line.sku.clone()),
                    about: o.event_id.clone(),
                    evidence: vec![o.event_id.clone()],
                    triage: if within && !near {
                        "auto-resolved"
                    } else {
                        "needs-review"
                    }
                    .into(),
                    constructed: false,
                },
            ));
        }
    }
    out
}
