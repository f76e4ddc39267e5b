//! The batch transaction against real databases, without Kafka: any split of the stream into
//! batches, and applying it again, give byte-identical tables; PostgreSQL and SQLite give the same
//! canonical dump; the analyst views answer on both.

mod common;

use std::collections::BTreeMap;

use sqlx::Row;
use tillstream_contracts::*;
use tillstream_integration_tests::{Stack, Svc};
use tillstream_inventory_projection::db::{
    Color, Db, FaultConfig, Target, rejection_reason, view_names,
};
use tillstream_inventory_projection::model::{Envelope, ProjectionParams};
use tillstream_inventory_projection::reorder_points;
use tillstream_runtime::{Classify, ErrorClass};

/// The stream as Kafka would deliver it: store-keyed partitions, offsets in order, record
/// timestamps some seconds after the event (every 13th event buffered offline for 20 minutes).
fn envelopes(events: Vec<DeviceEvent>) -> Vec<Envelope> {
    let mut next = BTreeMap::<i32, i64>::new();
    events
        .into_iter()
        .enumerate()
        .map(|(i, event)| {
            let partition = (xxhash_rust::xxh3::xxh3_64(event.store_id().as_bytes()) % 4) as i32;
            let o = next.entry(partition).or_insert(0);
            let offset = *o;
            *o += 1;
            let lag = if i % 13 == 0 { 1_200_000 } else { 1_500 };
            Envelope {
                partition,
                offset,
                record_ts: event.occurred_at() + lag,
                event,
            }
        })
        .collect()
}

async fn apply_in(db: &Db, envs: &[Envelope], batch: usize) -> (usize, usize) {
    let (mut new, mut dup) = (0, 0);
    for chunk in envs.chunks(batch) {
        let mut next = BTreeMap::new();
        for e in chunk {
            next.insert(e.partition, e.offset + 1);
        }
        let a = db
            .apply(
                Target::Live,
                common::TOPIC,
                chunk,
                &next,
                &ProjectionParams::default(),
                &FaultConfig::default(),
            )
            .await
            .unwrap();
        new += a.new_events;
        dup += a.duplicates;
    }
    (new, dup)
}

async fn sqlite(dir: &tempfile::TempDir, name: &str) -> Db {
    let path = dir.path().join(name);
    Db::connect(&common::db_config(path.to_str().unwrap()))
        .await
        .unwrap()
}

async fn check_views(db: &Db) {
    db.ensure_views().await.unwrap();
    for v in view_names() {
        let n: i64 = sqlx::query(sqlx::AssertSqlSafe(format!("SELECT COUNT(*) FROM {v}")))
            .fetch_one(db.pool())
            .await
            .unwrap_or_else(|e| panic!("view {v}: {e}"))
            .try_get(0)
            .unwrap();
        assert!(n >= 0);
    }
}

