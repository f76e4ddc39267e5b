//! Shared helpers for the dedup tests on the real stack: a workload generator (events of several
//! kinds and schema versions, duplicates, altered copies, missing seqs, shuffling within devices,
//! garbage), producing to the raw topic, waiting for the group to catch up, and reading and
//! checking the outputs.
#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use tillstream_contracts::{
    ConflictDetected, DeviceEvent, EventKind, GapStatus, Registry, SequenceGap, codec, samples,
};
use tillstream_dedup::{Config, DedupConfig};
use tillstream_integration_tests::{Record, Stack, Svc, TestRegistry, read_all, stack_with_topics};
use tillstream_runtime::kafka::{self, Assignment, KafkaConfig, headers};

pub const RAW: &str = "tillstream.store-events.raw";
pub const OUT: &str = "tillstream.store-events";
pub const GAPS: &str = "tillstream.sequence-gaps";
pub const CONFLICTS: &str = "tillstream.conflicts";
pub const DLQ: &str = "tillstream.dead-letter";
pub const CHANGELOG: &str = "tillstream.dedup.changelog";
pub const RECEIPTS: &str = "tillstream.device-receipts";
pub const GROUP: &str = "tillstream-dedup";

/// A private tansu with the topology applied, and an in-process registry.
pub struct Env {
    pub stack: Stack,
    pub registry: TestRegistry,
    pub client: Registry,
    pub kafka: KafkaConfig,
}

impl Env {
    pub async fn start() -> Env {
        let (stack, kafka) = stack_with_topics(&[Svc::Tansu], Assignment::Group).await;
        let registry = TestRegistry::start().await.expect("registry");
        let client = registry.client();
        Env {
            stack,
            registry,
            client,
            kafka,
        }
    }

    /// Service config for an in-process instance.
    pub fn config(&self, client_id: &str) -> Config {
        Config {
            kafka: self.kafka.clone(),
            registry: self.registry.config(),
            ops: Default::default(),
            dedup: DedupConfig {
                client_id: client_id.to_string(),
                max_batch: 2000,
                linger_ms: 20,
                ..DedupConfig::default()
            },
        }
    }

    /// Environment for the `tillstream-dedup` binary.
    pub fn bin_env(&self, client_id: &str, max_batch: usize) -> Vec<(String, String)> {
        vec![
            (
                "TILLSTREAM_KAFKA_BROKERS".into(),
                self.kafka.brokers.clone(),
            ),
            ("TILLSTREAM_REGISTRY_URL".into(), self.registry.url.clone()),
            (
                "TILLSTREAM_DEDUP__KAFKA__SESSION_TIMEOUT_MS".into(),
                self.kafka.session_timeout_ms.to_string(),
            ),
            (
                "TILLSTREAM_DEDUP__DEDUP__CLIENT_ID".into(),
                client_id.into(),
            ),
            (
                "TILLSTREAM_DEDUP__DEDUP__MAX_BATCH".into(),
                max_batch.to_string(),
            ),
            ("TILLSTREAM_DEDUP__DEDUP__LINGER_MS".into(), "20".into()),
            (
                "TILLSTREAM_LOG".into(),
                std::env::var("TILLSTREAM_TEST_LOG").unwrap_or_else(|_| "info,rdkafka=warn".into()),
            ),
        ]
    }
}

/// One raw record to produce.
#[derive(Debug, Clone)]
pub struct Raw {
    pub key: String,
    pub payload: Vec<u8>,
    pub headers: Vec<(String, String)>,
    /// `None` for garbage.
    pub event_id: Option<String>,
    pub device: String,
    pub seq: i64,
}

/// What was generated, and what the outputs must be.
#[derive(Debug, Default)]
pub struct Workload {
    pub records: Vec<Raw>,
    /// Event ids that must come out exactly once.
    pub ids: BTreeSet<String>,
    /// (device, seq) left out of the stream.
    pub dropped: BTreeSet<(String, i64)>,
    /// Copies with the same id and different content (each distinct).
    pub altered: usize,
    /// Plain duplicate copies.
    pub duplicates: usize,
    pub garbage: usize,
}

/// Knobs of a workload.
#[derive(Debug, Clone)]
pub struct Spec {
    pub seed: u64,
    pub stores: usize,
    pub devices_per_store: usize,
    pub per_device: i64,
    /// Extra copies, as a fraction of the events.
    pub dup_rate: f64,
    /// Fraction of the extra copies whose payload is altered.
    pub altered_rate: f64,
    pub missing: usize,
    pub garbage: usize,
    /// Shuffle window within a device.
    pub window: usize,
}

