//! The database down while partitions are assigned, on real servers (tansu + PostgreSQL): the live
//! projection cannot read where its partitions start, waits for the database (not ready meanwhile)
//! instead of stopping, and once the database is back applies every event exactly once, including
//! the ones before the group's committed Kafka offsets (which are past the database's).

mod common;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use sqlx::Connection;
use tillstream_integration_tests::*;
use tillstream_inventory_projection::db::Db;
use tillstream_inventory_projection::{Config, Error};
use tillstream_runtime::CancellationToken;
use tillstream_runtime::kafka::{Assignment, KafkaConfig};
use tokio::task::JoinHandle;

const GROUP: &str = "it-projection-outage";

/// The test config with the local stack's static assignment (the partition hook runs when the
/// instance assigns itself its partitions) and a short wait per connection attempt.
fn config(kafka: &KafkaConfig, registry_url: &str, db_url: &str) -> Config {
    let mut cfg = common::config(kafka, registry_url, db_url, GROUP);
    cfg.kafka.assignment = Assignment::Static;
    cfg.database.acquire_timeout_ms = 2_000;
    cfg
}

/// The offsets `GROUP` has committed for the topic's partitions in `want`.
fn committed(kafka: &KafkaConfig, want: &BTreeMap<i32, i64>) -> BTreeMap<i32, i64> {
    let mut c = kafka.client_config("it-committed");
    c.set("group.id", GROUP);
    let consumer: BaseConsumer = c.create().unwrap();
    let mut tpl = TopicPartitionList::new();
    for p in want.keys() {
        tpl.add_partition(common::TOPIC, *p);
    }
    let got = consumer
        .committed_offsets(tpl, Duration::from_secs(10))
        .unwrap();
    got.elements()
        .iter()
        .filter_map(|e| match e.offset() {
            Offset::Offset(o) => Some((e.partition(), o)),
            _ => None,
        })
        .collect()
}

/// Polls `/readyz` until the "database" check satisfies `want` (returns its detail). Panics if the
/// projection stops meanwhile (the failure this test exists for) or after `timeout`.
async fn wait_for_database_check(
    service: &JoinHandle<Result<(), Error>>,
    ops: SocketAddr,
    what: &str,
    timeout: Duration,
    want: impl Fn(&common::Check) -> bool,
) -> String {
    let deadline = Instant::now() + timeout;
    loop {
        assert!(
            !service.is_finished(),
            "the projection stopped while waiting for: {what}"
        );
        let checks = common::readiness(ops).await;
        let db = checks.get("database").expect("a database check");
        if want(db) {
            return db.detail.clone();
        }
        assert!(
            Instant::now() < deadline,
            "not within {timeout:?}: {what}; database check {db:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_database_down_on_partition_assignment_is_waited_for_and_every_event_applied_once() {
    let _guard = ExitOnPanic;
    tillstream_runtime::telemetry::init_tracing("projection-test");
    let stack = Stack::start(&[Svc::Tansu, Svc::Postgres], None).unwrap();
    let work = tempfile::tempdir().unwrap();
    let kafka = stack.kafka();
    apply_topology(&kafka).await.unwrap();
    let registry = TestRegistry::start().await.unwrap();
    let client = registry.client();
    let events = common::stream(4, 20);
    let (first, second) = events.split_at(events.len() / 2);

    eprintln!("[outage] 1. The group commits the first half (applied into another database)");
    common::produce(&kafka, &client, first).await;
    let first_goal = common::high_watermarks(&kafka);
    {
        let url = work.path().join("earlier.db").display().to_string();
        let token = CancellationToken::new();
        let running = tillstream_inventory_projection::start(
            config(&kafka, &registry.url, &url),
            token.clone(),
        )
        .await
        .unwrap();
        let db = Db::connect(&common::db_config(&url)).await.unwrap();
        common::wait_caught_up(&db, &first_goal, Duration::from_secs(120)).await;
        token.cancel();
        running.wait().await.unwrap();
    }
    assert_eq!(
        committed(&kafka, &first_goal),
        first_goal,
        "Kafka's committed offsets must be past the new database's for the test to mean anything"
    );
    common::produce(&kafka, &client, second).await;
    let goal = common::high_watermarks(&kafka);
    assert_eq!(
        goal.values().sum::<i64>() as usize,
        events.len(),
        "every event is in the topic"
    );

    eprintln!("[outage] 2. The projection opens a fresh database while the broker is down");
    let pg = stack.pg_url();
    let mut admin = sqlx::PgConnection::connect(&pg).await.unwrap();
    sqlx::query("CREATE DATABASE projection_outage")
        .execute(&mut admin)
        .await
        .unwrap();
    admin.close().await.unwrap();
    let url = format!("{}/projection_outage", pg.rsplit_once('/').unwrap().0);
    stack.stop(Svc::Tansu).unwrap();
    let token = CancellationToken::new();
    let running =
        tillstream_inventory_projection::start(config(&kafka, &registry.url, &url), token.clone())
            .await
            .unwrap();
    let ops = running.ops_addr;
    let service = tokio::spawn(running.wait());
    wait_for_database_check(
        &service,
        ops,
        "database opened",
        Duration::from_secs(60),
        |c| c.ready,
    )
    .await;

    eprintln!("[outage] 3. The database goes down, then the partitions arrive");
    stack.stop(Svc::Postgres).unwrap();
    stack.start_svc(Svc::Tansu).unwrap();
    let detail = wait_for_database_check(
        &service,
        ops,
        "waiting for the database to read the start offsets",
        Duration::from_secs(120),
        |c| !c.ready && c.live && c.detail.contains("start_offsets"),
    )
    .await;
    eprintln!("[outage] projection waiting: {detail}");

    eprintln!("[outage] 4. The database is back: the projection resumes by itself");
    stack.start_svc(Svc::Postgres).unwrap();
    let db = Db::connect(&common::db_config(&url)).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        assert!(
            !service.is_finished(),
            "the projection stopped after the database came back"
        );
        if db.live_offsets(common::TOPIC).await.unwrap() == goal {
            break;
        }
        assert!(Instant::now() < deadline, "not caught up with {goal:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    wait_for_database_check(
        &service,
        ops,
        "database ready again",
        Duration::from_secs(30),
        |c| c.ready,
    )
    .await;

    eprintln!("[outage] 5. Every event applied exactly once");
    let live = common::live_dump(&db).await;
    assert!(
        live.contains(&format!("## applied_event ({} rows)", events.len())),
        "{}",
        live.lines().next().unwrap_or_default()
    );
    let reference = common::reference_dump(&kafka, &client, work.path()).await;
    if live != reference {
        let (a, b) = tillstream_inventory_projection::db::first_difference(&live, &reference);
        panic!(
            "the live set differs from the stream applied once:\n  live:      {a}\n  reference: {b}"
        );
    }
    token.cancel();
    service.await.unwrap().unwrap();
}
