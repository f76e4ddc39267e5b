//! Throughput of the finance export, printed (never asserted):
//! - ledger apply into SQLite: posting (pure) + gate read + the batch transaction (events, lines,
//!   closes, store-days, offsets), per batch, on one runtime thread; the baseline measured in the
//!   same run: plain multi-row INSERTs of the same event and line rows into bare tables (no keys,
//!   no gate, no bookkeeping), same batch size;
//! - export of one store-day of ~1M ledger lines: assign, read back, render (CSV, Parquet,
//!   manifest), deliver to a local folder (fsync + rename).
//!
//! Rates are per CPU-second of this process (user + system, /proc/self/stat), i.e. per core, and
//! per wall second. SQLite runs on sqlx's worker thread inside this process, so its work counts.
//!
//! `cargo bench -p tillstream-finance-export --bench ledger -- [--events N] [--batch N]
//!  [--export-lines N]`

use std::sync::Arc;
use std::time::Instant;

use sqlx::AssertSqlSafe;
use tillstream_contracts::*;
use tillstream_finance_export::config::DatabaseConfig;
use tillstream_finance_export::core::{Chart, Stores};
use tillstream_finance_export::db::{Db, ExportMeta, NewExport};
use tillstream_finance_export::decode::Input;
use tillstream_finance_export::export::Sink;
use tillstream_finance_export::exporter::deliver_to;
use tillstream_finance_export::processor::book;

fn arg(name: &str, default: usize) -> usize {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// CPU seconds (user + system) of this process so far.
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // After the command: state is field 0; utime 11, stime 12 (clock ticks, 100 per second).
    (ticks(11) + ticks(12)) / 100.0
}

/// A retail mix over 50 stores: 70% sales (1-3 lines), 5% refunds, 10% loyalty, 15% stock and
/// reservations (gate only), every event on business date `date`. Deterministic.
fn workload(n: usize, date: i32, stores: usize) -> Vec<Input> {
    (0..n)
        .map(|i| {
            let store = format!("s{:03}", i % stores);
            let device = format!("{store}-d{:02}", (i / stores) % 3);
            let seq = (i / (stores * 3)) as i64 + 1;
            let mut e: DeviceEvent = match i % 20 {
                0..=13 => samples::order(&store, &device, seq, 1 + i % 3).into(),
                14 => samples::sample(EventKind::OrderRefunded, &store, &device, seq).unwrap(),
                15 | 16 => {
                    samples::sample(EventKind::LoyaltyRedeemed, &store, &device, seq).unwrap()
                }
                _ => samples::sample(EventKind::InventoryAdjusted, &store, &device, seq).unwrap(),
            };
            let id = format!("{}-{i}", e.event_id());
            match &mut e {
                DeviceEvent::OrderCreated(x) => {
                    x.event_id = id;
                    x.business_date = date;
                }
                DeviceEvent::OrderRefunded(x) => {
                    x.event_id = id;
                    x.business_date = date;
                }
                DeviceEvent::LoyaltyRedeemed(x) => {
                    x.event_id = id;
                    x.business_date = date;
                }
                DeviceEvent::InventoryAdjusted(x) => x.event_id = id,
                _ => {}
            }
            Input::Event(Box::new(e))
        })
        .collect()
}

fn stores_csv(n: usize) -> Stores {
    let mut s = String::from("store_id,time_zone,currency,legal_entity\n");
    for i in 0..n {
        s.push_str(&format!("s{i:03},Europe/Berlin,EUR,E1\n"));
    }
    Stores::parse(&s).unwrap()
}

async fn open(dir: &std::path::Path, name: &str) -> Db {
    Db::connect(&DatabaseConfig {
        url: dir.join(name).display().to_string(),
        ..DatabaseConfig::default()
    })
    .await
    .unwrap()
}

