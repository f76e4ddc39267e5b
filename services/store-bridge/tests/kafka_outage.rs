//! Kafka (tansu) stopped for 60 s while every device keeps publishing: the outbox fills (depth
//! seen on /metrics), drains when tansu is back; zero missing, per-device (and so per-store) order
//! of first copies kept, one partition per store.

mod common;

use std::time::{Duration, Instant};

use common::*;
use tillstream_integration_tests::Svc;
use tillstream_runtime::CancellationToken;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kafka_down_for_sixty_seconds_fills_the_outbox_which_drains_in_order() {
    let outage = Duration::from_secs(
        std::env::var("STORE_BRIDGE_OUTAGE_S")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(60),
    );
    let env = Env::start().await;
    let cfg = env.config();
    let ops = cfg.ops.listen.to_string();
    let token = CancellationToken::new();
    let running = tillstream_store_bridge::start(cfg, token.clone())
        .await
        .unwrap();
    wait_ready(&ops, Duration::from_secs(60)).await;

    // 8 devices x 20 events/s for outage + 10 s.
    let rate = 20u32;
    let per_device = (rate as u64 * (outage.as_secs() + 10)) as i64;
    let publisher = tokio::spawn(publish_load(
        env.stack.mqtt_endpoint(),
        per_device,
        Some(rate),
    ));

    tokio::time::sleep(Duration::from_secs(3)).await;
    env.stack.stop(Svc::Tansu).unwrap();
    let down_at = Instant::now();
    let mut max_depth = 0.0f64;
    let mut max_age = 0.0f64;
    while down_at.elapsed() < outage {
        tokio::time::sleep(Duration::from_secs(1)).await;
        max_depth =
            max_depth.max(metric(&ops, "tillstream_store_bridge_outbox_depth").unwrap_or(0.0));
        max_age = max_age
            .max(metric(&ops, "tillstream_store_bridge_outbox_oldest_age_seconds").unwrap_or(0.0));
    }
    let (status, _) = http_get(&ops, "/readyz").unwrap();
    assert_eq!(status, 503, "not ready while Kafka is down");
    env.stack.start_svc(Svc::Tansu).unwrap();
    eprintln!(
        "tansu back after {:?}; outbox peaked at {max_depth} records, oldest {max_age:.0} s",
        down_at.elapsed()
    );
    assert!(
        max_depth > (rate as f64) * 8.0 * (outage.as_secs_f64() / 2.0),
        "the outbox should have filled while Kafka was down (peak {max_depth})"
    );

    publisher.await.unwrap();
    wait_settled(&ops, Duration::from_secs(180)).await;
    let d = wait_for_distinct(&env, per_device, Duration::from_secs(180)).await;
    eprintln!(
        "outage: {} records, {} distinct, {} duplicates, {} missing",
        d.records,
        d.distinct,
        d.duplicates,
        d.missing.len()
    );
    assert!(
        d.missing.is_empty(),
        "missing: {:?}",
        &d.missing[..d.missing.len().min(20)]
    );
    assert!(
        d.out_of_order.is_empty(),
        "out of order: {:?}",
        &d.out_of_order[..d.out_of_order.len().min(20)]
    );
    assert_eq!(d.wrong_partition, 0);
    // Drained: the outbox is empty again.
    let deadline = Instant::now() + Duration::from_secs(30);
    while metric(&ops, "tillstream_store_bridge_outbox_depth").unwrap_or(1.0) > 0.0 {
        assert!(Instant::now() < deadline, "outbox not drained");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    token.cancel();
    running.wait().await.unwrap();
}
