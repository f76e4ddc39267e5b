//! Exactly-once into the database, end to end on real servers (tansu + PostgreSQL / SQLite):
//! the same stream applied once, applied twice (database offsets forgotten, every event
//! redelivered), and applied by the real binary killed with SIGKILL in the middle of a batch
//! transaction, gives byte-identical tables (canonical dump). Then `rebuild` replays the topic from
//! offset 0 into the other table set while the live consumer runs, proves it equal and switches.
//! Poison records are dead-lettered and skipped.

mod common;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use sqlx::Connection;
use tillstream_contracts::{DeviceEvent, codec, samples};
use tillstream_integration_tests::*;
use tillstream_inventory_projection::db::{Color, Db};
use tillstream_inventory_projection::rebuild::{RebuildOptions, Verdict, rebuild};
use tillstream_runtime::CancellationToken;

const BIN: &str = env!("CARGO_BIN_EXE_tillstream-inventory-projection");

fn spawn_binary(
    stack: &Stack,
    registry_url: &str,
    db_url: &str,
    group: &str,
    hold_ms: u64,
    marker: &Path,
    log: &Path,
) -> Child {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .unwrap();
    let p = "TILLSTREAM_INVENTORY_PROJECTION__";
    let mut cmd = Command::new(BIN);
    for (k, _) in std::env::vars() {
        if k.starts_with("TILLSTREAM_") {
            cmd.env_remove(k);
        }
    }
    cmd.arg("run")
        .env(format!("{p}KAFKA__BROKERS"), stack.brokers())
        .env(format!("{p}KAFKA__SESSION_TIMEOUT_MS"), "6000")
        .env(format!("{p}REGISTRY__URL"), registry_url)
        .env(format!("{p}DATABASE__URL"), db_url)
        .env(format!("{p}GROUP_ID"), group)
        .env(format!("{p}BATCH__MAX_EVENTS"), "97")
        .env(format!("{p}BATCH__LINGER_MS"), "10")
        .env(format!("{p}FAULT__HOLD_BATCH_OPEN_MS"), hold_ms.to_string())
        .env(format!("{p}FAULT__MARKER_FILE"), marker)
        .env("TILLSTREAM_LOG", "info")
        .stdout(Stdio::null())
        .stderr(log);
    cmd.spawn().unwrap()
}

