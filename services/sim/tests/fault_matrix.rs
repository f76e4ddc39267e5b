//! The fault matrix: each scenario runs a simulated fleet through the real pipeline (tansu, mosquitto,
//! the registry, the bridge, dedup and the projection as processes), injects one fault, and ends in
//! the oracle check: zero lost events, zero duplicated effects, every expected gap, collision and dead
//! letter reported, and the time the pipeline took to catch up once the fault ended (no process is
//! restarted by hand: the pipeline must resume by itself).
//!
//! Faults fire on an observed condition — the fleet's acknowledged publishes, a service's metric
//! showing work in flight — never after a bare sleep; a fault's own duration (a 60 s outage, a
//! 90 s hang) is the only timed wait. Allowances derive from the fault: the dedup's at-least-once
//! window is one output set of at most `DEDUP_MAX_BATCH` records per crash or per failed delivery
//! it reports. Every scenario is bounded in events and time.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::*;
use tillstream_integration_tests::Svc;
use tillstream_integration_tests::pipeline::Service;
use tillstream_sim::oracle::Allowances;
use tillstream_sim::plan::PoisonSpec;
use tokio::time::sleep;

const RATE: u64 = 600;

/// How long before a fault a message the broker acknowledged may still sit unacknowledged by the
/// bridge (it acks after its outbox commit, and mosquitto saves its store once a second): such a
/// message belongs to the broker's queue, and a broker crash or an abandoned session loses it too.
const BRIDGE_ACK_LAG: Duration = Duration::from_secs(1);

/// librdkafka's `request.timeout.ms` default, which the services' producers keep.
const PRODUCER_REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
const DEDUP_EVENTS_IN: &str = "tillstream_dedup_events_in_total";
const DEDUP_DELIVERY_RETRIES: &str = "tillstream_dedup_delivery_retries_total";
const PROJECTION_APPLIED: &str = "tillstream_inventory_projection_events_applied_total";

/// A broker outage's allowance: every output set the dedup had to re-send (it counts them) may have
/// been stored in part before the broker failed it (tansu answers in-flight produce requests with an
/// error on SIGTERM, sometimes after storing them; idempotence is off against tansu).
async fn broker_outage_allowance(run: &mut E2e, fault: &BrokerFault) -> Allowances {
    let retries = run
        .pipeline
        .instance(Service::Dedup, 0)
        .metric(DEDUP_DELIVERY_RETRIES)
        .await
        .expect("dedup metrics") as u64;
    // Below the dedup's counted re-sends, librdkafka re-sends a produce request whose answer timed
    // out (the local stack's producers are not idempotent): a frozen broker that wakes up may
    // then write the request once per copy its socket holds, one copy per request timeout of the
    // freeze. The dedup producer keeps one request in flight, and a request holds at most one
    // output set.
    let resent_requests = match fault {
        BrokerFault::Hang(d) => d.as_secs().div_ceil(PRODUCER_REQUEST_TIMEOUT.as_secs()),
        _ => 0,
    };
    println!(
        "dedup re-sent {retries} output set(s) during the outage; the freeze allows {resent_requests} request re-send(s)"
    );
    Allowances::dedup_batches_replayed(retries + resent_requests, DEDUP_MAX_BATCH)
}

/// Waits until `service` shows work in flight: `metric` moved past its value when asked.
async fn wait_working(run: &mut E2e, service: Service, metric: &str) {
    let before = run
        .pipeline
        .instance(service, 0)
        .metric(metric)
        .await
        .unwrap_or(0.0);
    run.wait_metric(service, 0, metric, Duration::from_secs(120), |v| v > before)
        .await;
}

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
    let mut run = E2e::start(&small_fleet(101, 4_000), Backend::Sqlite).await;
    let publishing = run.publish_in_background(RATE).await;
    for fraction in [0.25, 0.5] {
        run.wait_progress(fraction).await;
        run.pipeline
            .crash_and_restart(Service::Bridge, 0)
            .await
            .unwrap();
    }
    run.fault_ended();
    publishing.await.unwrap();
    run.assert_oracle_passes().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn heavy_fault_mosquitto_restart() {
    let run = E2e::start(&small_fleet(102, 4_000), Backend::Sqlite).await;
    let publishing = run.publish_in_background(RATE).await;
    run.wait_progress(0.3).await;
    run.stack.restart(Svc::Mosquitto).unwrap();
    run.fault_ended();
    publishing.await.unwrap();
    run.assert_oracle_passes().await;
}

