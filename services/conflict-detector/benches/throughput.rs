//! Conflict detector throughput (prints figures, asserts nothing). Run:
//!
//! ```text
//! cargo bench -p tillstream-conflict-detector --bench throughput              # N = 100k events
//! DETECTOR_BENCH_N=200000 cargo bench -p tillstream-conflict-detector --bench throughput
//! ```
//!
//! Phases, all on the same generated workload (`fixtures::steady_workload`: 200 stores, an
//! ordinary day with rare conflicts, 5% of one device's events late; `DETECTOR_BENCH_WORKLOAD=
//! conflicts` takes `fixtures::workload` instead, where most sales conflict):
//! 1. pure: decode + rules in one thread, and the rules alone;
//! 2. librdkafka's MockCluster in a child process (a broker fast enough that the service, not the
//!    broker, is the limit): baseline = a plain consumer reading the pre-filled store-event topic,
//!    then the detector service (in process, SQLite in a temp folder, static assignment) from the
//!    same topic until its database holds every partition's end offset and its outbox is empty;
//! 3. tansu memory storage (`memory://`) the same way, when a build with it is available
//!    (`TILLSTREAM_TANSU_MEMORY_BIN=DIR/bin/tansu`).
//!
//! CPU is this process's user+system time from /proc/self/stat (librdkafka's and SQLite's threads
//! included, the broker excluded and reported apart). events/s/core = events / CPU seconds.

use std::time::{Duration, Instant};

use tillstream_conflict_detector::core::{Change, CoreConfig, Detector, Mode};
use tillstream_conflict_detector::db::{Db, EventRow};
use tillstream_conflict_detector::decode::store_event_with;
use tillstream_conflict_detector::fixtures;
use tillstream_contracts::{DeviceEvent, EventKind, Registry, codec};
use tillstream_integration_tests::TestRegistry;
use tillstream_integration_tests::bench::{
    MockBroker, Sample, TansuMemory, consume_all, cpu_seconds, measure,
};
use tillstream_runtime::CancellationToken;
use tillstream_runtime::kafka::{self, Assignment, KafkaConfig, headers};

const EVENTS: &str = "tillstream.store-events";
const TOPICS: [&str; 5] = [
    EVENTS,
    "tillstream.conflicts",
    "tillstream.compensations",
    "tillstream.price-lists.history",
    "tillstream.dead-letter",
];

fn line(name: &str, n: usize, s: &Sample) {
    s.print(name, n, "ev");
}

/// Framed records of the workload, in stream order.
async fn framed(client: &Registry, events: &[DeviceEvent]) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::with_capacity(events.len());
    for e in events {
        let id = client
            .schema_id(e.kind(), e.schema_version() as u32)
            .await
            .unwrap();
        out.push((
            e.store_id().to_string(),
            codec::frame(id, e.encode().unwrap()),
        ));
    }
    out
}

