//! Dedup throughput (prints figures, asserts nothing). Run:
//!
//! ```text
//! cargo bench -p tillstream-dedup --bench throughput            # N = 100k raw records
//! DEDUP_BENCH_N=200000 cargo bench -p tillstream-dedup --bench throughput
//! ```
//!
//! Phases, all on the same generated workload (20% extra copies, 5% of them altered):
//! 1. pure: decode + fingerprint + decide in one thread, and the core's decision alone;
//! 2. tansu SQLite (private stack via scripts/stack): baseline = a plain consumer reading the
//!    pre-filled raw topic, then the dedup service (in process) from the same topic until its group
//!    has committed everything, twice: without sync receipts (own output topics and group), then
//!    with them (the default), which prints what receipts cost per record;
//! 3. librdkafka's MockCluster in a child process (a broker fast enough that the service, not
//!    the broker, is the limit);
//! 4. tansu memory storage (`memory://`), started here on a free port when a build with it is
//!    available (`tillstream_integration_tests::bench::TansuMemory`; the project's `tansu` has none):
//!    `TILLSTREAM_TANSU_MEMORY_BIN=DIR/bin/tansu cargo bench -p tillstream-dedup --bench throughput`.
//!
//! CPU is this process's user+system time from /proc/self/stat (what getrusage(RUSAGE_SELF)
//! reports; librdkafka's threads included, the broker excluded and reported apart).
//! events/s/core = raw records / CPU seconds.

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::{Duration, Instant};

use common::*;
use tillstream_dedup::core::{CoreConfig, Input, PartitionDedup};
use tillstream_dedup::decode::{Decoded, decode_with};
use tillstream_integration_tests::bench::{
    MockBroker, Sample, TansuMemory, consume_all, cpu_seconds, measure,
};
use tillstream_integration_tests::{Stack, Svc, TestRegistry, apply_topology};
use tillstream_runtime::CancellationToken;
use tillstream_runtime::kafka::KafkaConfig;

fn line(name: &str, n: usize, s: &Sample) {
    s.print(name, n, "rec");
}

fn spec(n: usize) -> Spec {
    // 20% extra copies: events = n / 1.2, over 500 devices.
    let events = (n as f64 / 1.2) as i64;
    Spec {
        seed: 99,
        stores: 250,
        devices_per_store: 2,
        per_device: (events / 500).max(2),
        dup_rate: 0.2,
        altered_rate: 0.05,
        missing: 0,
        garbage: 0,
        window: 20,
    }
}

async fn pure(client: &tillstream_contracts::Registry, w: &Workload) {
    let writers: Vec<_> = {
        let mut v = Vec::new();
        for r in &w.records {
            let (id, _) = tillstream_contracts::codec::unframe(&r.payload).unwrap();
            v.push(client.writer_schema(id).await.unwrap());
        }
        v
    };
    let n = w.records.len();
    let (inputs, s) = measure(None, || {
        let mut inputs: Vec<Input> = Vec::with_capacity(n);
        for (i, r) in w.records.iter().enumerate() {
            let (_, datum) = tillstream_contracts::codec::unframe(&r.payload).unwrap();
            if let Decoded::Event(inp) =
                decode_with(&writers[i], datum, i as i64, 1_800_000_000_000 + i as i64)
            {
                inputs.push(inp);
            }
        }
        inputs
    });
    line("pure: decode + fingerprint (1 thread)", n, &s);
    let ((), s) = measure(None, || {
        let mut d = PartitionDedup::new(0, CoreConfig::default());
        for (k, chunk) in inputs.chunks(2000).enumerate() {
            let end = chunk.last().map_or(0, |i| i.offset);
            std::hint::black_box(d.process(chunk, end));
            let _ = k;
        }
    });
    line("pure: core decisions only (1 thread)", n, &s);
}