fn dedupe_check(dump: &str) {
    // Sanity: the stream moved stock, booked sales, tracked reservations and stores.
    for t in [
        "stock",
        "stock_movement",
        "sales_hourly",
        "reservation",
        "store_sync",
    ] {
        let header = dump
            .lines()
            .find(|l| l.starts_with(&format!("## {t} (")))
            .unwrap();
        assert!(!header.contains("(0 rows)"), "{header}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn sqlite_any_batch_split_and_a_replay_give_byte_identical_tables() {
    let envs = envelopes(common::stream(6, 60));
    let n = envs.len();
    let dir = tempfile::tempdir().unwrap();

    let once = sqlite(&dir, "once.db").await;
    let before = tillstream_runtime::clock::now_ms();
    assert_eq!(apply_in(&once, &envs, n).await, (n, 0));
    let after = tillstream_runtime::clock::now_ms();
    // Every gate row says when it was applied (the latency bench reads it), within this apply.
    let row = sqlx::query(
        "SELECT COUNT(*), MIN(applied_at_ms), MAX(applied_at_ms) FROM blue_applied_event",
    )
    .fetch_one(once.pool())
    .await
    .unwrap();
    let (count, min, max): (i64, Option<i64>, Option<i64>) = (row.get(0), row.get(1), row.get(2));
    assert_eq!(count, n as i64);
    assert!(
        min.is_some_and(|m| m >= before) && max.is_some_and(|m| m <= after),
        "applied_at_ms {min:?}..{max:?} outside {before}..{after}"
    );
    let reference = once.dump(Color::Blue).await.unwrap();
    dedupe_check(&reference);

    let small = sqlite(&dir, "small.db").await;
    assert_eq!(apply_in(&small, &envs, 7).await, (n, 0));
    assert_eq!(small.dump(Color::Blue).await.unwrap(), reference);

    // Applied twice: the second pass (other batch boundaries) is refused event by event.
    let twice = sqlite(&dir, "twice.db").await;
    apply_in(&twice, &envs, 50).await;
    assert_eq!(apply_in(&twice, &envs, 13).await, (0, n));
    assert_eq!(twice.dump(Color::Blue).await.unwrap(), reference);

    // A duplicate copy of an event later in the stream (dedup failed upstream) changes nothing
    // but the offsets.
    let mut with_dup = envs.clone();
    let mut copy = envs[5].clone();
    copy.offset = 1_000_000;
    with_dup.push(copy);
    let dup_db = sqlite(&dir, "dup.db").await;
    assert_eq!(apply_in(&dup_db, &with_dup, 64).await, (n, 1));
    let strip = |d: &str| {
        d.lines()
            .filter(|l| !l.starts_with(common::TOPIC) && !l.starts_with("## consumer_offset"))
            .collect::<Vec<_>>()
            .join("\n")
    };
    assert_eq!(
        strip(&dup_db.dump(Color::Blue).await.unwrap()),
        strip(&reference)
    );
    check_views(&once).await;
}

fn adjust(seq: i64, kind: AdjustmentKind, qty: i32, expected: Option<i32>) -> DeviceEvent {
    samples::adjustment("s1", "s1-d1", seq, kind, "SKU-A", qty, expected)
}

fn sale(seq: i64, qty: i32) -> DeviceEvent {
    let mut o = samples::order("s1", "s1-d1", seq, 1);
    o.lines[0].sku = "SKU-A".into();
    o.lines[0].qty = qty;
    o.into()
}

#[tokio::test(flavor = "multi_thread")]
async fn stock_semantics_negative_flag_and_reorder_view_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let db = sqlite(&dir, "semantics.db").await;
    let envs = envelopes(vec![
        adjust(1, AdjustmentKind::Receipt, 10, None),
        sale(2, 3),                                   // 7
        adjust(3, AdjustmentKind::Count, 6, Some(7)), // variance -1 -> 6
        adjust(4, AdjustmentKind::Count, 20, None),   // blind count -> 20
        sale(5, 25),                                  // -5: recorded, flagged
    ]);
    // One event per batch, so the blind count meets a stored row (the overwrite path).
    apply_in(&db, &envs, 1).await;
    let row = sqlx::query(
        "SELECT on_hand, version, below_zero, last_event_id FROM stock_on_hand WHERE sku = 'SKU-A'",
    )
    .fetch_one(db.pool())
    .await;
    // Views exist only after ensure_views (the live consumer creates them at start).
    assert!(row.is_err());
    db.ensure_views().await.unwrap();
    let row = sqlx::query(
        "SELECT on_hand, version, below_zero, last_event_id FROM stock_on_hand WHERE sku = 'SKU-A'",
    )
    .fetch_one(db.pool())
    .await
    .unwrap();
    assert_eq!(row.try_get::<i64, _>(0).unwrap(), -5);
    assert_eq!(row.try_get::<i64, _>(1).unwrap(), 5);
    assert_eq!(row.try_get::<i64, _>(2).unwrap(), 1);
    assert_eq!(
        row.try_get::<String, _>(3).unwrap(),
        envs[4].event.event_id()
    );
    let ledger: Vec<(String, Option<i64>)> = sqlx::query(
        "SELECT movement, qty_delta FROM stock_movement WHERE sku = 'SKU-A' ORDER BY kafka_offset",
    )
    .fetch_all(db.pool())
    .await
    .unwrap()
    .iter()
    .map(|r| (r.try_get(0).unwrap(), r.try_get(1).unwrap()))
    .collect();
    assert_eq!(
        ledger,
        vec![
            ("RECEIPT".into(), Some(10)),
            ("SALE".into(), Some(-3)),
            ("COUNT_VARIANCE".into(), Some(-1)),
            ("COUNT_SET".into(), None),
            ("SALE".into(), Some(-25)),
        ]
    );
    // The same events in one batch give the same row.
    let one = sqlite(&dir, "semantics-one.db").await;
    apply_in(&one, &envs, 5).await;
    assert_eq!(
        one.dump(Color::Blue).await.unwrap(),
        db.dump(Color::Blue).await.unwrap()
    );

    assert_eq!(
        db.upsert_reorder_points(
            &reorder_points::parse("store_id,sku,reorder_point,reorder_qty\n*,SKU-A,2,10\n")
                .unwrap()
        )
        .await
        .unwrap(),
        1
    );
    let below: Vec<(String, i64)> =
        sqlx::query("SELECT sku, reorder_point FROM stock_below_reorder_point")
            .fetch_all(db.pool())
            .await
            .unwrap()
            .iter()
            .map(|r| (r.try_get(0).unwrap(), r.try_get(1).unwrap()))
            .collect();
    assert_eq!(below, vec![("SKU-A".to_string(), 2)]);
}

#[tokio::test(flavor = "multi_thread")]
async fn postgres_and_sqlite_project_the_same_stream_to_the_same_dump() {
    let stack = Stack::start(&[Svc::Postgres], None).unwrap();
    let envs = envelopes(common::stream(6, 60));
    let n = envs.len();
    let dir = tempfile::tempdir().unwrap();
    let lite = sqlite(&dir, "ref.db").await;
    apply_in(&lite, &envs, n).await;
    let reference = lite.dump(Color::Blue).await.unwrap();

    let pg = Db::connect(&common::db_config(&stack.pg_url()))
        .await
        .unwrap();
    assert_eq!(apply_in(&pg, &envs, 11).await, (n, 0));
    assert_eq!(apply_in(&pg, &envs, 500).await, (0, n));
    let dump = pg.dump(Color::Blue).await.unwrap();
    if dump != reference {
        let (a, b) = tillstream_inventory_projection::db::first_difference(&dump, &reference);
        panic!("postgres and sqlite differ:\n  pg:     {a}\n  sqlite: {b}");
    }
    check_views(&pg).await;
    // Migrations are idempotent: connecting again changes nothing.
    let again = Db::connect(&common::db_config(&stack.pg_url()))
        .await
        .unwrap();
    assert_eq!(again.dump(Color::Blue).await.unwrap(), reference);
}

/// An order of `amount` minor units on one line of SKU-X, qty 1, no tax, no discount.
fn order_of(seq: i64, amount: i64) -> DeviceEvent {
    let mut o = samples::order("s1", "s1-d1", seq, 1);
    o.lines[0].sku = "SKU-X".into();
    o.lines[0].qty = 1;
    o.lines[0].unit_price.amount_minor = amount;
    o.lines[0].tax.amount_minor = 0;
    o.lines[0].discounts.clear();
    o.into()
}

/// Two orders of 5·10^18 minor units, each valid on its own, in separate batches: the second is
/// refused as `aggregate_overflow` (by PostgreSQL itself, by the triggers on SQLite), nothing of it
/// is written, and the row keeps the first order's exact integer sum.
async fn a_sum_that_would_overflow_is_refused_not_wrapped(db: &Db) {
    const FIVE_QUINTILLION: i64 = 5_000_000_000_000_000_000;
    // Same hour: the two orders land on one sales_hourly row.
    let envs = envelopes(vec![
        order_of(1, FIVE_QUINTILLION),
        order_of(2, FIVE_QUINTILLION),
    ]);
    let apply = |env: &Envelope| {
        let next = BTreeMap::from([(env.partition, env.offset + 1)]);
        let env = env.clone();
        async move {
            db.apply(
                Target::Live,
                common::TOPIC,
                std::slice::from_ref(&env),
                &next,
                &ProjectionParams::default(),
                &FaultConfig::default(),
            )
            .await
        }
    };
    apply(&envs[0]).await.expect("the first order fits");
    let err = apply(&envs[1])
        .await
        .expect_err("the second order must be refused");
    assert_eq!(err.class(), ErrorClass::Poison, "{err}");
    assert_eq!(rejection_reason(&err), "aggregate_overflow", "{err}");
    // Refused together in one batch too (the model's own check).
    let both = db
        .apply(
            Target::Live,
            common::TOPIC,
            &envs[1..],
            &BTreeMap::from([(envs[1].partition, envs[1].offset + 1)]),
            &ProjectionParams::default(),
            &FaultConfig::default(),
        )
        .await;
    assert!(both.is_err(), "refused in a batch as well");

    let row = sqlx::query(
        "SELECT CAST(gross_minor AS TEXT) AS g, sale_lines FROM blue_sales_hourly WHERE sku = 'SKU-X'",
    )
    .fetch_one(db.pool())
    .await
    .expect("reading sales_hourly");
    let gross: String = row.try_get("g").unwrap();
    let lines: i64 = row.try_get("sale_lines").unwrap();
    assert_eq!((gross.as_str(), lines), ("5000000000000000000", 1));
    let gate: i64 = sqlx::query("SELECT COUNT(*) AS n FROM blue_applied_event")
        .fetch_one(db.pool())
        .await
        .expect("reading the gate")
        .try_get("n")
        .unwrap();
    assert_eq!(gate, 1, "the refused event is not in the gate");
}

#[tokio::test(flavor = "multi_thread")]
async fn sqlite_refuses_a_sum_that_would_overflow() {
    let dir = tempfile::tempdir().unwrap();
    let db = sqlite(&dir, "overflow.db").await;
    a_sum_that_would_overflow_is_refused_not_wrapped(&db).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn postgres_refuses_a_sum_that_would_overflow() {
    let stack = Stack::start(&[Svc::Postgres], None).unwrap();
    let db = Db::connect(&common::db_config(&stack.pg_url()))
        .await
        .unwrap();
    a_sum_that_would_overflow_is_refused_not_wrapped(&db).await;
}
