//! The outbox publisher: sends the records the batch transactions (and reviewers) wrote to the
//! outbox, oldest first, to the partition of their store, and deletes what the broker
//! acknowledged. Before it first sends a partition's records (at start, or when the partition
//! arrives), it reads the tail of the output topics' partition and drops pending records already
//! there (sent before a crash, not yet deleted), so a crash does not double them.
//!
//! Delivery guarantee: at-least-once per record, exactly-once across a crash as long as no more
//! than `publish_chunk` records of a partition were in flight when it happened (the tail read
//! covers twice that). Per-partition order is the outbox's id order (idempotent producer).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use rdkafka::Message;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use rustc_hash::FxHashSet as HashSet;
use tillstream_runtime::CancellationToken;
use tillstream_runtime::fault::Hold;
use tillstream_runtime::kafka::{KafkaConfig, headers, make_headers};
use tokio::sync::Notify;

use crate::config::{DetectorConfig, SERVICE};
use crate::db::{Db, OutboxRow};
use crate::error::DetectorError;
use crate::metrics as m;
use crate::partitions::{Shared, lock};

/// Record ids (`tillstream-event-id` header) among the last `n` records of each topic's
/// `partition` (blocking).
pub fn recent_ids(
    kafka: &KafkaConfig,
    topics: &[String],
    partition: i32,
    n: i64,
    timeout: Duration,
) -> Result<HashSet<String>, DetectorError> {
    let mut cfg = kafka.consumer_config("tillstream-conflict-detector-tail");
    cfg.set("group.id", "tillstream-conflict-detector-tail")
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "false");
    let consumer: BaseConsumer = cfg.create()?;
    let mut ids = HashSet::default();
    let mut remaining: BTreeMap<String, i64> = BTreeMap::new();
    let mut tpl = TopicPartitionList::new();
    for t in topics {
        let (lo, hi) = consumer.fetch_watermarks(t, partition, Duration::from_secs(10))?;
        if hi > lo {
            tpl.add_partition_offset(t, partition, Offset::Offset((hi - n).max(lo)))?;
            remaining.insert(t.clone(), hi);
        }
    }
    if remaining.is_empty() {
        return Ok(ids);
    }
    consumer.assign(&tpl)?;
    let deadline = std::time::Instant::now() + timeout;
    while !remaining.is_empty() {
        if std::time::Instant::now() > deadline {
            return Err(DetectorError::Topology(format!(
                "reading the tail of partition {partition} of {topics:?} timed out"
            )));
        }
        let Some(msg) = consumer.poll(Duration::from_millis(200)) else {
            continue;
        };
        let msg = msg?;
        if let Some(id) = tillstream_runtime::kafka::header_map(&msg).remove(headers::EVENT_ID) {
            ids.insert(id);
        }
        if remaining
            .get(msg.topic())
            .is_some_and(|hi| msg.offset() + 1 >= *hi)
        {
            remaining.remove(msg.topic());
        }
    }
    Ok(ids)
}

/// Sends rows in order and returns the ids the broker acknowledged.
async fn send(producer: &FutureProducer, rows: &[OutboxRow]) -> Vec<i64> {
    let futures: Vec<_> = rows
        .iter()
        .map(|r| {
            let headers = make_headers(&[
                (headers::EVENT_TYPE, &r.event_type),
                (headers::EVENT_ID, &r.record_id),
                (headers::PRODUCER, SERVICE),
            ]);
            let record = FutureRecord::to(&r.topic)
                .partition(r.partition)
                .key(r.key.as_bytes())
                .payload(&r.payload)
                .headers(headers);
            match producer.send_result(record) {
                Ok(f) => Some(f),
                Err((e, _)) => {
                    tracing::warn!(error = %e, "outbox record not queued; retrying later");
                    None
                }
            }
        })
        .collect();
    let mut ok = Vec::with_capacity(rows.len());
    for (row, f) in rows.iter().zip(futures) {
        let Some(f) = f else { continue };
        match f.await {
            Ok(Ok(_)) => ok.push(row.id),
            Ok(Err((e, _))) => {
                tracing::warn!(error = %e, topic = %row.topic, "outbox record not delivered; retrying later")
            }
            Err(_) => tracing::warn!("producer gone"),
        }
    }
    ok
}

