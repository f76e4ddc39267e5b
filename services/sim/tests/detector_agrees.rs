//! The truth's expected conflicts against the conflict detector's pure core, without any I/O: every
//! event a plan publishes (each device's in its own order, devices interleaved, offline bursts
//! arriving late) and every approved price list go through `Detector::apply`; the verdicts that hold
//! at the end must be exactly the truth's, rule by rule, with the same triage. Fails when the plan
//! constructs a case the rules judge differently from what the truth says (or when ordinary trading
//! triggers a verdict the truth does not name), long before an end-to-end run would.

use std::collections::BTreeMap;

use tillstream_conflict_detector::core::{Change, CoreConfig, Detector, Mode};
use tillstream_contracts::{DeviceEvent, EventKind};
use tillstream_sim::plan::{FleetSpec, Plan, Purpose, Step, generate};
use tillstream_sim::truth::{RULES, conflict_key};

fn kind_of(topic: &str) -> Option<EventKind> {
    let kinds = [
        ("/pos/order.created", EventKind::OrderCreated),
        ("/pos/order.refunded", EventKind::OrderRefunded),
        ("/inventory/adjusted", EventKind::InventoryAdjusted),
        (
            "/inventory/reservation.requested",
            EventKind::StockReservationRequested,
        ),
        (
            "/inventory/reservation.granted",
            EventKind::StockReservationGranted,
        ),
        (
            "/inventory/reservation.released",
            EventKind::StockReservationReleased,
        ),
        ("/loyalty/redeemed", EventKind::LoyaltyRedeemed),
        ("/day/closed", EventKind::StoreDayClosed),
    ];
    kinds
        .into_iter()
        .find(|(suffix, _)| topic.ends_with(suffix))
        .map(|(_, k)| k)
}

/// rule -> key -> triage of the verdicts the detector holds after the plan's events.
fn detector_verdicts(plan: &Plan) -> BTreeMap<String, BTreeMap<String, String>> {
    let mut detector = Detector::new(CoreConfig::default());
    for list in &plan.price_lists {
        detector.apply_price_list(list, Mode::Live).unwrap();
    }
    // Each device's first publishes of its events, in its order; devices take turns.
    let mut queues: Vec<Vec<DeviceEvent>> = plan
        .devices
        .iter()
        .map(|d| {
            let mut seen = std::collections::BTreeSet::new();
            d.steps
                .iter()
                .filter_map(|s| match s {
                    Step::Publish(p) if p.purpose == Purpose::Event => {
                        let kind = kind_of(&p.topic)?;
                        let e = DeviceEvent::from_json(kind, &p.payload).unwrap();
                        seen.insert(e.event_id().to_string()).then_some(e)
                    }
                    _ => None,
                })
                .rev()
                .collect()
        })
        .collect();
    let mut current = BTreeMap::new();
    let mut record_time = 0;
    while queues.iter().any(|q| !q.is_empty()) {
        for q in queues.iter_mut() {
            let Some(e) = q.pop() else { continue };
            record_time += 1;
            for change in detector.apply(&e, record_time, Mode::Live).unwrap().changes {
                match change {
                    Change::Raised(v) => {
                        current.insert(v.conflict_id.clone(), v);
                    }
                    Change::Superseded { verdict, .. } => {
                        current.remove(&verdict.conflict_id);
                    }
                }
            }
        }
    }
    let mut out: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    for v in current.values() {
        let key = conflict_key(&v.store_id, v.sku.as_deref(), &v.evidence[0]);
        let previous = out
            .entry(v.rule.name().to_string())
            .or_default()
            .insert(key.clone(), v.triage.name().to_string());
        assert!(previous.is_none(), "two verdicts about {key}");
    }
    out
}

fn assert_agrees(spec: &FleetSpec) {
    let plan = generate(spec);
    let observed = detector_verdicts(&plan);
    let expected: BTreeMap<String, BTreeMap<String, String>> = plan
        .truth
        .conflicts
        .iter()
        .map(|(rule, m)| {
            let m = m
                .iter()
                .map(|(k, c)| (k.clone(), c.triage.clone()))
                .collect();
            (rule.clone(), m)
        })
        .collect();
    for (rule, m) in &expected {
        let constructed = plan.truth.conflicts[rule]
            .values()
            .filter(|c| c.constructed)
            .count();
        println!(
            "{rule}: {} expected ({constructed} constructed), {} from the detector",
            m.len(),
            observed.get(rule).map_or(0, BTreeMap::len)
        );
    }
    assert_eq!(observed, expected, "detector core vs truth");
}

#[test]
fn the_truth_names_the_detectors_verdicts_for_the_default_fleet() {
    let spec = FleetSpec::default();
    assert_agrees(&spec);
    let plan = generate(&spec);
    let rules = &plan.truth.conflicts;
    // Identity collisions come from the dedup, not from the detector's core.
    for rule in RULES.into_iter().filter(|r| *r != "identity-collision") {
        assert!(
            rules
                .get(rule)
                .is_some_and(|m| m.values().any(|c| c.constructed)),
            "no constructed case of {rule}"
        );
    }
    let triages = |rule: &str| -> Vec<String> {
        rules[rule]
            .values()
            .filter(|c| c.constructed)
            .map(|c| c.triage.clone())
            .collect()
    };
    assert!(triages("price-variance").contains(&"auto-resolved".to_string()));
    assert!(triages("price-variance").contains(&"needs-review".to_string()));
    assert!(triages("loyalty-double-redemption").contains(&"auto-resolved".to_string()));
    assert!(triages("loyalty-double-redemption").contains(&"needs-review".to_string()));
}

#[test]
fn the_truth_names_the_detectors_verdicts_for_the_run_script_fleet() {
    // scripts/run's defaults.
    assert_agrees(&FleetSpec {
        seed: 42,
        stores: 10,
        devices_per_store: 4,
        events: 20_000,
        ..FleetSpec::default()
    });
}

#[test]
fn the_truth_names_the_detectors_verdicts_for_the_test_fleets() {
    // The end-to-end and fault-matrix fleets (tests/common/mod.rs: small_fleet).
    for (seed, events) in [(11, 3_000), (21, 4_000), (7, 6_000)] {
        assert_agrees(&FleetSpec {
            seed,
            stores: 4,
            devices_per_store: 2,
            events,
            ..FleetSpec::default()
        });
    }
}
