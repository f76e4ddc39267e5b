//! Throughput of the projection, printed (never asserted):
//! - the pure step (events → row deltas) alone;
//! - the apply step (pure + one DB transaction per batch: gate, ledger, upserts, offsets) into
//!   SQLite and into PostgreSQL for several batch sizes, with the baseline measured in the same run:
//!   a plain multi-row INSERT of the same number of rows into a bare table, same batch sizes;
//! - end to end from tansu: the live projection reading the topic into the database.
//!
//! CPU is reported as µs per event for this process and for the whole machine (/proc/stat), since
//! PostgreSQL does its share of the work in other processes.
//!
//! `cargo bench -p tillstream-inventory-projection --bench apply -- [--events N] [--batches a,b,c]
//!  [--e2e-events N] [--no-pg] [--no-e2e] [--drop-ledger-index]`

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use sqlx::AssertSqlSafe;
use tillstream_contracts::*;
use tillstream_integration_tests::{Stack, Svc, TestRegistry, apply_topology};
use tillstream_inventory_projection::db::{Db, FaultConfig, Target, values_sql};
use tillstream_inventory_projection::model::{self, Envelope, ProjectionParams};
use tillstream_runtime::CancellationToken;

/// A retail mix over 200 stores: 70% sales (1-3 lines), 5% refunds, 15% adjustments, 5%
/// reservations, 5% loyalty. Deterministic.
fn workload(n: usize) -> Vec<Envelope> {
    let mut out = Vec::with_capacity(n);
    let mut offsets = BTreeMap::<i32, i64>::new();
    for i in 0..n {
        let store = format!("s{:03}", i % 200);
        let device = format!("{store}-d{:02}", (i / 200) % 3);
        let seq = (i / 600) as i64 + 1;
        let r = i % 20;
        let mut event: DeviceEvent = match r {
            0..=13 => samples::order(&store, &device, seq, 1 + i % 3).into(),
            14 => samples::sample(EventKind::OrderRefunded, &store, &device, seq).unwrap(),
            15..=17 => samples::sample(EventKind::InventoryAdjusted, &store, &device, seq).unwrap(),
            18 => {
                samples::sample(EventKind::StockReservationRequested, &store, &device, seq).unwrap()
            }
            _ => samples::sample(EventKind::LoyaltyRedeemed, &store, &device, seq).unwrap(),
        };
        // Unique event ids (the samples derive them from device + seq).
        let id = format!("{}-{i}", event.event_id());
        match &mut event {
            DeviceEvent::OrderCreated(e) => e.event_id = id,
            DeviceEvent::OrderRefunded(e) => e.event_id = id,
            DeviceEvent::InventoryAdjusted(e) => e.event_id = id,
            DeviceEvent::StockReservationRequested(e) => {
                e.reservation_id = format!("res-{i}");
                e.event_id = id
            }
            DeviceEvent::LoyaltyRedeemed(e) => e.event_id = id,
            _ => {}
        }
        let partition = (i % 200 % 12) as i32;
        let o = offsets.entry(partition).or_insert(0);
        out.push(Envelope {
            partition,
            offset: *o,
            record_ts: event.occurred_at() + 2_000,
            event,
        });
        *o += 1;
    }
    out
}

/// (this process's CPU seconds, whole machine's busy CPU seconds).
fn cpu() -> (f64, f64) {
    use tillstream_integration_tests::bench::{cpu_seconds, machine_busy_seconds};
    (cpu_seconds(std::process::id()), machine_busy_seconds())
}

struct Measured {
    secs: f64,
    proc_cpu: f64,
    machine_cpu: f64,
}

async fn measure<F: std::future::Future<Output = ()>>(f: F) -> Measured {
    let (p0, m0) = cpu();
    let t0 = Instant::now();
    f.await;
    let secs = t0.elapsed().as_secs_f64();
    let (p1, m1) = cpu();
    Measured {
        secs,
        proc_cpu: p1 - p0,
        machine_cpu: m1 - m0,
    }
}

