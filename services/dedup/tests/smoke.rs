//! A small end-to-end run on the real stack: a few thousand events through one in-process instance.

mod common;

use std::time::Duration;

use common::*;
use tillstream_runtime::CancellationToken;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn small_stream_is_deduplicated_end_to_end() {
    tillstream_runtime::telemetry::init_tracing("dedup-test");
    let env = Env::start().await;
    let spec = Spec {
        seed: 1,
        stores: 10,
        devices_per_store: 2,
        per_device: 100,
        dup_rate: 0.2,
        altered_rate: 0.1,
        missing: 5,
        garbage: 3,
        window: 10,
    };
    let w = workload(&env.client, &spec).await;
    produce(&env.kafka, &w.records).await;
    let token = CancellationToken::new();
    let running = tillstream_dedup::start(env.config("dedup-smoke"), token.clone())
        .await
        .expect("start");
    assert!(wait_caught_up(&env.kafka, Duration::from_secs(120)).await);
    token.cancel();
    running.wait().await.expect("clean stop");
    let out = read(&env.kafka, OUT).await;
    assert_eq!(check_exactly_once(&w, &out), (0, 0, 0));
    check_order(&w, &out);
    assert_eq!(conflicts(&env).await.len(), w.altered);
    assert_eq!(open_missing(&gaps(&env).await), w.dropped);
}