async fn pure(client: &Registry, w: &fixtures::Workload, records: &[(String, Vec<u8>)]) {
    let mut writers = std::collections::HashMap::new();
    for (_, r) in records {
        let (id, _) = codec::unframe(r).unwrap();
        if let std::collections::hash_map::Entry::Vacant(v) = writers.entry(id) {
            v.insert(client.writer_schema(id).await.unwrap());
        }
    }
    let n = records.len();
    let (events, s) = measure(None, || {
        let mut d = Detector::new(CoreConfig::default());
        for l in &w.lists {
            d.apply_price_list(l, Mode::Live).unwrap();
        }
        let mut events = Vec::with_capacity(n);
        let mut changes = 0usize;
        for (i, (_, r)) in records.iter().enumerate() {
            let (id, datum) = codec::unframe(r).unwrap();
            let ev = store_event_with(&writers[&id], datum).unwrap();
            changes += d
                .apply(&ev.event, i as i64, Mode::Live)
                .unwrap()
                .changes
                .len();
            events.push(ev.event);
        }
        std::hint::black_box(changes);
        events
    });
    line("pure: decode + rules (1 thread)", n, &s);
    let (by_rule, s) = measure(None, || {
        let mut d = Detector::new(CoreConfig::default());
        for l in &w.lists {
            d.apply_price_list(l, Mode::Live).unwrap();
        }
        let mut by_rule: std::collections::BTreeMap<String, usize> = Default::default();
        for (i, e) in events.iter().enumerate() {
            for c in d.apply(e, i as i64, Mode::Live).unwrap().changes {
                let (what, v) = match &c {
                    Change::Raised(v) => ("raised", v),
                    Change::Superseded { verdict, .. } => ("superseded", verdict),
                };
                *by_rule
                    .entry(format!("{} {what}", v.rule.name()))
                    .or_default() += 1;
            }
        }
        by_rule
    });
    line("pure: rules only (1 thread)", n, &s);
    println!("  (verdict changes: {by_rule:?})");
    // The gate and restore log alone: what the database costs per event.
    let dir = tempfile::tempdir().unwrap();
    let db = Db::connect(&tillstream_conflict_detector::db::DatabaseConfig {
        url: dir.path().join("gate.db").display().to_string(),
        ..Default::default()
    })
    .await
    .unwrap();
    let rows: Vec<EventRow> = records
        .iter()
        .enumerate()
        .map(|(i, (key, r))| {
            let (id, datum) = codec::unframe(r).unwrap();
            let _ = key;
            EventRow {
                partition: (i % 12) as i32,
                offset: i as i64,
                record_time: i as i64,
                schema_id: id,
                datum: datum.to_vec(),
            }
        })
        .collect();
    let me = std::process::id();
    let (c0, t) = (cpu_seconds(me), Instant::now());
    for chunk in rows.chunks(5000) {
        let mut tx = db.begin().await.unwrap();
        tx.log_events(chunk).await.unwrap();
        tx.commit().await.unwrap();
    }
    let s = Sample {
        wall: t.elapsed(),
        cpu: cpu_seconds(me) - c0,
        broker_cpu: 0.0,
    };
    line("database: restore log only", n, &s);
}

async fn produce(kafka_cfg: &KafkaConfig, topic: &str, records: &[(String, Vec<u8>)]) {
    let producer = kafka::producer(kafka_cfg, "bench-producer").unwrap();
    for chunk in records.chunks(20_000) {
        let mut futs = Vec::new();
        for (key, payload) in chunk {
            let record = rdkafka::producer::FutureRecord::to(topic)
                .key(key.as_bytes())
                .payload(payload)
                .headers(kafka::make_headers(&[(headers::EVENT_TYPE, "bench")]));
            futs.push(producer.send_result(record).expect("queue has room"));
        }
        for f in futs {
            f.await.unwrap().unwrap();
        }
    }
}