fn line(label: &str, n: usize, m: &Measured, baseline: Option<f64>) {
    let rate = n as f64 / m.secs;
    let ratio = baseline
        .map(|b| format!("  {:>5.2}x baseline time", m.secs / b))
        .unwrap_or_default();
    println!(
        "{label:<44} {rate:>11.0} ev/s  {:>7.2} µs cpu/ev (proc)  {:>7.2} µs cpu/ev (machine){ratio}",
        m.proc_cpu * 1e6 / n as f64,
        m.machine_cpu * 1e6 / n as f64,
    );
}

async fn apply_all(db: &Db, envs: &[Envelope], batch: usize) -> usize {
    let mut rows = 0;
    for chunk in envs.chunks(batch) {
        let mut next = BTreeMap::new();
        for e in chunk {
            next.insert(e.partition, e.offset + 1);
        }
        rows += db
            .apply(
                Target::Live,
                "bench",
                chunk,
                &next,
                &ProjectionParams::default(),
                &FaultConfig::default(),
            )
            .await
            .unwrap()
            .rows;
    }
    rows
}

/// The baseline: `rows` rows of 5 columns (2 text, 3 int) into a bare table, `per_tx` per
/// transaction, with the same multi-row statement size as the projection.
async fn plain_insert(db: &Db, rows: usize, per_tx: usize) {
    sqlx::query(
        "CREATE TABLE IF NOT EXISTS bench_plain (a TEXT, b TEXT, c BIGINT, d BIGINT, e BIGINT)",
    )
    .execute(db.pool())
    .await
    .unwrap();
    // Same statement size as the projection's default `rows_per_statement`.
    let chunk = 1000;
    let mut done = 0;
    while done < rows {
        let n = per_tx.min(rows - done);
        let mut tx = db.pool().begin().await.unwrap();
        let mut left = n;
        while left > 0 {
            let k = chunk.min(left);
            let sql = values_sql(
                db.backend(),
                "INSERT INTO bench_plain (a, b, c, d, e)",
                5,
                k,
                "",
            );
            let mut q = sqlx::query(AssertSqlSafe(sql));
            for i in 0..k {
                let v = (done + n - left + i) as i64;
                q = q
                    .bind(format!("store-{}", v % 200))
                    .bind(format!("SKU-{:04}", v % 50))
                    .bind(v)
                    .bind(v * 3)
                    .bind(-v);
            }
            q.execute(&mut *tx).await.unwrap();
            left -= k;
        }
        tx.commit().await.unwrap();
        done += n;
    }
}

async fn apply_suite(
    label: &str,
    envs: &[Envelope],
    batches: &[usize],
    mut url: impl FnMut(&str) -> String,
) {
    println!("\n== apply into {label}: {} events ==", envs.len());
    for &b in batches {
        let db = Db::connect(&tillstream_inventory_projection::db::DatabaseConfig {
            url: url(&format!("apply_{b}")),
            ..Default::default()
        })
        .await
        .unwrap();
        if flag("--drop-ledger-index") {
            // Experiment: what the ledger's (store_id, sku) index costs.
            sqlx::query("DROP INDEX blue_stock_movement_store_sku")
                .execute(db.pool())
                .await
                .unwrap();
        }
        let mut rows = 0;
        let m = measure(async { rows = apply_all(&db, envs, b).await }).await;
        let base_db = Db::connect(&tillstream_inventory_projection::db::DatabaseConfig {
            url: url(&format!("plain_{b}")),
            ..Default::default()
        })
        .await
        .unwrap();
        let base = measure(plain_insert(&base_db, rows, rows * b / envs.len().max(1))).await;
        line(
            &format!("{label} apply, batch {b} ({rows} rows)"),
            envs.len(),
            &m,
            Some(base.secs),
        );
        line(
            &format!("{label} baseline plain insert, same rows"),
            envs.len(),
            &base,
            None,
        );
        if label == "sqlite" {
            // A/B: what the overflow triggers (db/sql/overflow_guard_sqlite.sql) cost.
            let unguarded = Db::connect(&tillstream_inventory_projection::db::DatabaseConfig {
                url: url(&format!("unguarded_{b}")),
                ..Default::default()
            })
            .await
            .unwrap();
            for t in ["blue_sales_hourly_overflow", "blue_stock_overflow"] {
                sqlx::query(AssertSqlSafe(format!("DROP TRIGGER {t}")))
                    .execute(unguarded.pool())
                    .await
                    .unwrap();
            }
            let u = measure(async {
                apply_all(&unguarded, envs, b).await;
            })
            .await;
            line(
                &format!("{label} apply without the overflow triggers (A/B)"),
                envs.len(),
                &u,
                Some(m.secs),
            );
        }
    }
}