/// Runs a CLI subcommand of the binary to completion; returns stdout (panics on failure).
fn cli(stack: &Stack, registry_url: &str, db_url: &str, args: &[&str]) -> String {
    let p = "TILLSTREAM_INVENTORY_PROJECTION__";
    let mut cmd = Command::new(BIN);
    for (k, _) in std::env::vars() {
        if k.starts_with("TILLSTREAM_") {
            cmd.env_remove(k);
        }
    }
    let out = cmd
        .args(args)
        .env(format!("{p}KAFKA__BROKERS"), stack.brokers())
        .env(format!("{p}REGISTRY__URL"), registry_url)
        .env(format!("{p}DATABASE__URL"), db_url)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{args:?}: {:?}\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// Waits for a child to exit (bounded), returning its status.
async fn wait_exit(child: &mut Child, timeout: Duration) -> std::process::ExitStatus {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(s) = child.try_wait().unwrap() {
            return s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("process {} did not exit within {timeout:?}", child.id());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn scenario(stack: &Stack, url_for: impl Fn(&str) -> String) {
    // The in-process projection's logs land in the test's captured output (shown on failure).
    tillstream_runtime::telemetry::init_tracing("projection-test");
    let work = tempfile::tempdir().unwrap();
    let kafka = stack.kafka();
    apply_topology(&kafka).await.unwrap();
    let registry = TestRegistry::start().await.unwrap();
    let client = registry.client();

    // The stream, with two poison records in the middle, and two orders of 5·10^18 minor units
    // (one in each half) whose sum would overflow: the second is dead-lettered, never wrapped.
    let mut events = common::stream(8, 40);
    let big = |seq: i64| -> DeviceEvent {
        let mut o = samples::order("s001", "s001-d01", seq, 1);
        o.lines[0].sku = "SKU-OVERFLOW".into();
        o.lines[0].qty = 1;
        o.lines[0].unit_price.amount_minor = 5_000_000_000_000_000_000;
        o.lines[0].tax.amount_minor = 0;
        o.lines[0].discounts.clear();
        o.into()
    };
    events.insert(0, big(1_001));
    events.push(big(1_002));
    let refused = 1;
    let (first, second) = events.split_at(events.len() / 2);
    common::produce(&kafka, &client, first).await;
    common::produce_raw(&kafka, "s001", b"{\"not\":\"avro\"}").await;
    common::produce_raw(&kafka, "s002", &codec::frame(999_999, vec![2, 4, 6])).await;
    common::produce(&kafka, &client, second).await;
    let goal = common::high_watermarks(&kafka);
    let total: i64 = goal.values().sum();
    assert_eq!(total as usize, events.len() + 2);

    eprintln!("[scenario] 1. Applied once");
    // 1. Applied once, by the live projection in-process.
    let url_a = url_for("once");
    let token = CancellationToken::new();
    let cfg_a = common::config(&kafka, &registry.url, &url_a, "it-projection-a");
    let running = tillstream_inventory_projection::start(cfg_a.clone(), token.clone())
        .await
        .unwrap();
    let db_a = Db::connect(&common::db_config(&url_a)).await.unwrap();
    common::wait_caught_up(&db_a, &goal, Duration::from_secs(120)).await;
    let reference = common::live_dump(&db_a).await;
    assert!(
        reference.contains(&format!(
            "## applied_event ({} rows)",
            events.len() - refused
        )),
        "{reference}"
    );
    let (_, metrics) = common::http_get(running.ops_addr, "/metrics").await;
    assert!(
        metrics.contains("tillstream_inventory_projection_events_applied_total"),
        "{metrics}"
    );

    // Both poison records reached the dead-letter topic, with their reasons.
    let dlq = {
        let k = kafka.clone();
        tokio::task::spawn_blocking(move || {
            read_all(&k, "tillstream.dead-letter", Duration::from_secs(30))
        })
        .await
        .unwrap()
        .unwrap()
    };
    let mut reasons: Vec<String> = dlq
        .iter()
        .filter_map(|r| {
            r.header("tillstream-dead-letter-reason")
                .map(str::to_string)
        })
        .collect();
    reasons.sort();
    assert_eq!(
        reasons,
        vec!["aggregate_overflow", "not_framed", "unknown_schema_id"]
    );

    eprintln!("[scenario] 2. Applied twice");
    // 2. Applied twice: stop, forget the offsets in the database, start again (another group, so
    //    Kafka's committed offsets do not help): every event is redelivered and refused.
    token.cancel();
    running.wait().await.unwrap();
    db_a.reset_offsets(Color::Blue).await.unwrap();
    let token = CancellationToken::new();
    let cfg_b = common::config(&kafka, &registry.url, &url_a, "it-projection-b");
    let running = tillstream_inventory_projection::start(cfg_b.clone(), token.clone())
        .await
        .unwrap();
    common::wait_caught_up(&db_a, &goal, Duration::from_secs(120)).await;
    assert_eq!(common::live_dump(&db_a).await, reference, "applied twice");

    eprintln!("[scenario] 3. kill -9");
    // 3. kill -9 in the middle of a batch: the binary holds its first batch with new events open
    //    (after writing every row, before COMMIT) and is killed there.
    let url_c = url_for("killed");
    let marker = work.path().join("holding");
    let log = work.path().join("binary.log");
    let mut child = spawn_binary(
        stack,
        &registry.url,
        &url_c,
        "it-projection-c",
        120_000,
        &marker,
        &log,
    );
    wait_for_file(&marker, Duration::from_secs(120)).await;
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    let db_c = Db::connect(&common::db_config(&url_c)).await.unwrap();
    let partial = db_c.live_offsets(common::TOPIC).await.unwrap();
    assert_ne!(partial, goal, "the held batch must not have committed");
    let applied_rows: i64 = {
        use sqlx::Row;
        sqlx::query("SELECT COUNT(*) FROM blue_applied_event")
            .fetch_one(db_c.pool())
            .await
            .unwrap()
            .try_get(0)
            .unwrap()
    };
    assert_eq!(applied_rows, 0, "nothing of the killed batch is visible");
    let _ = std::fs::remove_file(&marker);
    let mut child = spawn_binary(
        stack,
        &registry.url,
        &url_c,
        "it-projection-c",
        0,
        &marker,
        &log,
    );
    common::wait_caught_up(&db_c, &goal, Duration::from_secs(120)).await;
    assert_eq!(
        common::live_dump(&db_c).await,
        reference,
        "killed mid-batch"
    );
    // SIGTERM: the binary finishes what it holds and exits cleanly.
    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    let status = wait_exit(&mut child, Duration::from_secs(60)).await;
    let log_text = std::fs::read_to_string(&log).unwrap();
    assert!(
        status.success(),
        "exit after SIGTERM: {status:?}\n{log_text}"
    );
    // The binary took its start offsets from the database inside the rebalance hook.
    assert!(
        log_text.contains("start offsets from the database"),
        "{log_text}"
    );
    assert!(!log_text.contains("will seek"), "{log_text}");

    eprintln!("[scenario] 4. Rebuild");
    // 4. Rebuild from offset 0 while the live consumer (run 2) keeps running: equal, switched.
    let report = rebuild(
        &cfg_b,
        &RebuildOptions {
            progress: false,
            ..RebuildOptions::default()
        },
        &CancellationToken::new(),
    )
    .await
    .unwrap();
    assert_eq!(report.verdict, Verdict::Equal);
    assert!(report.switched);
    assert_eq!(report.color, Color::Green);
    assert_eq!(report.records as usize, events.len() + 2);
    assert_eq!(db_a.active_color().await.unwrap(), Color::Green);
    assert_eq!(db_a.dump(Color::Green).await.unwrap(), reference);

    eprintln!("[scenario] The CLI");
    // The CLI: rebuild the other set (blue) without switching, then compare the dump hashes.
    let out = cli(
        stack,
        &registry.url,
        &url_a,
        &["rebuild", "--no-switch", "--quiet"],
    );
    assert!(
        out.contains("equal to the live set") && out.contains("views unchanged"),
        "{out}"
    );
    let green = cli(
        stack,
        &registry.url,
        &url_a,
        &["dump", "--hash", "--color", "green"],
    );
    let blue = cli(
        stack,
        &registry.url,
        &url_a,
        &["dump", "--hash", "--color", "blue"],
    );
    assert_eq!(green, blue);
    assert_eq!(
        green.trim(),
        format!("{:032x}", xxhash_rust::xxh3::xxh3_128(reference.as_bytes()))
    );
    assert_eq!(db_a.active_color().await.unwrap(), Color::Green);

    eprintln!("[scenario] 5. Rebuild (into blue)");
    // 5. Rebuild (into blue) while new events keep arriving and the live consumer keeps writing
    //    green: the rebuild catches up with the moving live set, compares under the state lock and
    //    switches; nothing is lost or doubled across the switch (a second replay of the whole topic
    //    equals the live set afterwards).
    let extra: Vec<_> = common::stream(9, 41)
        .into_iter()
        .filter(|e| e.seq() == 41 || e.store_id() == "s008")
        .collect();
    let n_extra = extra.len();
    let extra_copy = extra.clone();
    let producer = {
        let (kafka, client) = (kafka.clone(), client.clone());
        tokio::spawn(async move {
            for chunk in extra.chunks(10) {
                common::produce(&kafka, &client, chunk).await;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
    };
    let report = rebuild(
        &cfg_b,
        &RebuildOptions {
            progress: false,
            ..RebuildOptions::default()
        },
        &CancellationToken::new(),
    )
    .await
    .unwrap();
    assert_eq!(report.verdict, Verdict::Equal);
    assert_eq!(report.color, Color::Blue);
    producer.await.unwrap();
    eprintln!("[scenario] rebuild 5 done: {report:?}");
    let goal2 = common::high_watermarks(&kafka);
    common::wait_caught_up(&db_a, &goal2, Duration::from_secs(120)).await;
    assert_eq!(db_a.active_color().await.unwrap(), Color::Blue);
    let live = db_a.dump(Color::Blue).await.unwrap();
    // Some extra events reuse event ids of the first stream (device d01's seq 41 was its day
    // close there): the gate keeps the first of each id.
    let distinct: std::collections::BTreeSet<&str> = events
        .iter()
        .chain(extra_copy.iter())
        .map(|e| e.event_id())
        .collect();
    assert!(
        distinct.len() < events.len() + n_extra,
        "the stream has id reuse"
    );
    assert!(
        live.contains(&format!(
            "## applied_event ({} rows)",
            distinct.len() - refused
        )),
        "{}",
        live.lines().next().unwrap_or_default()
    );
    let out = cli(
        stack,
        &registry.url,
        &url_a,
        &["rebuild", "--no-switch", "--quiet"],
    );
    assert!(out.contains("equal to the live set"), "{out}");
    assert_eq!(db_a.dump(Color::Green).await.unwrap(), live);
    token.cancel();
    running.wait().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn exactly_once_on_sqlite() {
    let _guard = ExitOnPanic;
    let stack = Stack::start(&[Svc::Tansu], None).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path().to_path_buf();
    scenario(&stack, |name| {
        base.join(format!("{name}.db")).display().to_string()
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn exactly_once_on_postgres() {
    let _guard = ExitOnPanic;
    let stack = Stack::start(&[Svc::Tansu, Svc::Postgres], None).unwrap();
    let base = stack.pg_url();
    let mut admin = sqlx::PgConnection::connect(&base).await.unwrap();
    for name in ["once", "killed"] {
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "CREATE DATABASE projection_{name}"
        )))
        .execute(&mut admin)
        .await
        .unwrap();
    }
    let prefix = base.rsplit_once('/').unwrap().0.to_string();
    scenario(&stack, |name| format!("{prefix}/projection_{name}")).await;
}