const KINDS: [EventKind; 8] = [
    EventKind::OrderCreated,
    EventKind::OrderCreated,
    EventKind::OrderCreated,
    EventKind::InventoryAdjusted,
    EventKind::StockReservationRequested,
    EventKind::LoyaltyRedeemed,
    EventKind::OrderRefunded,
    EventKind::StockReservationReleased,
];

/// `e` with another `occurred_at` (the samples are dated 2026-11-05; the service judges event age
/// against record time, which is now).
pub fn occurred_at(e: &DeviceEvent, at: i64) -> DeviceEvent {
    let mut json = e.to_json();
    json["occurred_at"] = serde_json::json!(at);
    DeviceEvent::from_json(e.kind(), json.to_string().as_bytes()).expect("re-dated event")
}

/// An event whose content differs from `e` (same id): its `occurred_at` moved by `delta` ms.
pub fn altered(e: &DeviceEvent, delta: i64) -> DeviceEvent {
    occurred_at(e, e.occurred_at() + delta)
}

async fn raw(client: &Registry, e: &DeviceEvent, version: u32) -> Raw {
    let id = client
        .schema_id(e.kind(), version)
        .await
        .expect("schema id");
    let payload = codec::frame(id, e.encode_as(version).expect("encode"));
    Raw {
        key: e.store_id().to_string(),
        payload,
        headers: vec![
            (headers::EVENT_TYPE.into(), e.kind().name().into()),
            (headers::EVENT_ID.into(), e.event_id().into()),
            (headers::DEVICE_ID.into(), e.device_id().into()),
            (headers::SEQ.into(), e.seq().to_string()),
            (headers::PRODUCER.into(), "test-bridge".into()),
        ],
        event_id: Some(e.event_id().to_string()),
        device: e.device_id().to_string(),
        seq: e.seq(),
    }
}

pub async fn workload(client: &Registry, spec: &Spec) -> Workload {
    let mut rng = ChaCha8Rng::seed_from_u64(spec.seed);
    let mut w = Workload::default();
    let devices: Vec<(String, String)> = (0..spec.stores)
        .flat_map(|s| {
            (0..spec.devices_per_store)
                .map(move |d| (format!("s{s:04}"), format!("s{s:04}-d{d:02}")))
        })
        .collect();
    while w.dropped.len() < spec.missing {
        let (_, dev) = &devices[rng.random_range(0..devices.len())];
        w.dropped
            .insert((dev.clone(), rng.random_range(2..spec.per_device)));
    }
    let mut per_device: Vec<Vec<Raw>> = Vec::new();
    let mut alteration = 0i64;
    let base = tillstream_runtime::clock::now_ms() - spec.per_device * 1000 - 60_000;
    for (store, dev) in &devices {
        let mut evs = Vec::new();
        for seq in 1..=spec.per_device {
            if w.dropped.contains(&(dev.clone(), seq)) {
                continue;
            }
            let kind = KINDS[(seq as usize + dev.len()) % KINDS.len()];
            let e = samples::sample(kind, store, dev, seq).expect("sample");
            let e = occurred_at(&e, base + seq * 1000);
            w.ids.insert(e.event_id().to_string());
            evs.push(raw(client, &e, e.schema_version() as u32).await);
            if rng.random_bool(spec.dup_rate) {
                if rng.random_bool(spec.altered_rate) {
                    alteration += 1;
                    w.altered += 1;
                    let a = altered(&e, alteration);
                    evs.push(raw(client, &a, a.schema_version() as u32).await);
                } else {
                    w.duplicates += 1;
                    // An OrderCreated without a loyalty member reads the same in v1: replay it
                    // with the old schema (a duplicate across schema versions).
                    let v1 =
                        matches!(&e, DeviceEvent::OrderCreated(o) if o.loyalty_member_id.is_none());
                    evs.push(raw(client, &e, if v1 { 1 } else { e.schema_version() as u32 }).await);
                }
            }
        }
        // Shuffle within windows, keeping the device's last event last so that every dropped seq
        // lies below its highest seq (a gap nobody can see is not a gap).
        let last = evs.pop().expect("one event");
        for win in evs.chunks_mut(spec.window.max(1)) {
            win.shuffle(&mut rng);
        }
        evs.push(last);
        per_device.push(evs);
    }
    // Interleave devices at random, keeping each device's own order.
    let total: usize = per_device.iter().map(Vec::len).sum();
    let mut idx = vec![0usize; per_device.len()];
    let mut live: Vec<usize> = (0..per_device.len()).collect();
    while w.records.len() < total {
        let k = rng.random_range(0..live.len());
        let d = live[k];
        w.records.push(per_device[d][idx[d]].clone());
        idx[d] += 1;
        if idx[d] == per_device[d].len() {
            live.swap_remove(k);
        }
    }
    // Garbage at random positions.
    let order_id = client
        .schema_id(EventKind::OrderCreated, 2)
        .await
        .expect("schema id");
    for g in 0..spec.garbage {
        let payload = match g % 3 {
            0 => b"{\"not\":\"avro\"}".to_vec(),
            1 => codec::frame(987_654, vec![1, 2, 3]),
            _ => codec::frame(order_id, vec![0x02, 0xff]),
        };
        let pos = rng.random_range(0..w.records.len());
        w.records.insert(
            pos,
            Raw {
                key: format!("s{:04}", g % spec.stores),
                payload,
                headers: vec![],
                event_id: None,
                device: String::new(),
                seq: 0,
            },
        );
        w.garbage += 1;
    }
    w
}

