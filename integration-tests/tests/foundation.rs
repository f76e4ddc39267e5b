//! Foundation on the real stack: topology plan/apply against a fresh tansu, and store-keyed
//! partitioning (all of one store's events in one partition, in order).

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use tillctl::topology;
use tillstream_contracts::samples;
use tillstream_contracts::{DeviceEvent, EventKind, codec};
use tillstream_integration_tests::*;
use tillstream_runtime::CancellationToken;
use tillstream_runtime::kafka::{self, headers};

#[tokio::test(flavor = "multi_thread")]
async fn plan_on_empty_tansu_lists_every_topic_then_apply_leaves_no_drift() {
    let stack = Stack::start(&[Svc::Tansu], None).unwrap();
    let kafka = stack.kafka();
    let file = topology::load(&repo().join("topology/topology.toml")).unwrap();
    let desired = topology::desired(&file, "local").unwrap();
    let keys = topology::managed_keys(&desired);
    let timeout = Duration::from_secs(15);

    let live = topology::live(&kafka, &keys, timeout).await.unwrap();
    let plan = topology::plan(&desired, &live, false);
    let created: BTreeSet<String> = plan
        .iter()
        .filter_map(|c| match c {
            topology::Change::Create(t) => Some(t.name.clone()),
            _ => None,
        })
        .collect();
    let all: BTreeSet<String> = file.topics.iter().map(|t| t.name.clone()).collect();
    assert_eq!(
        created, all,
        "plan on an empty broker must create every topic"
    );

    let done = topology::apply(&kafka, &plan, timeout).await.unwrap();
    assert_eq!(done.len(), all.len(), "{done:?}");

    let live = topology::live(&kafka, &keys, timeout).await.unwrap();
    let drift: Vec<_> = topology::plan(&desired, &live, false)
        .into_iter()
        .filter(|c| c.is_drift())
        .collect();
    assert!(drift.is_empty(), "no drift after apply: {drift:?}");
    for d in &desired {
        let l = &live[&d.name];
        assert_eq!(l.partitions, d.partitions, "{}", d.name);
        assert_eq!(l.config.as_ref(), Some(&d.config), "{}", d.name);
    }
    // Applying again is harmless.
    let again = topology::plan(&desired, &live, false);
    assert!(
        topology::apply(&kafka, &again, timeout)
            .await
            .unwrap()
            .is_empty()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn one_stores_events_land_in_one_partition_in_order() {
    let stack = Stack::start(&[Svc::Tansu], None).unwrap();
    let kafka_cfg = stack.kafka();
    apply_topology(&kafka_cfg).await.unwrap();
    let registry = TestRegistry::start().await.unwrap();
    let client = registry.client();
    let producer = kafka::producer(&kafka_cfg, "it-partitioning").unwrap();
    let token = CancellationToken::new();
    let topic = "tillstream.store-events.raw";

    // 20 stores x 2 devices x 25 events, interleaved across stores.
    let mut sent = 0;
    for seq in 1..=25i64 {
        for s in 0..20 {
            for d in 1..=2 {
                let store = format!("s{s:03}");
                let device = format!("{store}-d{d:02}");
                let kind =
                    [EventKind::OrderCreated, EventKind::InventoryAdjusted][seq as usize % 2];
                let event = samples::sample(kind, &store, &device, seq).unwrap();
                let version = event.schema_version() as u32;
                let id = client.schema_id(kind, version).await.unwrap();
                let payload = codec::frame(id, event.encode().unwrap());
                let seq_s = seq.to_string();
                let h = kafka::make_headers(&[
                    (headers::EVENT_TYPE, kind.name()),
                    (headers::DEVICE_ID, &device),
                    (headers::SEQ, &seq_s),
                ]);
                kafka::send_with_retry(
                    &producer,
                    topic,
                    store.as_bytes(),
                    &payload,
                    Some(h),
                    &token,
                )
                .await
                .unwrap();
                sent += 1;
            }
        }
    }

    let records =
        tokio::task::spawn_blocking(move || read_all(&kafka_cfg, topic, Duration::from_secs(60)))
            .await
            .unwrap()
            .unwrap();
    assert_eq!(records.len(), sent);
    let mut partitions_of: BTreeMap<String, BTreeSet<i32>> = BTreeMap::new();
    let mut by_partition: BTreeMap<i32, Vec<&Record>> = BTreeMap::new();
    for r in &records {
        partitions_of
            .entry(r.key_str())
            .or_default()
            .insert(r.partition);
        by_partition.entry(r.partition).or_default().push(r);
    }
    assert_eq!(partitions_of.len(), 20);
    for (store, parts) in &partitions_of {
        assert_eq!(
            parts.len(),
            1,
            "store {store} spread over partitions {parts:?}"
        );
    }
    let used: BTreeSet<i32> = partitions_of.values().flatten().copied().collect();
    assert!(
        used.len() > 1,
        "20 stores should not all hash to one partition: {used:?}"
    );

    // Within a partition, each device's events come back in the order produced (seq ascending),
    // and the payload decodes to the event that was sent.
    for recs in by_partition.values_mut() {
        recs.sort_by_key(|r| r.offset);
        let mut last: BTreeMap<String, i64> = BTreeMap::new();
        for r in recs.iter() {
            let event: DeviceEvent = decode_event(&client, r.payload.as_deref().unwrap())
                .await
                .unwrap();
            assert_eq!(event.store_id(), r.key_str());
            let prev = last.insert(event.device_id().to_string(), event.seq());
            assert!(
                prev.is_none_or(|p| p < event.seq()),
                "out of order in partition {}",
                r.partition
            );
        }
    }
}
