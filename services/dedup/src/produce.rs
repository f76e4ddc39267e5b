//! Writing a batch's records: [`OutputRecord`] (one record to produce), [`deliver_all`] (enqueue in
//! order, wait for every acknowledgement, re-send the set on a retryable failure), the conflict and
//! gap records' encoding, and the Kafka transaction around a batch in transactional mode.
//!
//! Delivery guarantee: [`deliver_all`] returns only once the broker acknowledged every record of
//! the set; records are enqueued one by one in order, so a partition's records keep their order.
//! A retryable failure re-sends the whole set (duplicates are absorbed downstream; skipping is not
//! allowed); in a transaction any failure aborts.

use std::borrow::Cow;
use std::time::Duration;

use rdkafka::error::KafkaError;
use rdkafka::message::OwnedHeaders;
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use tillstream_contracts::{ConflictDetected, EventKind, SequenceGap, codec};
use tillstream_runtime::kafka::{self, headers};
use tillstream_runtime::retry::{Backoff, blocking};
use tillstream_runtime::{CancellationToken, Classify, ErrorClass};

use crate::config::{DeliveryMode, SERVICE};
use crate::error::DedupError;
use crate::metrics;

/// Why a batch did not complete.
#[derive(Debug)]
pub enum Stop {
    /// The service was told to stop while the batch waited to retry: its offsets are not stored,
    /// so its next owner processes it again.
    Cancelled,
    Failed(DedupError),
}

impl From<DedupError> for Stop {
    fn from(e: DedupError) -> Self {
        Stop::Failed(e)
    }
}

/// One record to produce.
pub struct OutputRecord<'a> {
    pub topic: &'a str,
    /// A fixed partition (outputs and changelog are co-partitioned with the input), or by key.
    pub partition: Option<i32>,
    pub key: Cow<'a, [u8]>,
    pub payload: Cow<'a, [u8]>,
    pub headers: Option<OwnedHeaders>,
    /// The input record's timestamp for outputs (so record time travels with the event).
    pub timestamp: Option<i64>,
}

/// Enqueues `records` in order (waiting when the local queue is full, so order is kept) and waits
/// for every delivery report. Returns (partition, offset) per record.
pub async fn deliver_all(
    producer: &FutureProducer,
    records: &[OutputRecord<'_>],
    mode: DeliveryMode,
    token: &CancellationToken,
) -> Result<Vec<(i32, i64)>, Stop> {
    let mut backoff = Backoff::new(Duration::from_millis(50));
    loop {
        let mut futures = Vec::with_capacity(records.len());
        let mut failed: Option<KafkaError> = None;
        for r in records {
            let mut rec = FutureRecord::<[u8], [u8]>::to(r.topic)
                .key(r.key.as_ref())
                .payload(r.payload.as_ref());
            if let Some(p) = r.partition {
                rec = rec.partition(p);
            }
            if let Some(h) = &r.headers {
                rec = rec.headers(h.clone());
            }
            if let Some(ts) = r.timestamp {
                rec = rec.timestamp(ts);
            }
            match kafka::enqueue(producer, rec).await {
                Ok(f) => futures.push(f),
                Err(e) => {
                    failed = Some(e);
                    break;
                }
            }
        }
        let mut out = Vec::with_capacity(futures.len());
        for f in futures {
            match f.await {
                Ok(Ok(d)) => out.push((d.partition, d.offset)),
                Ok(Err((e, _))) => {
                    failed.get_or_insert(e);
                }
                Err(_) => {
                    failed.get_or_insert(KafkaError::Canceled);
                }
            }
        }
        let Some(e) = failed else {
            return Ok(out);
        };
        if mode == DeliveryMode::Transactional || e.class() != ErrorClass::Retryable {
            return Err(Stop::Failed(e.into()));
        }
        metrics::delivery_retried();
        tracing::warn!(error = %e, records = records.len(), backoff_ms = backoff.delay().as_millis() as u64, "delivery failed; re-sending the set");
        if !backoff.wait(token).await {
            return Err(Stop::Cancelled);
        }
    }
}

/// The conflict record of an identity collision (keyed by store).
pub fn conflict_record<'a>(
    topic: &'a str,
    schema_id: u32,
    c: &ConflictDetected,
) -> Result<OutputRecord<'a>, DedupError> {
    let datum = codec::encode_record(EventKind::ConflictDetected, c)?;
    let event_id = c.event_ids.first().map(String::as_str).unwrap_or_default();
    Ok(OutputRecord {
        topic,
        partition: None,
        key: Cow::Owned(c.store_id.as_bytes().to_vec()),
        payload: Cow::Owned(codec::frame(schema_id, datum)),
        headers: Some(kafka::make_headers(&[
            (headers::EVENT_TYPE, EventKind::ConflictDetected.name()),
            (headers::EVENT_ID, event_id),
            (headers::PRODUCER, SERVICE),
        ])),
        timestamp: None,
    })
}