/// mosquitto acknowledges QoS 1 before its autosave (every 30 s on the local stack), so a SIGKILL
/// loses what it held since: here a whole queue, built up while the bridge was frozen. Devices keep
/// every event until a sync receipt covers it, so the receipts make them re-send what the broker
/// lost: 0 lost.
#[tokio::test(flavor = "multi_thread")]
async fn heavy_fault_mosquitto_sigkill_holding_a_queue() {
    let mut run = E2e::start(&small_fleet(114, 4_000), Backend::Sqlite).await;
    let publishing = run.publish_in_background(RATE).await;
    run.wait_progress(0.2).await;
    // Freeze the bridge: mosquitto queues the fleet's messages for its persistent session.
    run.pipeline.instance(Service::Bridge, 0).pause().unwrap();
    let frozen = std::time::Instant::now();
    let frozen_at = run.acked.load(std::sync::atomic::Ordering::Relaxed);
    // A queue the autosave cannot all have saved: the fleet's acknowledged publishes since.
    run.wait_acked(frozen_at + 600).await;
    run.stack.kill(Svc::Mosquitto).unwrap();
    let allow = run.lost_in_window(frozen - BRIDGE_ACK_LAG, std::time::Instant::now());
    run.stack.start_svc(Svc::Mosquitto).unwrap();
    run.pipeline.instance(Service::Bridge, 0).resume().unwrap();
    run.fault_ended();
    let report = publishing.await.unwrap();
    println!(
        "devices re-sent {} events a receipt listed missing and {} no receipt covered",
        report.resent_missing, report.resent_overdue
    );
    run.assert_oracle_passes_with(allow).await;
}

/// What happens to the broker (tansu) in a broker-outage scenario.
#[derive(Debug, Clone, Copy)]
enum BrokerFault {
    /// `scripts/stack restart` (SIGTERM, start).
    Restart,
    /// SIGKILL, then start.
    Kill,
    /// Frozen (SIGSTOP) this long, longer than every producer and consumer timeout, then thawed.
    Hang(Duration),
    /// Stopped this long (connections refused), then started.
    Down(Duration),
}