/// Produces `records` in order (keyed by store, murmur2) and waits for every delivery.
pub async fn produce(kafka_cfg: &KafkaConfig, records: &[Raw]) {
    let producer: FutureProducer = kafka::producer(kafka_cfg, "test-feeder").expect("producer");
    let mut futures = Vec::with_capacity(records.len());
    for r in records {
        let pairs: Vec<(&str, &str)> = r
            .headers
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let rec = FutureRecord::to(RAW)
            .key(r.key.as_bytes())
            .payload(r.payload.as_slice())
            .headers(kafka::make_headers(&pairs));
        futures.push(kafka::enqueue(&producer, rec).await.expect("produce"));
    }
    for f in futures {
        f.await.expect("delivery").expect("delivered");
    }
}

/// Sum of the input topic's high watermarks.
pub fn input_end(kafka_cfg: &KafkaConfig) -> BTreeMap<i32, i64> {
    let c: BaseConsumer = kafka_cfg.client_config("test-watermarks").create().unwrap();
    let md = c
        .fetch_metadata(Some(RAW), Duration::from_secs(10))
        .unwrap();
    let t = md.topics().iter().find(|t| t.name() == RAW).unwrap();
    t.partitions()
        .iter()
        .map(|p| {
            let (_, hi) = c
                .fetch_watermarks(RAW, p.id(), Duration::from_secs(10))
                .unwrap();
            (p.id(), hi)
        })
        .collect()
}

/// The group's committed offsets on the input topic.
pub fn committed(kafka_cfg: &KafkaConfig, partitions: &[i32]) -> BTreeMap<i32, i64> {
    committed_by(kafka_cfg, GROUP, partitions)
}

/// `group`'s committed offsets on the input topic.
pub fn committed_by(
    kafka_cfg: &KafkaConfig,
    group: &str,
    partitions: &[i32],
) -> BTreeMap<i32, i64> {
    let mut cfg = kafka_cfg.client_config("test-committed");
    cfg.set("group.id", group)
        .set("enable.auto.commit", "false");
    let c: BaseConsumer = cfg.create().unwrap();
    let mut tpl = TopicPartitionList::new();
    for p in partitions {
        tpl.add_partition(RAW, *p);
    }
    match c.committed_offsets(tpl, Duration::from_secs(10)) {
        Ok(got) => got
            .elements()
            .iter()
            .filter_map(|e| match e.offset() {
                Offset::Offset(o) => Some((e.partition(), o)),
                _ => None,
            })
            .collect(),
        Err(_) => BTreeMap::new(),
    }
}

