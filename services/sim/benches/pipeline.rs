//! End-to-end benchmarks of the whole pipeline on the real local stack (tansu with SQLite storage,
//! mosquitto, the registry, the bridge, dedup and the projection into SQLite as processes). Figures
//! are printed, never asserted; every baseline is measured in the same run, on the same machine.
//!
//!   cargo bench -p tillstream-sim --bench pipeline
//!
//! Sizes (environment): BENCH_EVENTS (e2e throughput, default 30000), BENCH_LATENCY_SECS (each
//! latency run, default 20), BENCH_BACKLOG (offline backlog, default 100000). The latency curve
//! runs at 20%, 50% and 80% of the drain rate the throughput phase measured; BENCH_RATE pins one
//! rate instead. BENCH_ENV adds environment to every service (A/B runs of a setting). Each phase is
//! bounded in time (10 min).

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use tillstream_integration_tests::bench::cpu_seconds;
use tillstream_integration_tests::pipeline::{Pipeline, PipelineOptions, Service};
use tillstream_integration_tests::{Stack, Svc, TestRegistry, apply_topology};
use tillstream_runtime::CancellationToken;
use tillstream_runtime::kafka::{self, KafkaConfig};
use tillstream_sim::oracle::{self, Topics};
use tillstream_sim::plan::{FleetSpec, Plan, generate, recent_start};
use tillstream_sim::publish::{PublishConfig, publish};

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn fleet(seed: u64, events: u64, offline_everyone: bool) -> FleetSpec {
    FleetSpec {
        seed,
        stores: 10,
        devices_per_store: 4,
        events,
        start_ms: Some(recent_start(tillstream_runtime::clock::now_ms(), 2)),
        offline_fraction: if offline_everyone { 1.0 } else { 0.0 },
        offline_periods: 1,
        offline_events: if offline_everyone { u32::MAX } else { 0 },
        duplicate_rate: 0.0,
        replay_on_reconnect: 0,
        ..FleetSpec::default()
    }
}

/// `BENCH_ENV="NAME=VALUE;NAME=VALUE"`: extra environment for every service process (full
/// variable names, e.g. `TILLSTREAM_DEDUP__KAFKA__IDEMPOTENCE=true`), for A/B runs of a setting.
fn bench_env() -> std::collections::BTreeMap<Service, Vec<(String, String)>> {
    let pairs: Vec<(String, String)> = std::env::var("BENCH_ENV")
        .unwrap_or_default()
        .split(';')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    Service::ALL.iter().map(|s| (*s, pairs.clone())).collect()
}

struct Env {
    stack: Stack,
    _registry: TestRegistry,
    pipeline: Option<Pipeline>,
    kafka: KafkaConfig,
    plan: Plan,
    _dir: tempfile::TempDir,
}

async fn env(plan: Plan, with_pipeline: bool) -> Env {
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("devices.csv");
    std::fs::write(&csv, plan.fleet_csv()).unwrap();
    let stack = Stack::start(&[Svc::Tansu, Svc::Mosquitto], Some(&csv)).unwrap();
    let registry = TestRegistry::start().await.unwrap();
    let kafka = stack.kafka();
    apply_topology(&kafka).await.unwrap();
    let pipeline = if with_pipeline {
        Some(
            Pipeline::start(
                &stack,
                PipelineOptions {
                    registry_url: registry.url.clone(),
                    fleet_csv: csv,
                    database_url: None,
                    extra_env: bench_env(),
                },
            )
            .await
            .unwrap(),
        )
    } else {
        None
    };
    Env {
        stack,
        _registry: registry,
        pipeline,
        kafka,
        plan,
        _dir: dir,
    }
}

fn publish_cfg(stack: &Stack, rate: u64, record: bool) -> PublishConfig {
    PublishConfig {
        port: stack.mqtt_port(),
        tls_dir: stack.mqtt_tls_dir(),
        rate,
        offline_for: Duration::from_millis(100),
        timeout: Duration::from_secs(600),
        record_sent: record,
        // Times publishing and the pipeline separately, as before receipts existed.
        await_receipts: false,
        ..Default::default()
    }
}

