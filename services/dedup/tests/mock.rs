//! Component tests on librdkafka's in-process MockCluster (fast, and it can inject errors and
//! supports the transaction API, unlike tansu): the transactional mode end to end, and produce
//! failures that force the delivery retry path.
//!
//! What this cannot verify: the MockCluster shows aborted records to read_committed consumers, so
//! transactional *isolation* (nothing of an aborted batch visible downstream) is not tested here
//! or anywhere on this machine; only that the transactional code path commits batches, offsets
//! and changelog together and loses nothing.

mod common;

use std::sync::atomic::Ordering;
use std::time::Duration;

use common::*;
use rdkafka::mocking::MockCluster;
use rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};
use tillstream_contracts::{ConflictDetected, DeadLetter};
use tillstream_dedup::{Config, DedupConfig};
use tillstream_integration_tests::TestRegistry;
use tillstream_runtime::CancellationToken;
use tillstream_runtime::kafka::KafkaConfig;

fn topics(cluster: &MockCluster<'_, rdkafka::producer::DefaultProducerContext>) {
    for (t, n) in [
        (RAW, 12),
        (OUT, 12),
        (CHANGELOG, 12),
        (GAPS, 12),
        (CONFLICTS, 12),
        (DLQ, 12),
        (RECEIPTS, 6),
    ] {
        cluster.create_topic(t, n, 1).unwrap();
    }
}

fn spec() -> Spec {
    Spec {
        seed: 21,
        stores: 20,
        devices_per_store: 2,
        per_device: 100,
        dup_rate: 0.2,
        altered_rate: 0.1,
        missing: 8,
        garbage: 3,
        window: 15,
    }
}

fn config(kafka: &KafkaConfig, registry: &TestRegistry, transactional: bool) -> Config {
    Config {
        kafka: kafka.clone(),
        registry: registry.config(),
        ops: Default::default(),
        dedup: DedupConfig {
            client_id: "dedup-mock".into(),
            max_batch: 500,
            linger_ms: 10,
            delivery: if transactional {
                tillstream_dedup::DeliveryMode::Transactional
            } else {
                tillstream_dedup::DeliveryMode::AtLeastOnce
            },
            ..DedupConfig::default()
        },
    }
}

struct MockEnv {
    kafka: KafkaConfig,
    registry: TestRegistry,
}

type Cluster = MockCluster<'static, rdkafka::producer::DefaultProducerContext>;

impl MockEnv {
    /// A mock cluster with the dedup topics and a registry; keep the cluster alive for the test.
    async fn start() -> (Cluster, MockEnv) {
        tillstream_integration_tests::test_logs();
        let cluster = MockCluster::new(1).unwrap();
        topics(&cluster);
        let kafka = KafkaConfig {
            brokers: cluster.bootstrap_servers(),
            session_timeout_ms: 6_000,
            ..KafkaConfig::default()
        };
        let env = MockEnv {
            kafka,
            registry: TestRegistry::start().await.unwrap(),
        };
        (cluster, env)
    }
}