/// How often the outbox-depth gauge is refreshed.
const OUTBOX_COUNT_EVERY: Duration = Duration::from_secs(5);

/// The publisher task.
pub struct Publisher {
    pub db: Db,
    pub producer: FutureProducer,
    pub kafka: KafkaConfig,
    pub cfg: DetectorConfig,
    pub shared: Shared,
    pub wake: Arc<Notify>,
    pub fault: crate::config::FaultConfig,
}

impl Publisher {
    /// Publishes until `token` is cancelled, then drains what it can for a few seconds.
    pub async fn run(self, token: CancellationToken) -> Result<(), DetectorError> {
        let mut checked: BTreeSet<i32> = BTreeSet::new();
        let mut counted_at: Option<std::time::Instant> = None;
        let poll = Duration::from_millis(self.cfg.publish_poll_ms);
        loop {
            let stopping = tokio::select! {
                biased;
                _ = token.cancelled() => true,
                _ = self.wake.notified() => false,
                _ = tokio::time::sleep(poll) => false,
            };
            let round = self.round(&mut checked, &mut counted_at);
            if stopping {
                let _ = tokio::time::timeout(Duration::from_secs(5), round).await;
                break;
            }
            if let Err(e) = round.await {
                tracing::warn!(error = %e, "outbox round failed; retrying");
            }
        }
        tillstream_runtime::kafka::flush(&self.producer, Duration::from_secs(5));
        Ok(())
    }

    async fn round(
        &self,
        checked: &mut BTreeSet<i32>,
        counted_at: &mut Option<std::time::Instant>,
    ) -> Result<(), DetectorError> {
        let owned: Vec<i32> = lock(&self.shared).owned.iter().copied().collect();
        checked.retain(|p| owned.contains(p));
        let fresh: Vec<i32> = owned
            .iter()
            .copied()
            .filter(|p| !checked.contains(p))
            .collect();
        for p in fresh {
            self.skip_already_published(p).await?;
            checked.insert(p);
        }
        let chunk = self.cfg.publish_chunk as i64;
        loop {
            let rows = self.db.outbox_pending(&owned, chunk).await?;
            if rows.is_empty() {
                break;
            }
            let ok = send(&self.producer, &rows).await;
            self.fault_hold().await;
            self.db.outbox_delete(&ok).await?;
            m::published(ok.len(), 0);
            if ok.len() < rows.len() {
                break;
            }
        }
        // Counting the outbox reads its whole index: at most every OUTBOX_COUNT_EVERY, not every
        // round (with millions pending, a count per batch cost as much as the batch's writes).
        if counted_at.is_none_or(|t| t.elapsed() >= OUTBOX_COUNT_EVERY) {
            m::outbox(self.db.outbox_len().await?);
            *counted_at = Some(std::time::Instant::now());
        }
        Ok(())
    }

    /// Fault injection: records delivered, not yet deleted (a test kills the process now).
    async fn fault_hold(&self) {
        let f = &self.fault;
        Hold::new(f.hold_after_publish_ms, f.publish_marker_file.as_ref())
            .hold("holding delivered outbox records")
            .await;
    }

    /// Deletes pending records of `p` that the output topics already hold.
    async fn skip_already_published(&self, p: i32) -> Result<(), DetectorError> {
        let pending = self.db.outbox_pending(&[p], i64::MAX / 2).await?;
        if pending.is_empty() {
            return Ok(());
        }
        let kafka = self.kafka.clone();
        let topics = vec![
            self.cfg.conflicts_topic.clone(),
            self.cfg.compensations_topic.clone(),
        ];
        let n = 2 * self.cfg.publish_chunk as i64;
        let ids = tokio::task::spawn_blocking(move || {
            recent_ids(&kafka, &topics, p, n, Duration::from_secs(30))
        })
        .await
        .map_err(|e| DetectorError::Topology(e.to_string()))??;
        let sent: Vec<i64> = pending
            .iter()
            .filter(|r| ids.contains(&r.record_id))
            .map(|r| r.id)
            .collect();
        if !sent.is_empty() {
            tracing::info!(
                partition = p,
                records = sent.len(),
                "outbox records already in the topics (sent before a restart): not sent again"
            );
            self.db.outbox_delete(&sent).await?;
            m::published(0, sent.len());
        }
        Ok(())
    }
}