/// Whether the pipeline drained (within 10 min). Each phase times itself: from the projection's
/// commit times, or from its own start.
async fn drain(e: &Env) -> bool {
    let Some(p) = e.pipeline.as_ref() else {
        return false;
    };
    oracle::wait_drained(
        &e.kafka,
        &Topics::default(),
        Some(&p.database_url()),
        &e.plan.truth,
        oracle::DrainWait::Fixed(Duration::from_secs(600)),
        Duration::from_millis(1500),
    )
    .await
    .is_ok()
}

/// Baseline: mosquitto alone, to a subscriber that only acknowledges.
async fn mosquitto_rate(events: u64) -> f64 {
    use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
    let plan = generate(&fleet(7, events, false));
    let e = env(plan, false).await;
    let mut opts = MqttOptions::new("bench-sub", "127.0.0.1", e.stack.mqtt_port());
    let (transport, password) = e.stack.mqtt_login("admin");
    opts.set_transport(transport)
        .set_credentials("admin", password)
        .set_clean_session(true)
        .set_inflight(1000)
        .set_max_packet_size(16 << 20, 16 << 20);
    let (client, mut ev) = AsyncClient::new(opts, 10_000);
    client.subscribe("store/#", QoS::AtLeastOnce).await.unwrap();
    client.subscribe("fleet/#", QoS::AtLeastOnce).await.unwrap();
    let mut subacks = 0;
    while subacks < 2 {
        if let Ok(Event::Incoming(Packet::SubAck(_))) = ev.poll().await {
            subacks += 1;
        }
    }
    let expected = e.plan.publishes();
    let counter = tokio::spawn(async move {
        let mut n = 0;
        let mut first = None;
        while n < expected {
            match tokio::time::timeout(Duration::from_secs(30), ev.poll()).await {
                Ok(Ok(Event::Incoming(Packet::Publish(_)))) => {
                    first.get_or_insert_with(Instant::now);
                    n += 1;
                }
                Ok(_) => {}
                Err(_) => break,
            }
        }
        (n, first.map(|f| f.elapsed()))
    });
    let r = publish(&e.plan, &publish_cfg(&e.stack, 0, false))
        .await
        .unwrap();
    let (n, took) = counter.await.unwrap();
    let took = took.unwrap_or(r.elapsed).max(r.elapsed);
    n as f64 / took.as_secs_f64()
}

/// Baselines: tansu's own produce and consume rates for records like ours (~600 B, no headers:
/// the bridge writes none by default).
async fn tansu_rates(records: usize) -> (f64, f64) {
    let stack = Stack::start(&[Svc::Tansu], None).unwrap();
    let mut kafka = stack.kafka();
    kafka.idempotence = false;
    apply_topology(&kafka).await.unwrap();
    let producer = kafka::producer(&kafka, "bench").unwrap();
    let payload = vec![7u8; 600];
    let t = Instant::now();
    let mut futures = Vec::with_capacity(records);
    for i in 0..records {
        let key = format!("s{:03}", i % 10);
        let rec = rdkafka::producer::FutureRecord::to("tillstream.store-events.raw")
            .key(key.as_bytes())
            .payload(&payload);
        futures.push(producer.send_result(rec).map_err(|(e, _)| e).unwrap());
    }
    for f in futures {
        f.await.unwrap().unwrap();
    }
    let produce = records as f64 / t.elapsed().as_secs_f64();
    let t = Instant::now();
    let read = tokio::task::spawn_blocking(move || {
        kafka::read_topic_to_end(
            &kafka,
            "tillstream.store-events.raw",
            Duration::from_secs(600),
        )
        .map(|v| v.len())
        .unwrap_or(0)
    })
    .await
    .unwrap();
    let consume = read as f64 / t.elapsed().as_secs_f64();
    (produce, consume)
}

