//! The consumer-lag gauge every consumer service exports: every `interval`, per partition of its
//! input topics, the high watermark minus the group's committed offset (what
//! `kafka-consumer-groups --describe` shows; a partition the group has never committed counts from
//! its low watermark). Read with a client of its own that joins no group and commits nothing, so
//! the input consumer is never touched. Every instance of a service reports the same group figures:
//! aggregate with `max by (topic, partition)`.
//!
//! Committed offsets are an honest measure since the input consumer commits the start offsets its
//! hook chooses (see `consumer::store_start_offsets`): a quiet partition reaches zero.
//!
//! Delivery guarantee: none (observation only).

use std::collections::BTreeMap;
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use tokio_util::sync::CancellationToken;

use super::KafkaConfig;
use super::read::partition_count;

/// What one service's lag gauge reads and where it reports.
#[derive(Debug, Clone)]
pub struct LagGauge {
    /// The gauge's name, `tillstream_<service>_consumer_lag_records` (labels: topic, partition).
    pub metric: &'static str,
    /// The consumer group whose committed offsets are compared with the high watermarks.
    pub group_id: String,
    /// The service's input topics.
    pub topics: Vec<String>,
    /// How often the figures are read.
    pub interval: Duration,
}

/// Reads the lag of `group_id` (the client's group) on every partition of `topics`: records
/// between the committed offset and the high watermark. Blocking.
pub fn read_lag(
    client: &BaseConsumer,
    topics: &[String],
    timeout: Duration,
) -> Result<BTreeMap<(String, i32), i64>, KafkaError> {
    // Committed offsets first, watermarks after (not `read::watermarks` then the commits): a
    // commit that lands between the two reads then makes the figure a little high, never zero
    // while records are still waiting.
    let mut tpl = TopicPartitionList::new();
    for topic in topics {
        let n = partition_count(client.client(), topic, timeout)?;
        for p in 0..n as i32 {
            tpl.add_partition(topic, p);
        }
    }
    let committed = client.committed_offsets(tpl.clone(), timeout)?;
    let mut out = BTreeMap::new();
    for e in tpl.elements() {
        let (low, high) = client.fetch_watermarks(e.topic(), e.partition(), timeout)?;
        let from = match committed
            .find_partition(e.topic(), e.partition())
            .map(|c| c.offset())
        {
            Some(Offset::Offset(n)) => n,
            _ => low,
        };
        out.insert((e.topic().to_string(), e.partition()), (high - from).max(0));
    }
    Ok(out)
}

impl LagGauge {
    /// How often a service's gauge is read by default (a few fetches' worth: cheap for the broker,
    /// fresh enough for an alert that waits minutes).
    pub const INTERVAL: Duration = Duration::from_secs(5);

    /// The gauge `metric` of `group_id` on `topics`, read every [`INTERVAL`](Self::INTERVAL).
    pub fn new(metric: &'static str, group_id: &str, topics: &[&str]) -> LagGauge {
        LagGauge {
            metric,
            group_id: group_id.to_string(),
            topics: topics.iter().map(|t| t.to_string()).collect(),
            interval: Self::INTERVAL,
        }
    }

    /// Creates the gauge's own client (no subscription, no commits).
    pub fn client(&self, kafka: &KafkaConfig, client_id: &str) -> Result<BaseConsumer, KafkaError> {
        let mut c = kafka.client_config(&format!("{client_id}-lag"));
        c.set("group.id", &self.group_id)
            .set("enable.auto.commit", "false")
            .set("enable.partition.eof", "false");
        c.create()
    }

    /// The gauge as a service task (for `ShutdownGuard::spawn_task`): its client is created now, so
    /// a bad configuration fails the start; the task ends only when `token` is cancelled.
    pub fn task<E>(
        self,
        kafka: &KafkaConfig,
        client_id: &str,
        token: CancellationToken,
    ) -> Result<impl Future<Output = Result<(), E>> + Send + 'static, KafkaError> {
        let client = self.client(kafka, client_id)?;
        Ok(async move {
            self.run(client, token).await;
            Ok(())
        })
    }

    /// Sets the gauge every `interval` until `token` is cancelled. A broker that cannot answer
    /// leaves the last figures in place (logged at debug: the consumer itself reports the outage).
    pub async fn run(self, client: BaseConsumer, token: CancellationToken) {
        let client = std::sync::Arc::new(client);
        loop {
            tokio::select! {
                _ = token.cancelled() => return,
                _ = tokio::time::sleep(self.interval) => {}
            }
            let (c, topics) = (client.clone(), self.topics.clone());
            let read =
                tokio::task::spawn_blocking(move || read_lag(&c, &topics, Duration::from_secs(5)))
                    .await;
            match read {
                Ok(Ok(lags)) => {
                    for ((topic, partition), lag) in lags {
                        metrics::gauge!(self.metric, "topic" => topic, "partition" => partition.to_string())
                            .set(lag as f64);
                    }
                }
                Ok(Err(e)) => tracing::debug!(error = %e, "consumer lag not readable now"),
                Err(e) => tracing::debug!(error = %e, "consumer lag task failed"),
            }
        }
    }
}