/// Waits (polling, bounded by `timeout`) until the group has committed the input's end.
pub async fn wait_caught_up(kafka_cfg: &KafkaConfig, timeout: Duration) -> bool {
    let end = input_end(kafka_cfg);
    let parts: Vec<i32> = end.keys().copied().collect();
    let deadline = Instant::now() + timeout;
    let mut last_report = Instant::now();
    loop {
        let kc = kafka_cfg.clone();
        let p = parts.clone();
        let got = tokio::task::spawn_blocking(move || committed(&kc, &p))
            .await
            .unwrap();
        if end.iter().all(|(p, hi)| *hi == 0 || got.get(p) == Some(hi)) {
            return true;
        }
        if Instant::now() > deadline {
            eprintln!("not caught up: end {end:?} committed {got:?}");
            return false;
        }
        if last_report.elapsed() > Duration::from_secs(10) {
            last_report = Instant::now();
            eprintln!(
                "progress: committed {} of {}",
                got.values().sum::<i64>(),
                end.values().sum::<i64>()
            );
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

pub async fn read(kafka_cfg: &KafkaConfig, topic: &str) -> Vec<Record> {
    let kc = kafka_cfg.clone();
    let t = topic.to_string();
    tokio::task::spawn_blocking(move || read_all(&kc, &t, Duration::from_secs(120)))
        .await
        .unwrap()
        .expect("read topic")
}

pub async fn decode_record<T: serde::de::DeserializeOwned>(client: &Registry, payload: &[u8]) -> T {
    let (id, datum) = codec::unframe(payload).expect("framed");
    let w = client.writer_schema(id).await.expect("writer");
    w.decode(datum).expect("decodes")
}

pub async fn gaps(env: &Env) -> Vec<SequenceGap> {
    let mut recs = read(&env.kafka, GAPS).await;
    recs.sort_by_key(|r| (r.partition, r.offset));
    let mut out = Vec::new();
    for r in recs {
        out.push(decode_record(&env.client, r.payload.as_deref().unwrap()).await);
    }
    out
}

pub async fn conflicts(env: &Env) -> Vec<ConflictDetected> {
    let recs = read(&env.kafka, CONFLICTS).await;
    let mut out = Vec::new();
    for r in recs {
        out.push(decode_record(&env.client, r.payload.as_deref().unwrap()).await);
    }
    out
}

/// Latest record per gap id (gap records of one store are in one partition, in order) -> the
/// (device, seq) still missing according to the open ones.
pub fn open_missing(gaps: &[SequenceGap]) -> BTreeSet<(String, i64)> {
    let mut latest: BTreeMap<&str, &SequenceGap> = BTreeMap::new();
    for g in gaps {
        latest.insert(&g.gap_id, g);
    }
    let mut out = BTreeSet::new();
    for g in latest.values() {
        if matches!(g.status, GapStatus::Opened | GapStatus::PartiallyFilled) {
            assert_eq!(g.still_missing, g.to_seq - g.from_seq + 1, "{g:?}");
            for s in g.from_seq..=g.to_seq {
                assert!(out.insert((g.device_id.clone(), s)), "seq in two open gaps");
            }
        }
    }
    out
}

/// Output event ids with their number of copies.
pub fn output_counts(out: &[Record]) -> BTreeMap<String, usize> {
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    for r in out {
        let id = r
            .header(headers::EVENT_ID)
            .expect("output keeps the event-id header")
            .to_string();
        *counts.entry(id).or_default() += 1;
    }
    counts
}

/// (missing ids, duplicate copies beyond the first, ids that should not be there).
pub fn check_exactly_once(w: &Workload, out: &[Record]) -> (usize, usize, usize) {
    let counts = output_counts(out);
    let missing = w.ids.iter().filter(|id| !counts.contains_key(*id)).count();
    let dups: usize = counts.values().map(|c| c - 1).sum();
    let extra = counts.keys().filter(|id| !w.ids.contains(*id)).count();
    (missing, dups, extra)
}

/// Per device, output seqs in output order must follow the input order of first copies.
pub fn check_order(w: &Workload, out: &[Record]) {
    let mut first_pos: BTreeMap<&str, usize> = BTreeMap::new();
    for (i, r) in w.records.iter().enumerate() {
        if let Some(id) = &r.event_id {
            first_pos.entry(id.as_str()).or_insert(i);
        }
    }
    let mut by_part: BTreeMap<i32, Vec<&Record>> = BTreeMap::new();
    for r in out {
        by_part.entry(r.partition).or_default().push(r);
    }
    let mut last: BTreeMap<String, usize> = BTreeMap::new();
    for recs in by_part.values_mut() {
        recs.sort_by_key(|r| r.offset);
        let mut seen = BTreeSet::new();
        for r in recs.iter() {
            let id = r.header(headers::EVENT_ID).unwrap();
            if !seen.insert(id.to_string()) {
                continue; // a re-delivered copy (at-least-once window)
            }
            let dev = r.header(headers::DEVICE_ID).unwrap().to_string();
            let pos = first_pos[id];
            if let Some(prev) = last.insert(dev.clone(), pos) {
                assert!(
                    prev < pos,
                    "device {dev}: output order differs from input order"
                );
            }
        }
    }
}

/// Starts the `tillstream-dedup` binary with `env` (stderr to `log`).
pub fn spawn_bin(vars: &[(String, String)], log: &std::path::Path) -> std::process::Child {
    let file = std::fs::File::create(log).expect("log file");
    std::process::Command::new(env!("CARGO_BIN_EXE_tillstream-dedup"))
        .envs(vars.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .stdout(std::process::Stdio::null())
        .stderr(file)
        .spawn()
        .expect("spawn tillstream-dedup")
}

/// SIGKILL / SIGTERM a child we started, by its pid.
pub fn signal(child: &std::process::Child, sig: &str) {
    let ok = std::process::Command::new("kill")
        .args([sig, &child.id().to_string()])
        .status()
        .expect("kill")
        .success();
    assert!(ok, "kill {sig} {}", child.id());
}