fn arg(name: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

fn flag(name: &str) -> bool {
    std::env::args().any(|a| a == name)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let n: usize = arg("--events")
        .and_then(|v| v.parse().ok())
        .unwrap_or(200_000);
    let e2e_n: usize = arg("--e2e-events")
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    let batches: Vec<usize> = arg("--batches")
        .map(|v| v.split(',').filter_map(|x| x.parse().ok()).collect())
        .unwrap_or_else(|| vec![500, 2_000, 5_000, 20_000]);
    let envs = workload(n);
    let lines: usize = envs
        .iter()
        .map(|e| match &e.event {
            DeviceEvent::OrderCreated(o) => o.lines.len(),
            _ => 1,
        })
        .sum();
    println!("workload: {n} events ({lines} lines), 200 stores, 12 partitions; 2-core machine");

    println!("\n== pure step (gate rows + project) ==");
    for &b in &batches {
        let m = measure(async {
            let mut rows = 0;
            for chunk in envs.chunks(b) {
                let gate = model::gate_rows(chunk);
                let refs: Vec<&Envelope> = chunk.iter().collect();
                let d = model::project(&refs, &ProjectionParams::default()).unwrap();
                rows += d.rows() + gate.len();
            }
            std::hint::black_box(rows);
        })
        .await;
        line(&format!("pure, batch {b}"), n, &m, None);
    }

    let dir = tempfile::tempdir().unwrap();
    let base = dir.path().to_path_buf();
    apply_suite("sqlite", &envs, &batches, |name| {
        base.join(format!("{name}.db")).display().to_string()
    })
    .await;

    let stack = if flag("--no-pg") && flag("--no-e2e") {
        None
    } else {
        let mut svcs = vec![];
        if !flag("--no-e2e") {
            svcs.push(Svc::Tansu);
        }
        if !flag("--no-pg") {
            svcs.push(Svc::Postgres);
        }
        Some(Stack::start(&svcs, None).expect("stack"))
    };
    if let Some(stack) = stack.as_ref().filter(|_| !flag("--no-pg")) {
        use sqlx::Connection;
        let pg = stack.pg_url();
        let prefix = pg.rsplit_once('/').unwrap().0.to_string();
        let mut admin = sqlx::PgConnection::connect(&pg).await.unwrap();
        let mut names = Vec::new();
        for &b in &batches {
            for k in ["apply", "plain"] {
                names.push(format!("{k}_{b}"));
            }
        }
        for name in &names {
            sqlx::query(AssertSqlSafe(format!("CREATE DATABASE bench_{name}")))
                .execute(&mut admin)
                .await
                .unwrap();
        }
        apply_suite("postgres", &envs, &batches, |name| {
            format!("{prefix}/bench_{name}")
        })
        .await;
    }

    if let Some(stack) = stack.as_ref().filter(|_| !flag("--no-e2e")) {
        end_to_end(stack, e2e_n, &base).await;
    }
}

async fn end_to_end(stack: &Stack, n: usize, dir: &std::path::Path) {
    let kafka = stack.kafka();
    apply_topology(&kafka).await.unwrap();
    let registry = TestRegistry::start().await.unwrap();
    let client = registry.client();
    let envs = workload(n);
    let producer = tillstream_runtime::kafka::producer(&kafka, "bench-producer").unwrap();
    let t0 = Instant::now();
    let mut futs = Vec::with_capacity(n);
    for e in &envs {
        let ev = &e.event;
        let id = client
            .schema_id(ev.kind(), ev.schema_version() as u32)
            .await
            .unwrap();
        let payload = codec::frame(id, ev.encode().unwrap());
        let mut rec = rdkafka::producer::FutureRecord::to("tillstream.store-events")
            .key(ev.store_id())
            .payload(&payload);
        loop {
            match producer.send_result(rec) {
                Ok(f) => {
                    futs.push(f);
                    break;
                }
                // Queue full: wait for deliveries (back-pressure), then offer the record again.
                Err((_, r)) => {
                    rec = r;
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            }
        }
    }
    for f in futs {
        f.await.unwrap().unwrap();
    }
    println!(
        "\n== end to end from tansu: {n} events (produced at {:.0} ev/s) ==",
        n as f64 / t0.elapsed().as_secs_f64()
    );
    let mut targets = vec![(
        "sqlite".to_string(),
        dir.join("e2e.db").display().to_string(),
    )];
    if !flag("--no-pg") {
        use sqlx::Connection;
        let pg = stack.pg_url();
        let mut admin = sqlx::PgConnection::connect(&pg).await.unwrap();
        sqlx::query("CREATE DATABASE bench_e2e")
            .execute(&mut admin)
            .await
            .unwrap();
        targets.push((
            "postgres".to_string(),
            format!("{}/bench_e2e", pg.rsplit_once('/').unwrap().0),
        ));
    }
    let marks = high_watermarks(&kafka);
    for (label, url) in targets {
        let mut cfg = tillstream_inventory_projection::Config {
            kafka: kafka.clone(),
            group_id: format!("bench-{label}"),
            ..Default::default()
        };
        cfg.registry.url = registry.url.clone();
        cfg.database.url = url.clone();
        cfg.ops.listen = "127.0.0.1:0".parse().unwrap();
        cfg.batch.max_events = 5_000;
        let token = CancellationToken::new();
        let db = Db::connect(&cfg.database).await.unwrap();
        let _running = tillstream_inventory_projection::start(cfg, token.clone())
            .await
            .unwrap();
        // From the first committed batch (group join excluded) to caught up.
        let deadline = Instant::now() + Duration::from_secs(600);
        let first = loop {
            let off = db.live_offsets("tillstream.store-events").await.unwrap();
            if !off.is_empty() {
                break off.values().sum::<i64>();
            }
            assert!(Instant::now() < deadline, "no progress");
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        let m = measure(async {
            loop {
                let off = db.live_offsets("tillstream.store-events").await.unwrap();
                if off == marks {
                    break;
                }
                assert!(Instant::now() < deadline, "not caught up: {off:?}");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await;
        line(
            &format!("{label} end to end (decode + apply), batch ≤5000"),
            n - first as usize,
            &m,
            None,
        );
        token.cancel();
    }
}

fn high_watermarks(kafka: &tillstream_runtime::kafka::KafkaConfig) -> BTreeMap<i32, i64> {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    let mut c = kafka.client_config("bench-watermarks");
    c.set("group.id", "bench-watermarks");
    let consumer: BaseConsumer = c.create().unwrap();
    let topic = "tillstream.store-events";
    let md = consumer
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .unwrap();
    md.topics()[0]
        .partitions()
        .iter()
        .filter_map(|p| {
            let (_, hi) = consumer
                .fetch_watermarks(topic, p.id(), Duration::from_secs(10))
                .ok()?;
            (hi > 0).then_some((p.id(), hi))
        })
        .collect()
}
