//! The acceptance test on the real stack (tansu, registry): 100k events with 20% extra
//! copies (some with altered payloads), shuffled within devices, 50 seqs missing, a few undecodable
//! records. Output: every event exactly once, in per-device input order, with the same bytes;
//! every altered copy reported as an identity collision; the open gaps at the end are exactly the
//! 50 missing seqs; every undecodable record dead-lettered.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use common::*;
use tillstream_contracts::{ConflictKind, DeadLetter};
use tillstream_runtime::CancellationToken;
use tillstream_runtime::kafka::headers;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heavy_100k_events_with_duplicates_collisions_and_50_missing_seqs() {
    tillstream_runtime::telemetry::init_tracing("dedup-test");
    let env = Env::start().await;
    let spec = Spec {
        seed: 4,
        stores: 200,
        devices_per_store: 2,
        per_device: 250,
        dup_rate: 0.2,
        altered_rate: 0.05,
        missing: 50,
        garbage: 9,
        window: 40,
    };
    let t = Instant::now();
    let w = workload(&env.client, &spec).await;
    assert_eq!(w.ids.len() + w.dropped.len(), 100_000);
    eprintln!(
        "workload: {} records ({} events, {} duplicates, {} altered, {} garbage) built in {:?}",
        w.records.len(),
        w.ids.len(),
        w.duplicates,
        w.altered,
        w.garbage,
        t.elapsed()
    );
    let t = Instant::now();
    produce(&env.kafka, &w.records).await;
    eprintln!("produced in {:?}", t.elapsed());

    let token = CancellationToken::new();
    let t = Instant::now();
    let running = tillstream_dedup::start(env.config("dedup-it"), token.clone())
        .await
        .expect("start");
    assert!(
        wait_caught_up(&env.kafka, Duration::from_secs(300)).await,
        "dedup did not catch up"
    );
    eprintln!("deduplicated in {:?}", t.elapsed());
    // Ops surface answers while running.
    let base = format!("http://{}", running.ops_addr);
    let ready = reqwest::get(format!("{base}/readyz")).await.unwrap();
    assert_eq!(ready.status(), 200);
    let text = metrics_text(&base).await;
    assert!(text.contains("tillstream_dedup_events_in_total"), "{text}");
    assert!(text.contains("tillstream_dedup_open_gaps"), "{text}");
    // The consumer-lag gauge reaches zero on every input partition once the group has committed
    // everything (it is read every 5 s; a few periods at most).
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let text = metrics_text(&base).await;
        let lags: Vec<&str> = text
            .lines()
            .filter(|l| l.starts_with("tillstream_dedup_consumer_lag_records{"))
            .collect();
        if lags.len() == 12 && lags.iter().all(|l| l.ends_with(" 0")) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "consumer lag not zero on 12 partitions after catching up: {lags:?}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    token.cancel();
    let counters = running.state.counters.clone();
    running.wait().await.expect("clean stop");

    // Every event exactly once, and nothing else.
    let out = read(&env.kafka, OUT).await;
    let (missing, dups, extra) = check_exactly_once(&w, &out);
    assert_eq!((missing, dups, extra), (0, 0, 0), "missing/duplicate/extra");
    assert_eq!(out.len(), w.ids.len());
    check_order(&w, &out);
    // Same bytes, key and headers as one of the input copies.
    let mut inputs: BTreeMap<&str, Vec<&Raw>> = BTreeMap::new();
    for r in &w.records {
        if let Some(id) = &r.event_id {
            inputs.entry(id.as_str()).or_default().push(r);
        }
    }
    for o in &out {
        let id = o.header(headers::EVENT_ID).unwrap();
        let copies = &inputs[id];
        let payload = o.payload.as_deref().unwrap();
        let src = copies
            .iter()
            .find(|c| c.payload == payload)
            .unwrap_or_else(|| panic!("output of {id} is not one of its input copies' bytes"));
        assert_eq!(o.key_str(), src.key);
        for (k, v) in &src.headers {
            assert_eq!(o.header(k), Some(v.as_str()));
        }
    }

    // Each altered copy reported once as an identity collision, never emitted.
    let conflicts = conflicts(&env).await;
    assert_eq!(conflicts.len(), w.altered);
    let ids: BTreeSet<&str> = conflicts.iter().map(|c| c.conflict_id.as_str()).collect();
    assert_eq!(ids.len(), conflicts.len(), "conflict ids are distinct");
    for c in &conflicts {
        assert_eq!(c.kind, ConflictKind::IdentityCollision);
        assert!(w.ids.contains(&c.event_ids[0]));
    }

    // The open gaps at the end are exactly the missing seqs.
    let gaps = gaps(&env).await;
    assert_eq!(open_missing(&gaps), w.dropped);
    eprintln!(
        "{} gap records for {} missing seqs",
        gaps.len(),
        w.dropped.len()
    );

    // Every undecodable record dead-lettered with a reason.
    let dl = read(&env.kafka, DLQ).await;
    assert_eq!(dl.len(), w.garbage);
    let mut reasons = BTreeMap::new();
    for r in &dl {
        let d: DeadLetter = decode_record(&env.client, r.payload.as_deref().unwrap()).await;
        assert_eq!(d.service, "dedup");
        *reasons.entry(d.reason).or_insert(0) += 1;
    }
    assert_eq!(
        reasons.keys().cloned().collect::<Vec<_>>(),
        vec!["not_framed", "undecodable", "unknown_schema_id"]
    );

    let get = |c: &std::sync::atomic::AtomicU64| c.load(std::sync::atomic::Ordering::Relaxed);
    assert_eq!(get(&counters.events_in) as usize, w.records.len());
    assert_eq!(get(&counters.events_out) as usize, w.ids.len());
    assert_eq!(get(&counters.duplicates) as usize, w.duplicates);
    assert_eq!(get(&counters.collisions) as usize, w.altered);
}

/// The service's `/metrics` page (a failed read is a test failure, not an empty page).
async fn metrics_text(base: &str) -> String {
    reqwest::get(format!("{base}/metrics"))
        .await
        .expect("GET /metrics")
        .text()
        .await
        .expect("reading /metrics")
}