fn main() {
    let events = arg("--events", 200_000);
    let batch = arg("--batch", 5_000);
    let export_lines = arg("--export-lines", 1_000_000);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let chart = Arc::new(Chart::embedded());
        let stores = Arc::new(stores_csv(50));
        let inputs = workload(events, 20_759, 50);
        let topic = "tillstream.store-events";

        // Ledger apply.
        let db = open(dir.path(), "ledger.db").await;
        let (cpu0, t0) = (cpu_seconds(), Instant::now());
        let mut lines = 0usize;
        let mut refused = 0usize;
        for (b, chunk) in inputs.chunks(batch).enumerate() {
            let ids: Vec<&str> = chunk.iter().filter_map(|i| i.id()).collect();
            let known = db.known(&ids).await.unwrap();
            let mut booked = Vec::with_capacity(chunk.len());
            for (k, input) in chunk.iter().enumerate() {
                if input.id().is_some_and(|id| known.contains(id)) {
                    continue;
                }
                let offset = (b * batch + k) as i64;
                if let Some((row, refusal)) = book(input, topic, 0, offset, &chart, &stores) {
                    refused += usize::from(refusal.is_some());
                    lines += row.lines.len();
                    booked.push(row);
                }
            }
            let next = [((topic.to_string(), 0), ((b + 1) * batch) as i64)].into();
            db.apply(&booked, &next, 0).await.unwrap();
        }
        let (apply_cpu, apply_wall) = (cpu_seconds() - cpu0, t0.elapsed().as_secs_f64());

        // Baseline: the same rows, plain INSERTs into bare tables, same batches.
        let base = open(dir.path(), "baseline.db").await;
        for t in [
            "CREATE TABLE bench_event (event_id TEXT, store_id TEXT, device_id TEXT, seq BIGINT, \
             business_date BIGINT, kind TEXT, order_ref TEXT, currency TEXT, n_lines BIGINT, \
             refused TEXT, topic TEXT, kafka_partition BIGINT, kafka_offset BIGINT)",
            "CREATE TABLE bench_line (event_id TEXT, line_no BIGINT, source TEXT, reference TEXT, \
             sku TEXT, tender TEXT, account_role TEXT, account_code TEXT, debit_minor BIGINT, \
             credit_minor BIGINT)",
        ] {
            sqlx::query(AssertSqlSafe(t)).execute(base.pool()).await.unwrap();
        }
        let rows: Vec<Vec<_>> = inputs
            .chunks(batch)
            .enumerate()
            .map(|(b, chunk)| {
                chunk
                    .iter()
                    .enumerate()
                    .filter_map(|(k, i)| book(i, topic, 0, (b * batch + k) as i64, &chart, &stores))
                    .map(|(row, _)| row)
                    .collect()
            })
            .collect();
        let (cpu0, t0) = (cpu_seconds(), Instant::now());
        for chunk in &rows {
            base.insert_plain(chunk).await.unwrap();
        }
        let (base_cpu, base_wall) = (cpu_seconds() - cpu0, t0.elapsed().as_secs_f64());

        println!("finance ledger apply into SQLite: {events} events ({lines} lines, {refused} refused), batches of {batch}");
        println!(
            "  ledger apply (post + gate + transaction): {:>9.0} events/s per core ({:.2} CPU s), {:>9.0} events/s wall ({:.2} s)",
            events as f64 / apply_cpu, apply_cpu, events as f64 / apply_wall, apply_wall
        );
        println!(
            "  baseline plain INSERT of the same rows:    {:>9.0} events/s per core ({:.2} CPU s), {:>9.0} events/s wall ({:.2} s)",
            events as f64 / base_cpu, base_cpu, events as f64 / base_wall, base_wall
        );
        println!("  ledger / baseline (CPU): {:.2}x the baseline's cost", apply_cpu / base_cpu);

        // Export of one store-day of ~export_lines lines: one store, every event on one date.
        let one = Arc::new(stores_csv(1));
        let per_event = lines as f64 / events as f64;
        let n = (export_lines as f64 / per_event) as usize;
        let day = open(dir.path(), "export.db").await;
        let inputs = workload(n, 20_760, 1);
        let mut day_lines = 0;
        for (b, chunk) in inputs.chunks(batch).enumerate() {
            let booked: Vec<_> = chunk
                .iter()
                .enumerate()
                .filter_map(|(k, i)| book(i, topic, 0, (b * batch + k) as i64, &chart, &one))
                .map(|(row, _)| row)
                .collect();
            day_lines += booked.iter().map(|r| r.lines.len()).sum::<usize>();
            let next = [((topic.to_string(), 0), ((b + 1) * batch) as i64)].into();
            day.apply(&booked, &next, 0).await.unwrap();
        }
        let t0 = Instant::now();
        let new = NewExport {
            store_id: "s000".into(),
            business_date: 20_760,
            kind: "day",
            name: "2026-11-03".into(),
            reason: "all_devices_closed",
            missing_close: vec![],
            recon: vec![],
        };
        let seq = day.assign_export(&new).await.unwrap();
        let t_assign = t0.elapsed().as_secs_f64();
        let meta = ExportMeta {
            store_id: "s000".into(),
            export_seq: seq,
            business_date: 20_760,
            kind: "day".into(),
            name: "2026-11-03".into(),
            reason: "all_devices_closed".into(),
            missing_close: vec![],
            delivered: false,
        };
        let out = dir.path().join("exports");
        let sink = Sink::Local(out.clone());
        let t1 = Instant::now();
        deliver_to(&day, &sink, &chart, &one, &meta).await.unwrap();
        let t_deliver = t1.elapsed().as_secs_f64();
        let size = |f: &str| std::fs::metadata(out.join("s000/2026-11-03").join(f)).map(|m| m.len()).unwrap_or(0);
        println!(
            "finance export of one store-day: {day_lines} lines: assign {:.2} s, read + render + deliver {:.2} s (ledger.csv {} MB, ledger.parquet {} MB)",
            t_assign,
            t_deliver,
            size("ledger.csv") / 1_000_000,
            size("ledger.parquet") / 1_000_000
        );
    });
}