fn per_core(events: usize, cpu: f64) -> String {
    if cpu <= 0.0 {
        return "-".into();
    }
    format!("{:.0}", events as f64 / cpu)
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let events = env_u64("BENCH_EVENTS", 30_000);
    let rate = env_u64("BENCH_RATE", 5_000);
    let latency_secs = env_u64("BENCH_LATENCY_SECS", 20);
    let backlog = env_u64("BENCH_BACKLOG", 100_000);
    let _ = CancellationToken::new();
    println!(
        "tillstream pipeline benchmarks (machine: {} cores)",
        num_cpus()
    );

    // --- baselines ------------------------------------------------------------------------------
    let mq = mosquitto_rate(events).await;
    let (tp, tc) = tansu_rates(events as usize).await;
    println!("\nbaselines (same run):");
    println!("  mosquitto -> ack-only subscriber     {mq:>10.0} msg/s");
    println!("  tansu (SQLite) produce               {tp:>10.0} rec/s");
    println!("  tansu (SQLite) consume               {tc:>10.0} rec/s");

    // --- end-to-end throughput + per-stage CPU ---------------------------------------------------
    let plan = generate(&fleet(8, events, false));
    let mut e = env(plan, true).await;
    let pids: HashMap<Service, u32> = e
        .pipeline
        .as_ref()
        .unwrap()
        .instances
        .iter()
        .filter_map(|i| Some((i.service, i.pid()?)))
        .collect();
    let cpu0: HashMap<Service, f64> = pids.iter().map(|(s, p)| (*s, cpu_seconds(*p))).collect();
    let (t, t_wall) = (Instant::now(), tillstream_runtime::clock::now_ms());
    let r = publish(&e.plan, &publish_cfg(&e.stack, 0, false))
        .await
        .unwrap();
    let drained = drain(&e).await;
    let n = e.plan.truth.store_event_ids.len();
    // From the first publish to the last commit the projection recorded (not to when the oracle
    // noticed, which adds its polling and settle time).
    let total = match (drained, e.pipeline.as_ref()) {
        (true, Some(p)) => match applied_times(&p.database_url()).await {
            Ok(times) => times
                .values()
                .max()
                .map(|last| Duration::from_millis((*last - t_wall).max(0) as u64))
                .unwrap_or_else(|| t.elapsed()),
            Err(err) => panic!("reading the projection's apply times: {err}"),
        },
        _ => t.elapsed(),
    };
    println!(
        "\nend to end ({n} unique store events, {} publishes, 40 devices):",
        r.publishes
    );
    println!(
        "  devices published in                {:>10.1} s ({:.0} msg/s)",
        r.elapsed.as_secs_f64(),
        r.rate()
    );
    match drained {
        true => println!(
            "  MQTT publish -> projection drained   {:>10.1} s = {:.0} events/s ({:.2} of tansu's produce rate)",
            total.as_secs_f64(),
            n as f64 / total.as_secs_f64(),
            n as f64 / total.as_secs_f64() / tp
        ),
        false => println!("  pipeline did not drain within 10 min"),
    }
    println!("  per stage (events per CPU-second = events/s/core):");
    for s in Service::ALL {
        let cpu = pids
            .get(&s)
            .map(|p| cpu_seconds(*p) - cpu0[&s])
            .unwrap_or(0.0);
        println!(
            "    {:<32} {:>8.1} CPU-s  {:>10} events/s/core",
            s.binary(),
            cpu,
            per_core(n, cpu)
        );
    }
    e.pipeline.take();
    drop(e);

    // --- latency curve --------------------------------------------------------------------------
    // At fixed shares of the drain rate just measured (BENCH_RATE pins one rate instead).
    let drain_rate = drained.then(|| n as f64 / total.as_secs_f64());
    let rates: Vec<(String, u64)> = match (std::env::var("BENCH_RATE").ok(), drain_rate) {
        (Some(_), _) | (None, None) => vec![("fixed".into(), rate)],
        (None, Some(d)) => [20u64, 50, 80]
            .iter()
            .map(|pct| {
                (
                    format!("{pct}% of the drain rate"),
                    (d * *pct as f64 / 100.0) as u64,
                )
            })
            .collect(),
    };
    for (i, (label, r)) in rates.iter().enumerate() {
        latency_run(*r, latency_secs, 9 + i as u64, label).await;
    }

    // --- offline backlog drain -----------------------------------------------------------------
    let plan = generate(&fleet(10, backlog, true));
    let e = env(plan, true).await;
    let t = Instant::now();
    let r = publish(&e.plan, &publish_cfg(&e.stack, 0, false))
        .await
        .unwrap();
    let drained = drain(&e).await;
    let n = e.plan.truth.store_event_ids.len();
    println!("\noffline backlog: {n} events buffered on 40 devices, all reconnecting at once:");
    println!(
        "  devices flushed their backlog in      {:>8.1} s",
        r.elapsed.as_secs_f64()
    );
    match drained {
        true => println!(
            "  backlog fully projected after         {:>8.1} s ({:.0} events/s)",
            t.elapsed().as_secs_f64(),
            n as f64 / t.elapsed().as_secs_f64()
        ),
        false => println!("  backlog not drained within 10 min"),
    }
}

