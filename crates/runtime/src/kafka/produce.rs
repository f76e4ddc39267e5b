//! Producing: the one producer configuration every service uses, the standard record headers, and a
//! send that waits for the broker's acknowledgement and retries transient failures.
//!
//! Delivery guarantee: a send returns only once the broker acknowledged the record (acks=all); a
//! full local queue makes it wait (back-pressure), never drop.

use std::time::Duration;

use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders, ToBytes};
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord, Producer};

use super::KafkaConfig;
use crate::retry::Backoff;

/// Standard headers every tillstream record carries.
pub mod headers {
    /// Short record name, e.g. `OrderCreated` (lets consumers route without decoding).
    pub const EVENT_TYPE: &str = "tillstream-event-type";
    pub const EVENT_ID: &str = "tillstream-event-id";
    pub const DEVICE_ID: &str = "tillstream-device-id";
    pub const SEQ: &str = "tillstream-seq";
    /// Service that wrote the record.
    pub const PRODUCER: &str = "tillstream-producer";
}

/// The producer every service uses: acks=all, idempotence per `config.idempotence`, retries
/// unbounded within `delivery.timeout.ms`. A full local queue makes `send` wait (back-pressure).
pub fn producer(config: &KafkaConfig, client_id: &str) -> Result<FutureProducer, KafkaError> {
    let mut c = config.client_config(client_id);
    if config.idempotence {
        c.set("enable.idempotence", "true");
    } else {
        c.set("enable.idempotence", "false")
            .set("max.in.flight.requests.per.connection", "1");
    }
    c.set("acks", "all")
        .set("linger.ms", "5")
        .set("batch.num.messages", "10000")
        .set("queue.buffering.max.messages", "200000")
        .set("compression.type", "none")
        // Same key -> partition mapping as the Java client, so Kafka Connect, ksqlDB or a JVM
        // producer writing the same store id lands in the same partition.
        .set("partitioner", "murmur2_random");
    for (k, v) in &config.properties {
        c.set(k, v);
    }
    c.create()
}

/// Kafka headers from (name, value) pairs.
pub fn make_headers(pairs: &[(&str, &str)]) -> OwnedHeaders {
    pairs.iter().fold(OwnedHeaders::new(), |h, (k, v)| {
        h.insert(Header {
            key: k,
            value: Some(v.as_bytes()),
        })
    })
}

/// Puts one record in the producer's local queue, waiting while the queue is full (so records
/// enqueued one after another keep their order), and returns its delivery report to await. Any
/// other refusal is returned as it is.
pub async fn enqueue<'a, K, P>(
    producer: &FutureProducer,
    mut record: FutureRecord<'a, K, P>,
) -> Result<DeliveryFuture, KafkaError>
where
    K: ToBytes + ?Sized,
    P: ToBytes + ?Sized,
{
    loop {
        match producer.send_result(record) {
            Ok(delivery) => return Ok(delivery),
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                record = back;
                // librdkafka frees room as the broker acknowledges; 2 ms is a few batches' worth.
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            Err((e, _)) => return Err(e),
        }
    }
}

/// Sends one record and waits for its delivery report, retrying transient failures with backoff
/// until `token` is cancelled. Returns (partition, offset).
pub async fn send_with_retry(
    producer: &FutureProducer,
    topic: &str,
    key: &[u8],
    payload: &[u8],
    headers: Option<OwnedHeaders>,
    token: &tokio_util::sync::CancellationToken,
) -> Result<(i32, i64), KafkaError> {
    let mut backoff = Backoff::new(Duration::from_millis(50));
    loop {
        let mut record = FutureRecord::to(topic).key(key).payload(payload);
        if let Some(h) = &headers {
            record = record.headers(h.clone());
        }
        match producer.send(record, rdkafka::util::Timeout::Never).await {
            Ok(d) => return Ok((d.partition, d.offset)),
            Err((e, _)) => {
                use crate::error::{Classify, ErrorClass};
                if e.class() != ErrorClass::Retryable || token.is_cancelled() {
                    return Err(e);
                }
                tracing::warn!(topic, error = %e, backoff_ms = backoff.delay().as_millis() as u64, "delivery failed, retrying");
                if !backoff.wait(token).await {
                    return Err(e);
                }
            }
        }
    }
}

/// Flushes the producer, waiting at most `timeout`.
pub fn flush(producer: &FutureProducer, timeout: Duration) {
    if let Err(e) = producer.flush(timeout) {
        tracing::warn!(error = %e, "producer flush incomplete");
    }
}
