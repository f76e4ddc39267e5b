//! Faults on the real stack with the real binary: kill -9 mid-stream and restart, and a rebalance
//! between two instances (one joins, then the first leaves). No event may go missing; duplicates
//! are allowed only within the at-least-once window (at most one batch in flight per crash), and
//! the measured number is printed. Sequence gaps and collisions must still come out exact.

mod common;

use std::collections::BTreeSet;
use std::process::Child;
use std::time::{Duration, Instant};

use common::*;
use tillstream_runtime::kafka::KafkaConfig;

const MAX_BATCH: usize = 1000;

fn spec(seed: u64) -> Spec {
    Spec {
        seed,
        stores: 100,
        devices_per_store: 2,
        per_device: 200,
        dup_rate: 0.2,
        altered_rate: 0.05,
        missing: 20,
        garbage: 0,
        window: 20,
    }
}

/// Produces the workload in slices, so the service runs while input still arrives.
fn feed_in_background(kafka: KafkaConfig, records: Vec<Raw>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        for slice in records.chunks(2000) {
            produce(&kafka, slice).await;
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
}

/// Waits until the group has committed at least `n` input records (bounded).
async fn wait_committed_at_least(kafka: &KafkaConfig, n: i64, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    loop {
        let kc = kafka.clone();
        let got: i64 = tokio::task::spawn_blocking(move || {
            committed(&kc, &(0..12).collect::<Vec<_>>()).values().sum()
        })
        .await
        .unwrap();
        if got >= n {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "committed {got} < {n} in {timeout:?}"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// SIGTERM, then wait (bounded) for the exit.
async fn stop(mut child: Child) {
    signal(&child, "-TERM");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            assert!(status.success(), "dedup exited with {status}");
            return;
        }
        if Instant::now() > deadline {
            signal(&child, "-KILL");
            let _ = child.wait();
            panic!("dedup did not stop within 60 s of SIGTERM");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn dump_logs(dir: &std::path::Path) {
    let mut names: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .collect();
    names.sort();
    // The newest run is the one that did not catch up: it gets the most lines, and comes last.
    let newest = names.len().saturating_sub(1);
    for (i, p) in names.iter().enumerate() {
        let text = std::fs::read_to_string(p).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        let keep = if i == newest { 120 } else { 12 };
        eprintln!(
            "==== {} (last {keep} of {} lines)",
            p.display(),
            lines.len()
        );
        for l in lines.iter().skip(lines.len().saturating_sub(keep)) {
            eprintln!("{l}");
        }
    }
    if let Ok(to) = std::env::var("TILLSTREAM_TEST_KEEP_LOGS") {
        for p in &names {
            let _ = std::fs::copy(p, std::path::Path::new(&to).join(p.file_name().unwrap()));
        }
    }
}

async fn kill9(mut child: Child) {
    signal(&child, "-KILL");
    let _ = child.wait();
}

/// Checks the outputs; returns the number of duplicate copies in the output topic.
async fn verify(env: &Env, w: &Workload) -> usize {
    let out = read(&env.kafka, OUT).await;
    let (missing, dups, extra) = check_exactly_once(w, &out);
    assert_eq!((missing, extra), (0, 0), "missing / unexpected event ids");
    check_order(w, &out);
    let conflicts = conflicts(env).await;
    let distinct: BTreeSet<&str> = conflicts.iter().map(|c| c.conflict_id.as_str()).collect();
    assert_eq!(
        distinct.len(),
        w.altered,
        "every collision reported (ids are stable)"
    );
    assert_eq!(open_missing(&gaps(env).await), w.dropped, "open gaps exact");
    eprintln!(
        "output: {} records for {} events: {dups} duplicate copies; {} conflict records for {} collisions",
        out.len(),
        w.ids.len(),
        conflicts.len(),
        w.altered
    );
    dups
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heavy_fault_kill9_mid_stream_then_restart_loses_nothing() {
    let env = Env::start().await;
    let w = workload(&env.client, &spec(11)).await;
    let total = w.records.len() as i64;
    let logs = tempfile::tempdir().unwrap();
    let feeder = feed_in_background(env.kafka.clone(), w.records.clone());
    let vars = env.bin_env("dedup-crash", MAX_BATCH);

    let mut kills = 0;
    let mut child = spawn_bin(&vars, &logs.path().join("run0.log"));
    for (i, frac) in [0.2, 0.5, 0.75].into_iter().enumerate() {
        wait_committed_at_least(
            &env.kafka,
            (total as f64 * frac) as i64,
            Duration::from_secs(300),
        )
        .await;
        kill9(child).await;
        kills += 1;
        child = spawn_bin(&vars, &logs.path().join(format!("run{}.log", i + 1)));
    }
    feeder.await.unwrap();
    if !wait_caught_up(&env.kafka, Duration::from_secs(300)).await {
        dump_logs(logs.path());
        panic!("not caught up after the restarts");
    }
    stop(child).await;

    let dups = verify(&env, &w).await;
    eprintln!(
        "at-least-once window: {dups} duplicates over {kills} kill -9 ({:.0} per kill; bound {} = one batch)",
        dups as f64 / kills as f64,
        MAX_BATCH
    );
    assert!(
        dups <= kills * MAX_BATCH,
        "{dups} duplicates > {kills} x {MAX_BATCH}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heavy_fault_rebalance_between_two_instances_loses_nothing() {
    let env = Env::start().await;
    let w = workload(&env.client, &spec(12)).await;
    let total = w.records.len() as i64;
    let logs = tempfile::tempdir().unwrap();
    let feeder = feed_in_background(env.kafka.clone(), w.records.clone());

    let a = spawn_bin(
        &env.bin_env("dedup-a", MAX_BATCH),
        &logs.path().join("a.log"),
    );
    wait_committed_at_least(&env.kafka, total / 4, Duration::from_secs(300)).await;
    // B joins: partitions are split between A and B.
    let b = spawn_bin(
        &env.bin_env("dedup-b", MAX_BATCH),
        &logs.path().join("b.log"),
    );
    wait_committed_at_least(&env.kafka, total * 3 / 5, Duration::from_secs(300)).await;
    // A leaves: B takes every partition (restoring A's from the changelog).
    stop(a).await;
    feeder.await.unwrap();
    if !wait_caught_up(&env.kafka, Duration::from_secs(300)).await {
        dump_logs(logs.path());
        panic!("not caught up after the rebalance");
    }
    stop(b).await;

    let b_log = std::fs::read_to_string(logs.path().join("b.log")).unwrap();
    let a_log = std::fs::read_to_string(logs.path().join("a.log")).unwrap();
    let restores_b = b_log.matches("partition state restored").count();
    assert!(
        restores_b > 0 && a_log.contains("partitions revoked"),
        "a rebalance happened"
    );
    let dups = verify(&env, &w).await;
    eprintln!("rebalance window: {dups} duplicates; B restored {restores_b} partitions");
    // A graceful handoff finishes the batch in hand before the revoke, and the new owner starts
    // where the changelog ends: no duplicates at all.
    assert_eq!(dups, 0, "duplicates after a graceful rebalance");
}
