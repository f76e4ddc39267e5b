//! Shared helpers for the detector's tests on the real stack: a private tansu with the topology,
//! an in-process registry, producing framed store events / price lists / dedup conflicts to the
//! real topics, waiting until the detector has taken everything in and published its outbox, and
//! reading its records back.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use tillstream_conflict_detector::Config;
use tillstream_conflict_detector::config::Secret;
use tillstream_conflict_detector::db::Db;
use tillstream_contracts::{
    Compensation, ConflictDetected, ConflictResolved, DeviceEvent, EventKind, PriceListApproved,
    Registry, codec,
};
use tillstream_integration_tests::{Record, Stack, Svc, TestRegistry, read_all, stack_with_topics};
use tillstream_runtime::CancellationToken;
use tillstream_runtime::kafka::{self, Assignment, KafkaConfig, headers};

pub const EVENTS: &str = "tillstream.store-events";
pub const CONFLICTS: &str = "tillstream.conflicts";
pub const COMPENSATIONS: &str = "tillstream.compensations";
pub const HISTORY: &str = "tillstream.price-lists.history";
pub const DLQ: &str = "tillstream.dead-letter";
pub const TOKEN: &str = "test-token";
pub const BIN: &str = env!("CARGO_BIN_EXE_tillstream-conflict-detector");

/// A private tansu (and PostgreSQL when asked) with the topology applied, and a registry.
pub struct Env {
    pub stack: Stack,
    pub registry: TestRegistry,
    pub client: Registry,
    pub kafka: KafkaConfig,
    pub dir: tempfile::TempDir,
}

impl Env {
    pub async fn start(services: &[Svc]) -> Env {
        tillstream_runtime::telemetry::init_tracing("conflict-detector-test");
        let (stack, kafka) = stack_with_topics(services, Assignment::Static).await;
        let registry = TestRegistry::start().await.expect("registry");
        let client = registry.client();
        Env {
            stack,
            registry,
            client,
            kafka,
            dir: tempfile::tempdir().unwrap(),
        }
    }

    /// A SQLite file in the test folder.
    pub fn sqlite(&self, name: &str) -> String {
        self.dir.path().join(name).display().to_string()
    }

    /// Config of an in-process instance on `db_url`: static assignment, small batches, the API
    /// on a free port with [`TOKEN`].
    pub fn config(&self, db_url: &str) -> Config {
        let mut c = Config {
            kafka: self.kafka.clone(),
            registry: self.registry.config(),
            ..Default::default()
        };
        c.database.url = db_url.to_string();
        c.detector.max_batch = 50;
        c.detector.linger_ms = 10;
        c.detector.publish_poll_ms = 100;
        c.detector.gauge_interval_ms = 200;
        // Verdicts still wait for their store's stream to move on, but briefly.
        c.detector.hold_ms = HOLD_MS;
        c.api.token = Secret::new(TOKEN);
        c
    }

    /// Environment for the binary (same settings as [`config`](Self::config)).
    pub fn bin_env(&self, db_url: &str) -> Vec<(String, String)> {
        let p = "TILLSTREAM_CONFLICT_DETECTOR__";
        [
            ("KAFKA__BROKERS", self.kafka.brokers.clone()),
            ("KAFKA__ASSIGNMENT", "static".into()),
            ("KAFKA__SESSION_TIMEOUT_MS", "6000".into()),
            ("REGISTRY__URL", self.registry.url.clone()),
            ("DATABASE__URL", db_url.into()),
            ("DETECTOR__MAX_BATCH", "50".into()),
            ("DETECTOR__LINGER_MS", "10".into()),
            ("DETECTOR__PUBLISH_POLL_MS", "100".into()),
            ("DETECTOR__HOLD_MS", HOLD_MS.to_string()),
            ("API__TOKEN", TOKEN.into()),
        ]
        .into_iter()
        .map(|(k, v)| (format!("{p}{k}"), v))
        .collect()
    }

    /// Starts the binary with `env` (plus [`bin_env`](Self::bin_env)), logging to `log`.
    pub fn spawn(&self, db_url: &str, extra: &[(&str, String)], log: &Path) -> Child {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .unwrap();
        let mut cmd = Command::new(BIN);
        for (k, _) in std::env::vars() {
            if k.starts_with("TILLSTREAM_") {
                cmd.env_remove(k);
            }
        }
        cmd.envs(self.bin_env(db_url))
            .envs(
                extra
                    .iter()
                    .map(|(k, v)| (format!("TILLSTREAM_CONFLICT_DETECTOR__{k}"), v.clone())),
            )
            .env("TILLSTREAM_LOG", "info,rdkafka=warn,sqlx=warn")
            .env("NO_COLOR", "1")
            .stdout(Stdio::null())
            .stderr(log);
        cmd.spawn().unwrap()
    }
}

