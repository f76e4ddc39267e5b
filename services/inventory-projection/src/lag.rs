//! The lag gauge: every 5 s, per assigned partition, the topic's high watermark minus the next
//! offset the database holds. Reads watermarks with a client of its own (no group), never with the
//! input consumer, which only its owner closes.
//!
//! Delivery guarantee: none (observation only).

use std::sync::Arc;
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer};
use tillstream_runtime::CancellationToken;

use crate::assignment::{SharedPartitions, lock};
use crate::metrics as m;

/// Runs until `token` is cancelled.
pub async fn run(
    client: Arc<BaseConsumer>,
    topic: String,
    parts: SharedPartitions,
    token: CancellationToken,
) {
    loop {
        tokio::select! {
            _ = token.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_secs(5)) => {}
        }
        let expected: Vec<(i32, i64)> = lock(&parts)
            .expected
            .iter()
            .map(|(p, o)| (*p, *o))
            .collect();
        let c = client.clone();
        let t = topic.clone();
        let res = tokio::task::spawn_blocking(move || {
            expected
                .into_iter()
                .filter_map(|(p, next)| {
                    c.fetch_watermarks(&t, p, Duration::from_secs(2))
                        .ok()
                        .map(|(_, high)| (p, (high - next).max(0)))
                })
                .collect::<Vec<_>>()
        })
        .await;
        if let Ok(lags) = res {
            for (p, lag) in lags {
                m::lag(p, lag);
            }
        }
    }
}
