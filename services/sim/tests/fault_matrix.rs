//! The fault matrix: each scenario runs a simulated fleet through the real pipeline (tansu, mosquitto,
//! the registry, the bridge, dedup and the projection as processes), injects one fault, and ends in
//! the oracle check: zero lost events, zero duplicated effects, every expected gap, collision and dead
//! letter reported. Every scenario is bounded in events and time.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::*;
use tillstream_integration_tests::Svc;
use tillstream_integration_tests::pipeline::Service;
use tillstream_sim::oracle;
use tillstream_sim::plan::PoisonSpec;
use tokio::time::sleep;

const RATE: u64 = 600;

/// The dedup's window for a broker that goes away: the output set it had in flight (one batch, at
/// most `max_batch` = 5,000 records) fails and is re-sent whole once the broker is back, and tansu
/// may have stored part of it before failing the request (on SIGTERM it answers in-flight produce
/// requests with an error; idempotence is off against tansu, see the README). Seen once in CI: 107
/// copies. The projection must still be exact.
const BROKER_OUTAGE: oracle::Allowances = oracle::Allowances {
    dedup_topic_duplicates: 5_000,
};

/// A small fleet (2,000 events) that also publishes `poison`, through the whole pipeline: every bad
/// payload must end as exactly one dead letter with its reason, and everything else must arrive.
async fn bad_input_passes_the_oracle(seed: u64, poison: PoisonSpec) {
    let mut spec = small_fleet(seed, 2_000);
    spec.poison = poison;
    let run = E2e::start(&spec, Backend::Sqlite).await;
    run.publish().await;
    run.assert_oracle_passes().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn heavy_fault_bridge_kill9_twice() {
    let run = E2e::start(&small_fleet(101, 4_000), Backend::Sqlite).await;
    let publishing = run.publish_in_background(RATE).await;
    let mut run = run;
    for _ in 0..2 {
        sleep(Duration::from_secs(2)).await;
        run.pipeline
            .crash_and_restart(Service::Bridge, 0)
            .await
            .unwrap();
    }
    publishing.await.unwrap();
    run.assert_oracle_passes().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn heavy_fault_mosquitto_restart() {
    let run = E2e::start(&small_fleet(102, 4_000), Backend::Sqlite).await;
    let publishing = run.publish_in_background(RATE).await;
    sleep(Duration::from_secs(3)).await;
    run.stack.restart(Svc::Mosquitto).unwrap();
    publishing.await.unwrap();
    run.assert_oracle_passes().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn heavy_fault_tansu_restart() {
    let run = E2e::start(&small_fleet(103, 4_000), Backend::Sqlite).await;
    let publishing = run.publish_in_background(RATE).await;
    sleep(Duration::from_secs(3)).await;
    run.stack.restart(Svc::Tansu).unwrap();
    publishing.await.unwrap();
    run.assert_oracle_passes_with(BROKER_OUTAGE).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn heavy_fault_kafka_unreachable_60s() {
    let run = E2e::start(&small_fleet(104, 6_000), Backend::Sqlite).await;
    let publishing = run.publish_in_background(RATE).await;
    sleep(Duration::from_secs(2)).await;
    run.stack.stop(Svc::Tansu).unwrap();
    sleep(Duration::from_secs(60)).await;
    run.stack.start_svc(Svc::Tansu).unwrap();
    publishing.await.unwrap();
    run.assert_oracle_passes_with(BROKER_OUTAGE).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn heavy_fault_dedup_killed_mid_batch() {
    let run = E2e::start(&small_fleet(105, 5_000), Backend::Sqlite).await;
    let publishing = run.publish_in_background(RATE * 2).await;
    let mut run = run;
    let kills = 2;
    for _ in 0..kills {
        sleep(Duration::from_millis(1_500)).await;
        run.pipeline
            .crash_and_restart(Service::Dedup, 0)
            .await
            .unwrap();
    }
    publishing.await.unwrap();
    // The dedup's at-least-once window: per crash, at most one batch (max_batch = 5000) per
    // partition may be emitted again. The projection must still be exact (checked by the oracle).
    run.assert_oracle_passes_with(oracle::Allowances {
        dedup_topic_duplicates: kills * 5_000 * 4,
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn heavy_fault_projection_killed_mid_batch() {
    // Small batches so a kill lands inside one.
    let env = BTreeMap::from([(
        Service::Projection,
        vec![(
            "TILLSTREAM_INVENTORY_PROJECTION__BATCH__MAX_EVENTS".to_string(),
            "200".to_string(),
        )],
    )]);
    let run = E2e::start_with(&small_fleet(106, 5_000), Backend::Sqlite, env).await;
    let publishing = run.publish_in_background(RATE * 2).await;
    let mut run = run;
    for _ in 0..3 {
        sleep(Duration::from_millis(1_500)).await;
        run.pipeline
            .crash_and_restart(Service::Projection, 0)
            .await
            .unwrap();
    }
    publishing.await.unwrap();
    run.assert_oracle_passes().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn heavy_fault_postgres_restart() {
    let run = E2e::start(&small_fleet(107, 4_000), Backend::Postgres).await;
    let publishing = run.publish_in_background(RATE).await;
    sleep(Duration::from_secs(3)).await;
    run.stack.restart(Svc::Postgres).unwrap();
    publishing.await.unwrap();
    run.assert_oracle_passes().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn heavy_fault_second_consumer_instances_rebalance() {
    // A consumer group moves partitions between the two instances (the static default would give
    // each instance every partition: scaling out statically means a new `static_count` for all).
    let group = |s: Service| {
        let prefix = match s {
            Service::Dedup => "TILLSTREAM_DEDUP__",
            _ => "TILLSTREAM_INVENTORY_PROJECTION__",
        };
        (
            s,
            vec![(format!("{prefix}KAFKA__ASSIGNMENT"), "group".to_string())],
        )
    };
    let env = BTreeMap::from([group(Service::Dedup), group(Service::Projection)]);
    let run = E2e::start_with(&small_fleet(108, 5_000), Backend::Sqlite, env).await;
    let publishing = run.publish_in_background(RATE).await;
    let mut run = run;
    sleep(Duration::from_secs(2)).await;
    let d = run.pipeline.add(Service::Dedup).unwrap();
    let p = run.pipeline.add(Service::Projection).unwrap();
    run.pipeline
        .instance(Service::Dedup, d)
        .wait_ready(Duration::from_secs(60))
        .await
        .unwrap();
    run.pipeline
        .instance(Service::Projection, p)
        .wait_ready(Duration::from_secs(60))
        .await
        .unwrap();
    publishing.await.unwrap();
    run.assert_oracle_passes().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn heavy_fault_poison_payloads() {
    bad_input_passes_the_oracle(
        109,
        PoisonSpec {
            bad_json: 3,
            missing_field: 2,
            wrong_type: 2,
            ..Default::default()
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn heavy_fault_incompatible_schema_version() {
    bad_input_passes_the_oracle(
        110,
        PoisonSpec {
            unknown_schema_version: 4,
            ..Default::default()
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn heavy_fault_spoofed_store_id() {
    bad_input_passes_the_oracle(
        111,
        PoisonSpec {
            spoofed_store: 4,
            ..Default::default()
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn heavy_fault_oversize_payloads() {
    bad_input_passes_the_oracle(
        112,
        PoisonSpec {
            oversize: 3,
            ..Default::default()
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn heavy_fault_device_clock_skew_2h() {
    let mut spec = small_fleet(113, 3_000);
    spec.skewed_fraction = 0.6;
    spec.clock_skew_ms = 2 * 3_600_000;
    let run = E2e::start(&spec, Backend::Sqlite).await;
    run.publish().await;
    run.assert_oracle_passes().await;
}