/// (key, framed payload, headers) of a record to produce.
type Outgoing = (String, Vec<u8>, Vec<(String, String)>);

async fn produce_framed(kafka_cfg: &KafkaConfig, topic: &str, records: Vec<Outgoing>) {
    let producer = kafka::producer(kafka_cfg, "it-detector-producer").unwrap();
    let mut futs = Vec::new();
    for (key, payload, hdrs) in &records {
        let pairs: Vec<(&str, &str)> = hdrs.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let record = rdkafka::producer::FutureRecord::to(topic)
            .key(key.as_bytes())
            .payload(payload)
            .headers(kafka::make_headers(&pairs));
        futs.push(producer.send_result(record).expect("queue has room"));
    }
    for f in futs {
        f.await.unwrap().unwrap();
    }
}

/// Produces store events to the deduplicated topic as the dedup would (keyed by store).
pub async fn produce(env: &Env, events: &[DeviceEvent]) {
    let mut out = Vec::new();
    for ev in events {
        let kind = ev.kind();
        let id = env
            .client
            .schema_id(kind, ev.schema_version() as u32)
            .await
            .unwrap();
        out.push((
            ev.store_id().to_string(),
            codec::frame(id, ev.encode().unwrap()),
            // No headers, as the bridge writes them by default (`kafka.record_headers`).
            vec![],
        ));
    }
    produce_framed(&env.kafka, EVENTS, out).await;
}

/// Produces raw bytes to the store-event topic (poison).
pub async fn produce_raw(env: &Env, store: &str, payload: &[u8]) {
    produce_framed(
        &env.kafka,
        EVENTS,
        vec![(store.to_string(), payload.to_vec(), vec![])],
    )
    .await;
}

/// Appends approved price lists to the history topic.
pub async fn produce_price_lists(env: &Env, lists: &[PriceListApproved]) {
    let id = env
        .client
        .schema_id(EventKind::PriceListApproved, 1)
        .await
        .unwrap();
    let out = lists
        .iter()
        .map(|l| {
            (
                l.store_id.clone(),
                codec::frame(
                    id,
                    codec::encode(EventKind::PriceListApproved, 1, l).unwrap(),
                ),
                vec![(
                    headers::EVENT_TYPE.to_string(),
                    "PriceListApproved".to_string(),
                )],
            )
        })
        .collect();
    produce_framed(&env.kafka, HISTORY, out).await;
}

/// Writes a conflict as the dedup does (schema v1).
pub async fn produce_dedup_conflict(env: &Env, c: &ConflictDetected) {
    let id = env
        .client
        .schema_id(EventKind::ConflictDetected, 1)
        .await
        .unwrap();
    let payload = codec::frame(
        id,
        codec::encode(EventKind::ConflictDetected, 1, c).unwrap(),
    );
    produce_framed(
        &env.kafka,
        CONFLICTS,
        vec![(
            c.store_id.clone(),
            payload,
            vec![(headers::PRODUCER.to_string(), "dedup".to_string())],
        )],
    )
    .await;
}

/// High watermark per partition of `topic` (partitions with records only).
pub fn high_watermarks(kafka_cfg: &KafkaConfig, topic: &str) -> BTreeMap<i32, i64> {
    let mut c = kafka_cfg.client_config("it-watermarks");
    c.set("group.id", "it-watermarks");
    let consumer: BaseConsumer = c.create().unwrap();
    let n = kafka::partition_count(consumer.client(), topic, Duration::from_secs(10)).unwrap();
    let mut out = BTreeMap::new();
    for p in 0..n as i32 {
        let (_, hi) = consumer
            .fetch_watermarks(topic, p, Duration::from_secs(10))
            .unwrap();
        if hi > 0 {
            out.insert(p, hi);
        }
    }
    out
}

/// How long the tests' detectors hold a raised verdict (record time of its store).
pub const HOLD_MS: u64 = 1_000;