/// Records consumed per partition = next offsets (dense from 0) summed.
async fn wait_done(db: &Db, total: i64, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        let sum: i64 = db.offsets(EVENTS).await.unwrap_or_default().values().sum();
        if sum >= total
            && db.held_len().await.unwrap_or(1) == 0
            && db.outbox_len().await.unwrap_or(1) == 0
        {
            return true;
        }
        if Instant::now() > deadline {
            eprintln!("not caught up: {sum} of {total}");
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn on_broker(
    label: &str,
    kafka_cfg: KafkaConfig,
    registry: &TestRegistry,
    w: &fixtures::Workload,
    records: &[(String, Vec<u8>)],
    broker_pid: Option<u32>,
) {
    let n = records.len();
    let t = Instant::now();
    let client = registry.client();
    let list_id = client
        .schema_id(EventKind::PriceListApproved, 1)
        .await
        .unwrap();
    let lists: Vec<(String, Vec<u8>)> = w
        .lists
        .iter()
        .map(|l| {
            (
                l.store_id.clone(),
                codec::frame(
                    list_id,
                    codec::encode(EventKind::PriceListApproved, 1, l).unwrap(),
                ),
            )
        })
        .collect();
    produce(&kafka_cfg, "tillstream.price-lists.history", &lists).await;
    produce(&kafka_cfg, EVENTS, records).await;
    println!(
        "{label}: pre-filled {n} events in {:.1}s",
        t.elapsed().as_secs_f64()
    );
    let kc = kafka_cfg.clone();
    let (got, s) =
        tokio::task::spawn_blocking(move || measure(broker_pid, || consume_all(&kc, EVENTS, n)))
            .await
            .unwrap();
    line(&format!("{label}: baseline plain consumer"), got, &s);

    let dir = tempfile::tempdir().unwrap();
    let mut cfg = tillstream_conflict_detector::Config {
        kafka: KafkaConfig {
            assignment: Assignment::Static,
            ..kafka_cfg.clone()
        },
        registry: registry.config(),
        ..Default::default()
    };
    cfg.database.url = dir.path().join("bench.db").display().to_string();
    if let Ok(b) = std::env::var("DETECTOR_BENCH_MAX_BATCH") {
        cfg.detector.max_batch = b.parse().unwrap();
    }
    let token = CancellationToken::new();
    let me = std::process::id();
    let (c0, b0) = (cpu_seconds(me), broker_pid.map(cpu_seconds).unwrap_or(0.0));
    let t = Instant::now();
    let running = tillstream_conflict_detector::start(cfg, token.clone())
        .await
        .unwrap();
    let db = running.state.db.clone();
    // Start-up (registry, topic checks, the price-list history read to its end) is a fixed cost:
    // measured apart, from the moment the batch loop runs.
    while !running.health.is_ready() {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let (c1, t1) = (cpu_seconds(me), Instant::now());
    let ok = wait_done(&db, n as i64, Duration::from_secs(900)).await;
    let steady = Sample {
        wall: t1.elapsed(),
        cpu: cpu_seconds(me) - c1,
        broker_cpu: 0.0,
    };
    let s = Sample {
        wall: t.elapsed(),
        cpu: cpu_seconds(me) - c0,
        broker_cpu: broker_pid.map(cpu_seconds).unwrap_or(0.0) - b0,
    };
    let c = &running.state.counters;
    let raised = tillstream_conflict_detector::Counters::get(&c.raised);
    let superseded = tillstream_conflict_detector::Counters::get(&c.superseded);
    token.cancel();
    let _ = running.wait().await;
    if ok {
        line(
            &format!("{label}: detector service (default config)"),
            n,
            &s,
        );
        line(
            &format!("{label}: the same from its loop's start"),
            n,
            &steady,
        );
        println!("  ({raised} conflicts raised, {superseded} superseded)");
    } else {
        println!("{label}: detector did not finish in 900 s");
    }
}

async fn on_mock_cluster(
    registry: &TestRegistry,
    w: &fixtures::Workload,
    records: &[(String, Vec<u8>)],
) {
    let broker = MockBroker::spawn();
    on_broker(
        "mock cluster (own process)",
        broker.kafka(),
        registry,
        w,
        records,
        Some(broker.pid()),
    )
    .await;
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    if std::env::args().any(|a| a == "--list") {
        return; // `cargo bench -- --list` / test discovery
    }
    if MockBroker::serve_if_child(&TOPICS) {
        return;
    }
    let n: usize = std::env::var("DETECTOR_BENCH_N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    let stores = 200;
    let now = tillstream_runtime::clock::now_ms();
    let t0 = (now / 86_400_000 - 3) * 86_400_000;
    let w = match std::env::var("DETECTOR_BENCH_WORKLOAD").as_deref() {
        Ok("conflicts") => fixtures::workload(5, stores, n / stores, t0, 5),
        _ => fixtures::steady_workload(5, stores, n / stores, t0, 5),
    };
    let registry = TestRegistry::start().await.unwrap();
    let client = registry.client();
    let events = w.interleaved();
    let records = framed(&client, &events).await;
    println!(
        "workload: {} events over {stores} stores, {} price lists",
        records.len(),
        w.lists.len()
    );
    pure(&client, &w, &records).await;
    if std::env::var("DETECTOR_BENCH_PURE_ONLY").is_ok() {
        return;
    }
    on_mock_cluster(&registry, &w, &records).await;
    match TansuMemory::start().await {
        Ok(t) => {
            let pid = t.pid();
            on_broker(
                "tansu memory://",
                t.kafka(),
                &registry,
                &w,
                &records,
                Some(pid),
            )
            .await;
        }
        Err(why) => println!("tansu memory://: skipped ({why})"),
    }
}