/// Waits until the group's committed offsets account for all `total` pre-filled records (offsets
/// are dense from 0, so the committed next-offsets sum to the records consumed). Not the high
/// watermarks: tansu 0.6's memory storage reports watermarks below what it stored (80,831 of 99,374
/// in one run) while serving and committing every record.
async fn wait_all_committed(
    kafka_cfg: &KafkaConfig,
    group: &str,
    total: i64,
    timeout: Duration,
) -> bool {
    let partitions: Vec<i32> = input_end(kafka_cfg).keys().copied().collect();
    let deadline = Instant::now() + timeout;
    loop {
        let (kc, p, g) = (kafka_cfg.clone(), partitions.clone(), group.to_string());
        let got = tokio::task::spawn_blocking(move || committed_by(&kc, &g, &p))
            .await
            .unwrap();
        let sum: i64 = got.values().sum();
        if sum >= total {
            let end = input_end(kafka_cfg);
            if end.values().sum::<i64>() != total {
                println!(
                    "  (broker reports high watermarks summing to {}, not the {total} records it serves)",
                    end.values().sum::<i64>()
                );
            }
            return true;
        }
        if Instant::now() > deadline {
            eprintln!("not caught up: committed {sum} of {total}: {got:?}");
            return false;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn on_broker(
    label: &str,
    kafka: KafkaConfig,
    registry: &TestRegistry,
    w: &Workload,
    broker_pid: Option<u32>,
) {
    let n = w.records.len();
    let t = Instant::now();
    produce(&kafka, &w.records).await;
    println!(
        "{label}: pre-filled {n} records in {:.1}s",
        t.elapsed().as_secs_f64()
    );
    let kc = kafka.clone();
    let (got, s) =
        tokio::task::spawn_blocking(move || measure(broker_pid, || consume_all(&kc, RAW, n)))
            .await
            .unwrap();
    line(&format!("{label}: baseline plain consumer"), got, &s);

    // Sync receipts' cost: the same service without them first, on its own output topics and
    // group, then with them (the default), both from the same pre-filled input.
    let without = run_service(&kafka, registry, n, broker_pid, Receipts::Off).await;
    let with = run_service(&kafka, registry, n, broker_pid, Receipts::On).await;
    match (without, with) {
        (Some(off), Some(on)) => {
            line(&format!("{label}: dedup service, receipts off"), n, &off);
            line(
                &format!("{label}: dedup service (default: receipts on)"),
                n,
                &on,
            );
            println!(
                "{label}: receipts cost {:+.2} us/rec of CPU (on/off events/s per core = {:.2})",
                (on.cpu - off.cpu) * 1e6 / n as f64,
                off.cpu / on.cpu.max(1e-9)
            );
        }
        _ => println!("{label}: dedup did not finish in 900 s"),
    }
}

/// Whether a bench run of the service issues sync receipts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Receipts {
    On,
    Off,
}

impl Receipts {
    /// The run's own output topics, group and client (the input is shared).
    fn suffix(self) -> &'static str {
        match self {
            Receipts::On => "",
            Receipts::Off => ".noreceipts",
        }
    }
}

/// Topics of one bench run besides the shared input.
fn output_topics(r: Receipts) -> Vec<String> {
    [OUT, CHANGELOG, GAPS, CONFLICTS, DLQ, RECEIPTS]
        .iter()
        .map(|t| format!("{t}{}", r.suffix()))
        .collect()
}

/// Runs the service over the whole input; `None` when it did not finish in time.
async fn run_service(
    kafka: &KafkaConfig,
    registry: &TestRegistry,
    n: usize,
    broker_pid: Option<u32>,
    receipts: Receipts,
) -> Option<Sample> {
    let sfx = receipts.suffix();
    let mut cfg = tillstream_dedup::Config {
        kafka: kafka.clone(),
        registry: registry.config(),
        ..Default::default()
    };
    cfg.dedup.client_id = format!("bench{sfx}");
    cfg.dedup.group_id = format!("{GROUP}{sfx}");
    let topics = output_topics(receipts);
    cfg.dedup.output_topic = topics[0].clone();
    cfg.dedup.changelog_topic = topics[1].clone();
    cfg.dedup.gaps_topic = topics[2].clone();
    cfg.dedup.conflicts_topic = topics[3].clone();
    cfg.dedup.dead_letter_topic = topics[4].clone();
    cfg.dedup.receipts_topic = topics[5].clone();
    if receipts == Receipts::Off {
        cfg.dedup.receipt_interval_ms = 0;
        create_topics(kafka, &topics).await;
    }
    // DEDUP_BENCH_PRODUCER="linger.ms=50,batch.size=1000000" overrides producer properties.
    if let Ok(props) = std::env::var("DEDUP_BENCH_PRODUCER") {
        for kv in props.split(',').filter(|s| !s.is_empty()) {
            if let Some((k, v)) = kv.split_once('=') {
                cfg.dedup.producer_properties.insert(k.into(), v.into());
            }
        }
    }
    if let Ok(b) = std::env::var("DEDUP_BENCH_MAX_BATCH") {
        cfg.dedup.max_batch = b.parse().unwrap();
    }
    let group = cfg.dedup.group_id.clone();
    let token = CancellationToken::new();
    let me = std::process::id();
    let c0 = cpu_seconds(me);
    let b0 = broker_pid.map(cpu_seconds).unwrap_or(0.0);
    let t = Instant::now();
    let running = tillstream_dedup::start(cfg, token.clone()).await.unwrap();
    let ok = wait_all_committed(kafka, &group, n as i64, Duration::from_secs(900)).await;
    let s = Sample {
        wall: t.elapsed(),
        cpu: cpu_seconds(me) - c0,
        broker_cpu: broker_pid.map(cpu_seconds).unwrap_or(0.0) - b0,
    };
    token.cancel();
    let _ = running.wait().await;
    ok.then_some(s)
}

/// Creates those of `topics` that do not exist (12 partitions, co-partitioned with the input). Only
/// what is missing: the MockCluster child creates its topics itself and times out admin requests.
async fn create_topics(kafka: &KafkaConfig, topics: &[String]) {
    use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
    let admin: AdminClient<rdkafka::client::DefaultClientContext> =
        kafka.client_config("bench-admin").create().unwrap();
    let missing: Vec<&String> = topics
        .iter()
        .filter(|t| {
            tillstream_runtime::kafka::partition_count(admin.inner(), t, Duration::from_secs(10))
                .unwrap_or(0)
                == 0
        })
        .collect();
    if missing.is_empty() {
        return;
    }
    let new: Vec<NewTopic<'_>> = missing
        .iter()
        .map(|t| NewTopic::new(t, 12, TopicReplication::Fixed(1)))
        .collect();
    for r in admin
        .create_topics(&new, &AdminOptions::new())
        .await
        .unwrap()
    {
        if let Err((t, e)) = r
            && e != rdkafka::types::RDKafkaErrorCode::TopicAlreadyExists
        {
            panic!("creating {t}: {e}");
        }
    }
}

/// Every topic the bench's runs use (the MockCluster child creates them itself).
fn mock_topics() -> Vec<String> {
    let mut topics = vec![RAW.to_string()];
    for r in [Receipts::On, Receipts::Off] {
        topics.extend(output_topics(r));
    }
    topics
}

async fn on_mock_cluster(registry: &TestRegistry, w: &Workload) {
    let broker = MockBroker::spawn();
    on_broker(
        "mock cluster (own process)",
        broker.kafka(),
        registry,
        w,
        Some(broker.pid()),
    )
    .await;
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    if std::env::args().any(|a| a == "--list") {
        return; // `cargo bench -- --list` / test discovery
    }
    if MockBroker::serve_if_child(&mock_topics()) {
        return;
    }
    let n: usize = std::env::var("DEDUP_BENCH_N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    let registry = TestRegistry::start().await.unwrap();
    let client = registry.client();
    let w = workload(&client, &spec(n)).await;
    println!(
        "workload: {} raw records ({} events, {} copies, {} altered), {} devices",
        w.records.len(),
        w.ids.len(),
        w.duplicates,
        w.altered,
        500
    );
    pure(&client, &w).await;
    if std::env::var("DEDUP_BENCH_PURE_ONLY").is_ok() {
        return;
    }

    // A fast broker in its own process: what the service itself costs per record.
    on_mock_cluster(&registry, &w).await;

    // tansu with SQLite storage (the project's stack).
    {
        let stack = Stack::start(&[Svc::Tansu], None).unwrap();
        let kafka = stack.kafka();
        apply_topology(&kafka).await.unwrap();
        let pid = std::fs::read_to_string(stack.dir().join("tansu/tansu.pid"))
            .ok()
            .and_then(|s| s.trim().parse().ok());
        on_broker("tansu sqlite", kafka, &registry, &w, pid).await;
    }

    // tansu with memory storage, if a build with it is available.
    match TansuMemory::start().await {
        Ok(tansu) => {
            on_broker(
                "tansu memory",
                tansu.kafka(),
                &registry,
                &w,
                Some(tansu.pid()),
            )
            .await
        }
        Err(e) => println!("tansu memory: {e}"),
    }
}