/// Waits until the database's offsets reach the topics' ends, no verdict waits unwritten and the
/// outbox is empty; panics after
/// `timeout` with what it has (a bound on a wait, not a performance assertion).
pub async fn wait_done(env: &Env, db: &Db, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    loop {
        let (k1, k2) = (env.kafka.clone(), env.kafka.clone());
        let want_events = tokio::task::spawn_blocking(move || high_watermarks(&k1, EVENTS))
            .await
            .unwrap();
        let want_conflicts = tokio::task::spawn_blocking(move || high_watermarks(&k2, CONFLICTS))
            .await
            .unwrap();
        let have_events = db.offsets(EVENTS).await.unwrap_or_default();
        let have_conflicts = db.offsets(CONFLICTS).await.unwrap_or_default();
        let outbox = db.outbox_len().await.unwrap_or(-1);
        let held = db.held_len().await.unwrap_or(-1);
        let caught = want_events
            .iter()
            .all(|(p, o)| have_events.get(p) == Some(o))
            && want_conflicts
                .iter()
                .all(|(p, o)| have_conflicts.get(p).is_some_and(|h| h >= o));
        if caught && outbox == 0 && held == 0 {
            // What it just published may have been read back from the conflicts topic meanwhile.
            let k = env.kafka.clone();
            let again = tokio::task::spawn_blocking(move || high_watermarks(&k, CONFLICTS))
                .await
                .unwrap();
            if again == want_conflicts {
                return;
            }
        }
        if Instant::now() > deadline {
            panic!(
                "detector not done after {timeout:?}: events {have_events:?} of {want_events:?}, conflicts {have_conflicts:?} of {want_conflicts:?}, outbox {outbox}, held {held}"
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The detector's records, decoded, in topic order per partition.
#[derive(Debug, Default)]
pub struct Outputs {
    pub conflicts: Vec<(Record, ConflictDetected)>,
    pub resolved: Vec<(Record, ConflictResolved)>,
    pub compensations: Vec<(Record, Compensation)>,
}

impl Outputs {
    pub fn conflicts_of(&self, store: &str) -> Vec<&ConflictDetected> {
        self.conflicts
            .iter()
            .map(|(_, c)| c)
            .filter(|c| c.store_id == store && c.detector == "conflict-detector")
            .collect()
    }

    pub fn resolved_of(&self, store: &str) -> Vec<&ConflictResolved> {
        self.resolved
            .iter()
            .map(|(_, c)| c)
            .filter(|c| c.store_id == store)
            .collect()
    }

    pub fn compensations_of(&self, store: &str) -> Vec<&Compensation> {
        self.compensations
            .iter()
            .map(|(_, c)| c)
            .filter(|c| c.store_id == store)
            .collect()
    }
}

async fn decode<T: serde::de::DeserializeOwned>(client: &Registry, payload: &[u8]) -> T {
    let (id, datum) = codec::unframe(payload).unwrap();
    client
        .writer_schema(id)
        .await
        .unwrap()
        .decode(datum)
        .unwrap()
}

/// Reads and decodes the conflicts and compensations topics (a read error fails the test).
pub async fn outputs(env: &Env) -> Outputs {
    let (k1, k2) = (env.kafka.clone(), env.kafka.clone());
    let conflicts =
        tokio::task::spawn_blocking(move || read_all(&k1, CONFLICTS, Duration::from_secs(60)))
            .await
            .unwrap()
            .expect("read conflicts");
    let comps =
        tokio::task::spawn_blocking(move || read_all(&k2, COMPENSATIONS, Duration::from_secs(60)))
            .await
            .unwrap()
            .expect("read compensations");
    let mut out = Outputs::default();
    for r in conflicts {
        let payload = r.payload.clone().unwrap_or_default();
        let (id, _) = codec::unframe(&payload).unwrap();
        match env.client.writer_schema(id).await.unwrap().kind {
            EventKind::ConflictDetected => {
                let c = decode(&env.client, &payload).await;
                out.conflicts.push((r, c));
            }
            EventKind::ConflictResolved => {
                let c = decode(&env.client, &payload).await;
                out.resolved.push((r, c));
            }
            other => panic!("{other} on {CONFLICTS}"),
        }
    }
    for r in comps {
        let c = decode(&env.client, r.payload.as_deref().unwrap()).await;
        out.compensations.push((r, c));
    }
    out
}

/// Starts an in-process detector and returns it with its stop token.
pub async fn start(cfg: Config) -> (tillstream_conflict_detector::Running, CancellationToken) {
    let token = CancellationToken::new();
    let running = tillstream_conflict_detector::start(cfg, token.clone())
        .await
        .expect("detector starts");
    (running, token)
}

pub use tillstream_integration_tests::ExitOnPanic;