/// A fleet publishes; once the dedup shows work in flight at `progress` of the plan, the broker
/// suffers `fault`; the pipeline must catch up by itself, losing nothing. The dedup may re-send the
/// output sets it reports as failed (see `broker_outage_allowance`).
async fn broker_outage(seed: u64, events: u64, progress: f64, fault: BrokerFault) {
    let mut run = E2e::start(&small_fleet(seed, events), Backend::Sqlite).await;
    let publishing = run.publish_in_background(RATE).await;
    run.wait_progress(progress).await;
    wait_working(&mut run, Service::Dedup, DEDUP_EVENTS_IN).await;
    match fault {
        BrokerFault::Restart => run.stack.restart(Svc::Tansu).unwrap(),
        BrokerFault::Kill => {
            run.stack.kill(Svc::Tansu).unwrap();
            run.stack.start_svc(Svc::Tansu).unwrap();
        }
        BrokerFault::Hang(how_long) => {
            run.stack.pause(Svc::Tansu).unwrap();
            sleep(how_long).await;
            run.stack.resume(Svc::Tansu).unwrap();
        }
        BrokerFault::Down(how_long) => {
            run.stack.stop(Svc::Tansu).unwrap();
            sleep(how_long).await;
            run.stack.start_svc(Svc::Tansu).unwrap();
        }
    }
    run.fault_ended();
    publishing.await.unwrap();
    let allow = broker_outage_allowance(&mut run, &fault).await;
    run.assert_oracle_passes_with(allow).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn heavy_fault_tansu_restart() {
    broker_outage(103, 4_000, 0.3, BrokerFault::Restart).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn heavy_fault_tansu_sigkill() {
    broker_outage(115, 4_000, 0.3, BrokerFault::Kill).await;
}

/// tansu frozen for 90 s: after it resumes (the state in which tansu 0.6's group coordinator left
/// live members unassigned for minutes) the pipeline must catch up by itself: each service owns its
/// partitions (static assignment).
#[tokio::test(flavor = "multi_thread")]
async fn heavy_fault_tansu_hung_90s() {
    broker_outage(116, 5_000, 0.2, BrokerFault::Hang(Duration::from_secs(90))).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn heavy_fault_kafka_unreachable_60s() {
    broker_outage(104, 6_000, 0.15, BrokerFault::Down(Duration::from_secs(60))).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn heavy_fault_dedup_killed_mid_batch() {
    let mut run = E2e::start(&small_fleet(105, 5_000), Backend::Sqlite).await;
    let publishing = run.publish_in_background(RATE * 2).await;
    let kills = 2;
    for fraction in [0.3, 0.6] {
        run.wait_progress(fraction).await;
        // A batch is being processed: the dedup's input count is moving.
        wait_working(&mut run, Service::Dedup, DEDUP_EVENTS_IN).await;
        run.pipeline
            .crash_and_restart(Service::Dedup, 0)
            .await
            .unwrap();
    }
    run.fault_ended();
    publishing.await.unwrap();
    // Per crash, the one batch in flight (outputs delivered, changelog not yet written) may be
    // emitted again. The projection must still be exact (checked by the oracle).
    run.assert_oracle_passes_with(Allowances::dedup_batches_replayed(kills, DEDUP_MAX_BATCH))
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
    let mut run = E2e::start_with(&small_fleet(106, 5_000), Backend::Sqlite, env).await;
    let publishing = run.publish_in_background(RATE * 2).await;
    for fraction in [0.2, 0.45, 0.7] {
        run.wait_progress(fraction).await;
        wait_working(&mut run, Service::Projection, PROJECTION_APPLIED).await;
        run.pipeline
            .crash_and_restart(Service::Projection, 0)
            .await
            .unwrap();
    }
    run.fault_ended();
    publishing.await.unwrap();
    run.assert_oracle_passes().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn heavy_fault_postgres_restart() {
    let mut run = E2e::start(&small_fleet(107, 4_000), Backend::Postgres).await;
    let publishing = run.publish_in_background(RATE).await;
    run.wait_progress(0.3).await;
    wait_working(&mut run, Service::Projection, PROJECTION_APPLIED).await;
    run.stack.restart(Svc::Postgres).unwrap();
    run.fault_ended();
    publishing.await.unwrap();
    run.assert_oracle_passes().await;
}

/// PostgreSQL frozen (postmaster and backends) while the projection writes: its transactions hang,
/// then resume; nothing applied twice, nothing skipped, no restart by hand.
#[tokio::test(flavor = "multi_thread")]
async fn heavy_fault_postgres_hung_30s() {
    let mut run = E2e::start(&small_fleet(117, 4_000), Backend::Postgres).await;
    let publishing = run.publish_in_background(RATE).await;
    run.wait_progress(0.3).await;
    wait_working(&mut run, Service::Projection, PROJECTION_APPLIED).await;
    run.stack.pause(Svc::Postgres).unwrap();
    sleep(Duration::from_secs(30)).await;
    run.stack.resume(Svc::Postgres).unwrap();
    run.fault_ended();
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
    let mut run = E2e::start_with(&small_fleet(108, 5_000), Backend::Sqlite, env).await;
    let publishing = run.publish_in_background(RATE).await;
    run.wait_progress(0.3).await;
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
    run.fault_ended();
    publishing.await.unwrap();
    run.assert_oracle_passes().await;
}

/// The outbox's disk fills up while Kafka is away: the bridge stops acking (mosquitto keeps the
/// queue), keeps its outbox, and resumes by itself once Kafka is back and deliveries free the disk.
#[tokio::test(flavor = "multi_thread")]
async fn heavy_fault_outbox_disk_full() {
    let disk = tillstream_integration_tests::SmallDisk::mount("3m");
    let env = BTreeMap::from([(
        Service::Bridge,
        vec![
            (
                "TILLSTREAM_STORE_BRIDGE__OUTBOX__DIR".to_string(),
                disk.path().display().to_string(),
            ),
            (
                "TILLSTREAM_STORE_BRIDGE__OUTBOX__DISK_RESERVE_BYTES".to_string(),
                (512 * 1024).to_string(),
            ),
        ],
    )]);
    let mut run = E2e::start_with(&small_fleet(118, 8_000), Backend::Sqlite, env).await;
    let publishing = run.publish_in_background(RATE * 2).await;
    run.wait_progress(0.1).await;
    run.stack.stop(Svc::Tansu).unwrap();
    // The outbox grows until its disk refuses a commit.
    run.wait_metric(
        Service::Bridge,
        0,
        "tillstream_store_bridge_outbox_disk_stalled",
        Duration::from_secs(240),
        |v| v >= 1.0,
    )
    .await;
    run.stack.start_svc(Svc::Tansu).unwrap();
    run.wait_metric(
        Service::Bridge,
        0,
        "tillstream_store_bridge_outbox_disk_stalled",
        Duration::from_secs(240),
        |v| v == 0.0,
    )
    .await;
    run.fault_ended();
    publishing.await.unwrap();
    // tansu was stopped (connections refused) while the disk filled.
    let allow = broker_outage_allowance(&mut run, &BrokerFault::Down(Duration::ZERO)).await;
    run.assert_oracle_passes_with(allow).await;
}

/// The bridge restarted with another MQTT client id (a new session: what mosquitto queued for the
/// old one is never delivered to it) and a changed route map (routes reordered, one added). Devices
/// re-send what no receipt covers.
#[tokio::test(flavor = "multi_thread")]
async fn heavy_fault_bridge_restarted_with_new_client_id_and_routes() {
    let mut run = E2e::start(&small_fleet(119, 4_000), Backend::Sqlite).await;
    let publishing = run.publish_in_background(RATE).await;
    run.wait_progress(0.35).await;
    let routes = tillstream_store_bridge::config::default_routes();
    let mut changed: Vec<_> = routes.into_iter().rev().collect();
    changed.push(tillstream_store_bridge::config::RouteConfig {
        topic: "store/{store}/{device}/pos/order.voided".into(),
        kind: "OrderRefunded".into(),
        kafka_topic: tillstream_store_bridge::config::RAW_TOPIC.into(),
    });
    let routes_toml = changed
        .iter()
        .map(|r| {
            format!(
                "{{topic={:?}, kind={:?}, kafka_topic={:?}}}",
                r.topic, r.kind, r.kafka_topic
            )
        })
        .collect::<Vec<_>>()
        .join(", ");
    let env = [
        (
            "TILLSTREAM_STORE_BRIDGE__MQTT__CLIENT_ID".to_string(),
            "tillstream-store-bridge-renamed".to_string(),
        ),
        (
            "TILLSTREAM_STORE_BRIDGE__ROUTES".to_string(),
            format!("[{routes_toml}]"),
        ),
    ];
    let env_refs: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    // What mosquitto queued for the old session between the kill and the new session's
    // subscription never reaches the new one.
    let killed = std::time::Instant::now();
    run.pipeline
        .crash_and_restart_with(Service::Bridge, 0, &env_refs)
        .await
        .unwrap();
    let allow = run.lost_in_window(killed - BRIDGE_ACK_LAG, std::time::Instant::now());
    run.fault_ended();
    let report = publishing.await.unwrap();
    println!(
        "devices re-sent {} events a receipt listed missing and {} no receipt covered",
        report.resent_missing, report.resent_overdue
    );
    run.assert_oracle_passes_with(allow).await;
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
async fn heavy_fault_spoofed_store_and_device_ids() {
    bad_input_passes_the_oracle(
        111,
        PoisonSpec {
            spoofed_store: 4,
            spoofed_device: 3,
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

const DETECTOR_APPLIED: &str = "tillstream_conflict_detector_events_applied_total";
const DETECTOR_HOLD_BATCH: &str = "TILLSTREAM_CONFLICT_DETECTOR__FAULT__HOLD_BATCH_OPEN_MS";
const DETECTOR_HOLD_PUBLISH: &str = "TILLSTREAM_CONFLICT_DETECTOR__FAULT__HOLD_AFTER_PUBLISH_MS";

/// Waits until the detector's fault hook creates `marker` (removed first: the hook is holding now),
/// then checks that it is mid-run (some events applied, not all) and returns how many.
async fn wait_detector_holding(run: &mut E2e, marker: &std::path::Path) -> f64 {
    let _ = std::fs::remove_file(marker);
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    while !marker.exists() {
        assert!(
            std::time::Instant::now() < deadline,
            "the detector's hook did not hold within 120 s ({})\n{}",
            marker.display(),
            run.pipeline.logs(30)
        );
        sleep(Duration::from_millis(20)).await;
    }
    let applied = run
        .pipeline
        .instance(Service::ConflictDetector, 0)
        .metric(DETECTOR_APPLIED)
        .await
        .expect("detector metrics");
    let total = run.plan.truth.store_event_ids.len() as f64;
    assert!(
        applied > 0.0 && applied < total,
        "the kill must land mid-run: {applied} of {total} events applied"
    );
    applied
}

/// The conflict detector (started only here) killed twice with SIGKILL: first while a batch
/// transaction that decided something is held open before COMMIT (`fault.hold_batch_open_ms`),
/// then after its publisher delivered outbox records and before it deleted them
/// (`fault.hold_after_publish_ms`); each hook creates a marker file when it holds. Restarted each
/// time. The oracle must find every verdict, resolution and compensation exactly once on the
/// topics (its records row counts each by its id: 0 missing, 0 doubled) and every rule's verdicts
/// as the truth names them. No allowance: the detector's outputs are exactly once.
#[tokio::test(flavor = "multi_thread")]
async fn heavy_fault_conflict_detector_killed_mid_batch() {
    let dir = tempfile::tempdir().unwrap();
    let batch_marker = dir.path().join("detector-batch-open");
    let publish_marker = dir.path().join("detector-delivered");
    let var = |k: &str, v: String| (k.to_string(), v);
    let env = BTreeMap::from([(
        Service::ConflictDetector,
        vec![
            var(DETECTOR_HOLD_BATCH, "2000".into()),
            var(
                "TILLSTREAM_CONFLICT_DETECTOR__FAULT__MARKER_FILE",
                batch_marker.display().to_string(),
            ),
            var(
                "TILLSTREAM_CONFLICT_DETECTOR__FAULT__PUBLISH_MARKER_FILE",
                publish_marker.display().to_string(),
            ),
            // Small batches, so the ones killed are a few of many.
            var(
                "TILLSTREAM_CONFLICT_DETECTOR__DETECTOR__MAX_BATCH",
                "200".into(),
            ),
        ],
    )]);
    let mut run = E2e::start_with(&small_fleet(107, 5_000), Backend::Sqlite, env).await;
    run.start_conflict_detector().await;
    let publishing = run.publish_in_background(RATE * 2).await;
    run.wait_progress(0.4).await;
    let applied = wait_detector_holding(&mut run, &batch_marker).await;
    println!("killing the conflict detector in an open batch transaction after {applied} events");
    run.pipeline
        .crash_and_restart_with(
            Service::ConflictDetector,
            0,
            &[(DETECTOR_HOLD_BATCH, "0"), (DETECTOR_HOLD_PUBLISH, "2000")],
        )
        .await
        .unwrap();
    let applied = wait_detector_holding(&mut run, &publish_marker).await;
    println!(
        "killing the conflict detector between delivery and outbox delete after {applied} events"
    );
    run.pipeline
        .crash_and_restart_with(
            Service::ConflictDetector,
            0,
            &[(DETECTOR_HOLD_PUBLISH, "0")],
        )
        .await
        .unwrap();
    run.fault_ended();
    publishing.await.unwrap();
    run.assert_oracle_passes().await;
    let dropped = run
        .pipeline
        .instance(Service::ConflictDetector, 0)
        .metric("tillstream_conflict_detector_records_already_published_total")
        .await
        .expect("detector metrics");
    println!(
        "after the second kill the detector found {dropped} delivered records still in its outbox and dropped them"
    );
}

const EXPORTER_HOLD_WRITE: &str = "TILLSTREAM_FINANCE_EXPORT__FAULT__HOLD_MID_WRITE_MS";
const EXPORTER_HOLD_DELIVERED: &str = "TILLSTREAM_FINANCE_EXPORT__FAULT__HOLD_AFTER_DELIVERY_MS";

/// Waits until the exporter's fault hook creates `marker` (removed first: the hook is holding now).
async fn wait_exporter_holding(run: &E2e, marker: &std::path::Path) {
    let _ = std::fs::remove_file(marker);
    let deadline = std::time::Instant::now() + Duration::from_secs(240);
    while !marker.exists() {
        assert!(
            std::time::Instant::now() < deadline,
            "the exporter's hook did not hold within 240 s ({})\n{}",
            marker.display(),
            run.pipeline.logs(30)
        );
        sleep(Duration::from_millis(20)).await;
    }
}

/// The exports a reader of the folder sees (`{store}/{name}`, `.tmp` excluded), each checked whole:
/// a manifest, and every file it lists present with the manifest's sha256 (by `sha256sum`, not the
/// writer's code). Panics on a partial export.
fn visible_exports(dir: &std::path::Path) -> Vec<String> {
    let mut out = Vec::new();
    for store in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let store_name = store.file_name().to_string_lossy().to_string();
        if store_name.starts_with('.') {
            continue;
        }
        for export in std::fs::read_dir(store.path()).unwrap().flatten() {
            let id = format!("{store_name}/{}", export.file_name().to_string_lossy());
            let manifest = std::fs::read(export.path().join("manifest.json"))
                .unwrap_or_else(|e| panic!("{id} is visible without its manifest: {e}"));
            let manifest: serde_json::Value = serde_json::from_slice(&manifest).unwrap();
            let listed = manifest["files"].as_array().unwrap();
            let on_disk = std::fs::read_dir(export.path()).unwrap().count();
            assert_eq!(
                on_disk,
                listed.len() + 1,
                "{id}: files beside the manifest's"
            );
            for f in listed {
                let path = export.path().join(f["name"].as_str().unwrap());
                let sum = std::process::Command::new("sha256sum")
                    .arg(&path)
                    .output()
                    .unwrap();
                let sum = String::from_utf8_lossy(&sum.stdout);
                assert_eq!(
                    sum.split_whitespace().next(),
                    f["sha256"].as_str(),
                    "{} is not the file its manifest lists",
                    path.display()
                );
            }
            out.push(id);
        }
    }
    out.sort();
    out
}

/// Files an interrupted delivery left in the export folder's `.tmp/` (never a visible export).
fn interrupted_files(dir: &std::path::Path) -> usize {
    std::fs::read_dir(dir.join(".tmp"))
        .into_iter()
        .flatten()
        .flatten()
        .map(|d| std::fs::read_dir(d.path()).map_or(0, |f| f.count()))
        .sum()
}

/// The finance export (started only here) killed twice with SIGKILL mid-export: first while an
/// export's files are being written (`fault.hold_mid_write_ms`: the first file is in `.tmp`, the
/// rest not), then after an export's folder was renamed into place and before the export was
/// recorded delivered (`fault.hold_after_delivery_ms`: the restart delivers it again and must find
/// the same bytes); each hook creates a marker file when it holds. Restarted each time. No partial
/// export is ever visible; the oracle's finance rows must pass: every store-day exported, every
/// ledger line once, totals as the truth, the late tills as adjustment lines.
#[tokio::test(flavor = "multi_thread")]
async fn heavy_fault_finance_export_killed_mid_export() {
    let dir = tempfile::tempdir().unwrap();
    let write_marker = dir.path().join("exporter-mid-write");
    let delivered_marker = dir.path().join("exporter-delivered");
    let var = |k: &str, v: String| (k.to_string(), v);
    let env = BTreeMap::from([(
        Service::FinanceExport,
        vec![
            var(EXPORTER_HOLD_WRITE, "3000".into()),
            var(
                "TILLSTREAM_FINANCE_EXPORT__FAULT__MARKER_FILE",
                write_marker.display().to_string(),
            ),
            var(
                "TILLSTREAM_FINANCE_EXPORT__FAULT__DELIVERED_MARKER_FILE",
                delivered_marker.display().to_string(),
            ),
            var("TILLSTREAM_FINANCE_EXPORT__BATCH__MAX_EVENTS", "200".into()),
        ],
    )]);
    let mut run = E2e::start_with(&small_fleet(108, 4_000), Backend::Sqlite, env).await;
    run.start_finance_export().await;
    let exports = run.pipeline.finance_exports_dir();
    let publishing = run.publish_in_background(RATE * 2).await;

    wait_exporter_holding(&run, &write_marker).await;
    let partial = interrupted_files(&exports);
    let before = visible_exports(&exports);
    assert!(
        partial > 0,
        "the kill must land mid-write: files of the export in .tmp"
    );
    println!(
        "killing the finance export mid-write ({partial} file(s) of an export in .tmp, {} export(s) delivered)",
        before.len()
    );
    run.pipeline
        .crash_and_restart_with(
            Service::FinanceExport,
            0,
            &[
                (EXPORTER_HOLD_WRITE, "0"),
                (EXPORTER_HOLD_DELIVERED, "3000"),
            ],
        )
        .await
        .unwrap();

    wait_exporter_holding(&run, &delivered_marker).await;
    let delivered = visible_exports(&exports);
    assert!(
        delivered.len() > before.len(),
        "the second kill must land after a delivery: {delivered:?}"
    );
    println!(
        "killing the finance export after delivering {} (not yet recorded delivered)",
        delivered.last().unwrap()
    );
    run.pipeline
        .crash_and_restart_with(Service::FinanceExport, 0, &[(EXPORTER_HOLD_DELIVERED, "0")])
        .await
        .unwrap();
    run.fault_ended();
    publishing.await.unwrap();
    run.assert_oracle_passes().await;
    let after = visible_exports(&exports);
    assert_eq!(interrupted_files(&exports), 0, "the restart cleans .tmp");
    for id in &delivered {
        assert!(after.contains(id), "{id} was delivered and is gone");
    }
    println!("{} exports, every one whole", after.len());
}