fn num_cpus() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
}

/// Events scheduled in the first seconds of a latency run are left out of its percentiles (start-up:
/// connections, producer metadata, the first fetches), and counted apart.
const WARM_UP: Duration = Duration::from_secs(2);

/// One latency run on a fresh stack: the fleet publishes at `rate` for `secs`; each event's latency
/// is from when its publish was due (the paced schedule) to when the projection wrote the batch that
/// applied it (`applied_at_ms`, read once after the drain: no polling).
async fn latency_run(rate: u64, secs: u64, seed: u64, label: &str) {
    let plan = generate(&fleet(seed, rate * secs, false));
    let e = env(plan, true).await;
    let db = e.pipeline.as_ref().unwrap().database_url();
    // Wall-clock anchor for the publisher's Instants (the projection records wall-clock ms).
    let (anchor, anchor_ms) = (Instant::now(), tillstream_runtime::clock::now_ms());
    let wall_ms = |i: Instant| anchor_ms + i.duration_since(anchor).as_millis() as i64;
    let r = publish(&e.plan, &publish_cfg(&e.stack, rate, true))
        .await
        .unwrap();
    let drained = drain(&e).await;
    let applied = applied_times(&db)
        .await
        .unwrap_or_else(|err| panic!("reading the projection's apply times: {err}"));
    let first = r.sent.iter().map(|(_, at)| *at).min().unwrap_or(anchor);
    let mut all = Histogram::<u64>::new(3).unwrap();
    let mut per_second: BTreeMap<u64, Histogram<u64>> = BTreeMap::new();
    let (mut missing, mut warm_up, mut not_projected) = (0usize, 0usize, 0usize);
    for (id, due) in &r.sent {
        // Device health events go to their own topic, not to the projection.
        if !e.plan.truth.store_event_ids.contains(id) {
            not_projected += 1;
            continue;
        }
        let Some(at) = applied.get(id) else {
            missing += 1;
            continue;
        };
        let since_start = due.duration_since(first);
        if since_start < WARM_UP {
            warm_up += 1;
            continue;
        }
        // Clamped at 0: one machine's clock; an apply cannot precede its due time by more than the
        // millisecond rounding.
        let ms = (*at - wall_ms(*due)).max(0) as u64;
        let _ = all.record(ms);
        let _ = per_second
            .entry(since_start.as_secs())
            .or_insert_with(|| Histogram::new(3).unwrap())
            .record(ms);
    }
    let q = |h: &Histogram<u64>| {
        format!(
            "p50 {:>5} ms  p90 {:>5} ms  p99 {:>5} ms  max {:>5} ms",
            h.value_at_quantile(0.5),
            h.value_at_quantile(0.9),
            h.value_at_quantile(0.99),
            h.max()
        )
    };
    println!(
        "\nlatency at {rate} ev/s ({label}) for {secs} s, due publish -> projection commit ({} events measured, {warm_up} in the {} s warm-up left out, achieved {:.0} msg/s{}):",
        all.len(),
        WARM_UP.as_secs(),
        r.rate(),
        if drained {
            ""
        } else {
            "; NOT DRAINED within 10 min"
        }
    );
    println!(
        "  all        {}   missing (store events never applied): {missing}; not projected by design (device health): {not_projected}",
        q(&all)
    );
    for (second, h) in &per_second {
        println!("  s{second:<3} {:>5} {}", h.len(), q(h));
    }
}

/// Every applied event's `applied_at_ms` from the projection's gate (the active set is blue on a
/// fresh database). A failed read is an error, never "no events".
async fn applied_times(db: &str) -> Result<HashMap<String, i64>, sqlx::Error> {
    use sqlx::Row;
    sqlx::any::install_default_drivers();
    let pool = sqlx::any::AnyPoolOptions::new()
        .max_connections(1)
        .connect(db)
        .await?;
    let rows = sqlx::query("SELECT event_id, applied_at_ms FROM blue_applied_event")
        .fetch_all(&pool)
        .await?;
    rows.iter()
        .map(|r| Ok((r.try_get::<String, _>(0)?, r.try_get::<i64, _>(1)?)))
        .collect()
}