/// Waits (bounded) until the instance has read `n` input records.
async fn wait_read(running: &tillstream_dedup::Running, n: u64) {
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    while running.state.counters.events_in.load(Ordering::Relaxed) < n {
        assert!(
            !running.is_stopped(),
            "the service stopped before reading its input (its log above says why)"
        );
        assert!(
            std::time::Instant::now() < deadline,
            "input not read in 120 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Runs the service over the workload and checks the output: nothing missing, nothing extra, first
/// copies in order, and at most `max_duplicates` extra copies (a produce failure that surfaces to the
/// service makes it re-send the batch's whole output set: its at-least-once window).
async fn run_to_end(env: &MockEnv, w: &Workload, transactional: bool, max_duplicates: usize) {
    let token = CancellationToken::new();
    let running = tillstream_dedup::start(
        config(&env.kafka, &env.registry, transactional),
        token.clone(),
    )
    .await
    .expect("start");
    if transactional {
        // The MockCluster acknowledges TxnOffsetCommit but does not store the offsets, so the
        // group's committed offsets cannot be watched: watch what the instance has read.
        wait_read(&running, w.records.len() as u64).await;
    } else {
        assert!(
            wait_caught_up(&env.kafka, Duration::from_secs(120)).await,
            "caught up"
        );
    }
    token.cancel();
    running.wait().await.expect("clean stop");
    let client = env.registry.client();
    let out = read(&env.kafka, OUT).await;
    let (missing, duplicates, extra) = check_exactly_once(w, &out);
    assert_eq!((missing, extra), (0, 0), "missing/extra");
    assert!(
        duplicates <= max_duplicates,
        "{duplicates} duplicates, at most {max_duplicates} allowed"
    );
    check_order(w, &out);
    let mut gaps = Vec::new();
    let mut recs = read(&env.kafka, GAPS).await;
    recs.sort_by_key(|r| (r.partition, r.offset));
    for r in recs {
        gaps.push(decode_record(&client, r.payload.as_deref().unwrap()).await);
    }
    assert_eq!(open_missing(&gaps), w.dropped);
    // Conflict records and dead letters ride in the same re-sent set as the outputs, so they may
    // repeat too; their identities are deterministic, which is what downstream sinks key on.
    let mut conflicts = Vec::new();
    for r in read(&env.kafka, CONFLICTS).await {
        let c: ConflictDetected = decode_record(&client, r.payload.as_deref().unwrap()).await;
        conflicts.push(c.conflict_id);
    }
    let mut dead = Vec::new();
    for r in read(&env.kafka, DLQ).await {
        let d: DeadLetter = decode_record(&client, r.payload.as_deref().unwrap()).await;
        dead.push(d.dead_letter_id);
    }
    for (what, ids, expected) in [
        ("conflict", conflicts, w.altered),
        ("dead letter", dead, w.garbage),
    ] {
        let distinct: std::collections::BTreeSet<&String> = ids.iter().collect();
        assert_eq!(distinct.len(), expected, "distinct {what} identities");
        assert!(
            ids.len() - distinct.len() <= max_duplicates,
            "{} repeated {what} records",
            ids.len() - distinct.len()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transactional_mode_commits_outputs_changelog_and_offsets_together() {
    let (_cluster, env) = MockEnv::start().await;
    let w = workload(&env.registry.client(), &spec()).await;
    produce(&env.kafka, &w.records).await;
    run_to_end(&env, &w, true, 0).await;
    // A restart in transactional mode restores from the committed changelog: with no committed
    // group offsets (see above) it reads the topic from the start, and every record the changelog
    // covers is skipped. Then the first 500 raw records arrive again: all duplicates now.
    let before = read(&env.kafka, OUT).await.len();
    let token = CancellationToken::new();
    let running = tillstream_dedup::start(config(&env.kafka, &env.registry, true), token.clone())
        .await
        .unwrap();
    produce(&env.kafka, &w.records[..500]).await;
    wait_read(&running, 500).await;
    token.cancel();
    let counters = running.state.counters.clone();
    running.wait().await.unwrap();
    assert_eq!(read(&env.kafka, OUT).await.len(), before);
    assert_eq!(counters.events_out.load(Ordering::Relaxed), 0);
    let replayed_events = w.records[..500]
        .iter()
        .filter(|r| r.event_id.is_some())
        .count() as u64;
    let dups = counters.duplicates.load(Ordering::Relaxed);
    assert!(dups > 0 && dups <= replayed_events, "{dups}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn produce_errors_are_retried_without_loss() {
    let (cluster, env) = MockEnv::start().await;
    let w = workload(&env.registry.client(), &spec()).await;
    produce(&env.kafka, &w.records).await;
    // Every produce request of the service fails a few times first (retriable errors: librdkafka
    // retries them in order inside the idempotent producer).
    cluster.request_errors(
        RDKafkaApiKey::Produce,
        &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_NOT_LEADER_FOR_PARTITION; 20],
    );
    cluster.request_errors(
        RDKafkaApiKey::Produce,
        &[RDKafkaRespErr::RD_KAFKA_RESP_ERR__TRANSPORT; 5],
    );
    // librdkafka retries most injected errors inside the idempotent producer; when one surfaces,
    // the service re-sends that batch's set (max_batch = 500): duplicates, never loss.
    run_to_end(&env, &w, false, 2 * 500).await;
}