/// A sequence-gap record (keyed by store).
pub fn gap_record<'a>(
    topic: &'a str,
    schema_id: u32,
    g: &SequenceGap,
) -> Result<OutputRecord<'a>, DedupError> {
    let datum = codec::encode_record(EventKind::SequenceGap, g)?;
    Ok(OutputRecord {
        topic,
        partition: None,
        key: Cow::Owned(g.store_id.as_bytes().to_vec()),
        payload: Cow::Owned(codec::frame(schema_id, datum)),
        headers: Some(kafka::make_headers(&[
            (headers::EVENT_TYPE, EventKind::SequenceGap.name()),
            (headers::DEVICE_ID, &g.device_id),
            (headers::PRODUCER, SERVICE),
        ])),
        timestamp: None,
    })
}

/// The Kafka transaction around a batch's effects, per [`DeliveryMode`]: at-least-once has none
/// (every method is a no-op), transactional begins, commits (with the input offsets) or aborts.
#[derive(Clone)]
pub struct BatchTransaction {
    mode: DeliveryMode,
    producer: FutureProducer,
}

impl BatchTransaction {
    pub fn new(mode: DeliveryMode, producer: FutureProducer) -> Self {
        BatchTransaction { mode, producer }
    }

    pub fn mode(&self) -> DeliveryMode {
        self.mode
    }

    /// Registers the producer's transactional id with the broker (fences older instances).
    pub async fn init(&self) -> Result<(), DedupError> {
        if self.mode != DeliveryMode::Transactional {
            return Ok(());
        }
        let p = self.producer.clone();
        tokio::task::spawn_blocking(move || p.init_transactions(Duration::from_secs(60)))
            .await
            .map_err(|e| DedupError::Transaction(e.to_string()))??;
        Ok(())
    }

    pub fn begin(&self) -> Result<(), Stop> {
        if self.mode != DeliveryMode::Transactional {
            return Ok(());
        }
        blocking(|| self.producer.begin_transaction()).map_err(txn_err)
    }

    /// Commits, with the input offsets of the batch (a failure aborts and is fatal: the in-memory
    /// state already holds the batch, only a restart rebuilds it from the committed changelog).
    pub fn commit(
        &self,
        offsets: &rdkafka::TopicPartitionList,
        group: &rdkafka::consumer::ConsumerGroupMetadata,
    ) -> Result<(), Stop> {
        let res = blocking(|| {
            self.producer
                .send_offsets_to_transaction(offsets, group, Duration::from_secs(30))?;
            self.producer.commit_transaction(Duration::from_secs(60))
        });
        if let Err(e) = res {
            self.abort();
            return Err(Stop::Failed(DedupError::Transaction(format!(
                "commit failed ({e}); restart to restore state"
            ))));
        }
        Ok(())
    }

    /// Commits a transaction that carries no input offsets (republished gap records).
    pub fn commit_without_offsets(&self) -> Result<(), Stop> {
        if self.mode != DeliveryMode::Transactional {
            return Ok(());
        }
        blocking(|| self.producer.commit_transaction(Duration::from_secs(60))).map_err(txn_err)
    }

    pub fn abort(&self) {
        if self.mode == DeliveryMode::Transactional {
            let _ = blocking(|| self.producer.abort_transaction(Duration::from_secs(30)));
        }
    }
}

fn txn_err(e: KafkaError) -> Stop {
    Stop::Failed(DedupError::Transaction(e.to_string()))
}
