//! The plan's properties: determinism in the seed, a truth equal to the unique published events,
//! gaps, collisions and oversells as specified, and sales priced from the approved lists.

use std::collections::{BTreeMap, BTreeSet};

use tillstream_contracts::{DeviceEvent, EventKind};

use super::pricing::base_price;
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
            spoofed_device: 1,
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
    assert_eq!(poison, small().poison.total());
    assert_eq!(replayed.stock, plan.truth.stock);
    assert_eq!(replayed.days, plan.truth.days);
    assert_eq!(replayed.sku_sales, plan.truth.sku_sales);
    assert_eq!(replayed.store_event_ids, plan.truth.store_event_ids);
    assert_eq!(replayed.health_events, plan.truth.health_events);
    assert_eq!(replayed.ledger_lines, plan.truth.ledger_lines);
}

fn kind_of_topic(topic: &str) -> EventKind {
    // store/{store}/{device}/<path> (contract v2) or fleet/{device}/health.status.
    let skip = if topic.starts_with("store/") { 3 } else { 2 };
    let tail = topic.split('/').skip(skip).collect::<Vec<_>>().join("/");
    match tail.as_str() {
        "pos/order.created" => EventKind::OrderCreated,
        "pos/order.refunded" => EventKind::OrderRefunded,
        "inventory/adjusted" => EventKind::InventoryAdjusted,
        "inventory/reservation.requested" => EventKind::StockReservationRequested,
        "inventory/reservation.granted" => EventKind::StockReservationGranted,
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
            // The constructed price variances deviate from the list on purpose.
            let deviates = plan
                .truth
                .conflicts
                .get("price-variance")
                .is_some_and(|m| m.values().any(|c| c.constructed && c.about == o.event_id));
            for line in o.lines.iter().filter(|_| !deviates) {
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

/// The finance truth: a device-day must mismatch exactly when one of its sales or refunds was lost
/// as a sequence gap; every other device-day that traded is closed and matches; the late tills'
/// events are named.
#[test]
fn device_days_mismatch_exactly_where_sales_or_refunds_were_lost() {
    let mut mismatches = 0;
    for spec in [
        small(),
        FleetSpec::default(),
        FleetSpec {
            seed: 7,
            missing: 12,
            ..small()
        },
    ] {
        let plan = generate(&spec);
        let t = &plan.truth;
        let mut fleet = fleet::FleetGenerator::new(&spec);
        let timeline = timeline::Timeline::new(&spec, fleet.devices.len());
        let opening = fleet.receive_opening_stock(&timeline);
        fleet.trade(&timeline, opening);
        fleet.trade_late(&timeline);
        fleet.close_days(&timeline);
        fleet.lose_events();
        let mut lost_money: BTreeSet<(String, i32)> = BTreeSet::new();
        for dev in &fleet.devices {
            for p in dev.events.iter().filter(|p| p.missing) {
                match &p.event {
                    DeviceEvent::OrderCreated(o) => {
                        lost_money.insert((dev.id.clone(), o.business_date));
                    }
                    DeviceEvent::OrderRefunded(r) => {
                        lost_money.insert((dev.id.clone(), r.business_date));
                    }
                    _ => {}
                }
            }
        }
        let mut mismatched = BTreeSet::new();
        for (device, days) in &t.device_days {
            for (date, day) in days {
                assert!(day.declared.is_some(), "{device} {date} never closed");
                match day.expected_status.as_str() {
                    "mismatched" => {
                        mismatched.insert((device.clone(), *date));
                    }
                    "matched" => {}
                    other => panic!("{device} {date}: {other}"),
                }
            }
        }
        assert_eq!(mismatched, lost_money, "seed {}", spec.seed);
        mismatches += mismatched.len();
        // Per-store-day sums of the device-days are the store-day totals.
        for (store, days) in &t.days {
            for (date, totals) in days {
                let (orders, net, refunded) = t
                    .device_days
                    .values()
                    .filter_map(|m| m.get(date))
                    .filter(|d| &d.store_id == store)
                    .fold((0, 0, 0), |a, d| {
                        (
                            a.0 + d.booked.orders,
                            a.1 + d.booked.net,
                            a.2 + d.booked.refunded,
                        )
                    });
                assert_eq!(
                    (orders, net, refunded),
                    (totals.orders, totals.net, totals.refunded)
                );
            }
        }
        let late: Vec<&DevicePlan> = plan.devices.iter().filter(|d| d.late).collect();
        assert_eq!(late.len() as u32, spec.late_tills.min(spec.stores));
        assert_eq!(
            t.late_events.len(),
            late.len() * 3,
            "two sales and the close"
        );
        assert_eq!(plan.late_store_days().len(), late.len());
        let (on_time, held) = plan.split_late();
        assert_eq!(
            on_time.devices.len() + held.devices.len(),
            plan.devices.len()
        );
        assert!(held.devices.iter().all(|d| d.late));
    }
    assert!(mismatches > 0, "some lost event is a sale or refund");
}
