//! The dead-letter publisher every service uses: a bad input becomes an Avro `DeadLetter` record
//! (its bytes, where it came from, a machine-readable reason) on the dead-letter topic, counted in
//! the service's `tillstream_<service>_dead_letters_total{reason}`.
//!
//! Delivery guarantee: [`DeadLetters::publish`] returns only once Kafka holds the record, so the
//! caller may then store the offset that passes the bad input. The record's id is deterministic
//! (source coordinates + payload hash): a redelivered bad input maps to the same id.

use std::collections::BTreeMap;
use std::sync::Arc;

use rdkafka::error::KafkaError;
use rdkafka::producer::FutureProducer;
use tillstream_contracts::{DeadLetter, EventKind, Registry, SourceKind, codec};

use super::produce::{headers, make_headers, send_with_retry};
use crate::ids::uuid_v5;

/// Publishes dead letters: Avro `DeadLetter` records (registered schema), keyed by store when known.
#[derive(Clone)]
pub struct DeadLetters {
    producer: FutureProducer,
    topic: Arc<str>,
    registry: Registry,
    service: &'static str,
    counter_name: &'static str,
}

impl std::fmt::Debug for DeadLetters {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeadLetters")
            .field("topic", &self.topic)
            .finish_non_exhaustive()
    }
}

/// Where a bad input came from (for the dead-letter record).
#[derive(Debug, Clone)]
pub struct Source<'a> {
    pub kind: SourceKind,
    pub topic: &'a str,
    pub partition: Option<i32>,
    pub offset: Option<i64>,
    pub key: Option<&'a [u8]>,
    pub headers: BTreeMap<String, String>,
}

impl<'a> Source<'a> {
    /// Where a Kafka record came from: its topic, partition, offset, key and headers.
    pub fn of_message<M: rdkafka::Message>(msg: &'a M) -> Source<'a> {
        Source {
            kind: SourceKind::Kafka,
            topic: msg.topic(),
            partition: Some(msg.partition()),
            offset: Some(msg.offset()),
            key: msg.key(),
            headers: super::header_map(msg),
        }
    }
}

/// A Kafka record a consumer refuses: the dead-letter reason, a detail for people, and whatever
/// identity could be read before it failed (the store falls back to the record's key).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejected {
    pub reason: &'static str,
    pub detail: String,
    pub store_id: Option<String>,
    pub device_id: Option<String>,
    pub event_id: Option<String>,
}

impl Rejected {
    /// Refused before any identity could be read.
    pub fn new(reason: &'static str, detail: impl Into<String>) -> Rejected {
        Rejected {
            reason,
            detail: detail.into(),
            store_id: None,
            device_id: None,
            event_id: None,
        }
    }

    /// Refused with the identity it names (store, device, event id).
    pub fn with_identity(
        mut self,
        store_id: &str,
        device_id: Option<&str>,
        event_id: Option<&str>,
    ) -> Rejected {
        self.store_id = Some(store_id.to_string());
        self.device_id = device_id.map(str::to_string);
        self.event_id = event_id.map(str::to_string);
        self
    }
}

impl From<crate::framed::Unreadable> for Rejected {
    fn from(u: crate::framed::Unreadable) -> Rejected {
        Rejected::new(u.reason, u.detail)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DeadLetterError {
    #[error("dead-letter schema: {0}")]
    Registry(#[from] tillstream_contracts::RegistryError),
    #[error("dead-letter encoding: {0}")]
    Codec(#[from] tillstream_contracts::CodecError),
    #[error("dead-letter delivery: {0}")]
    Kafka(#[from] KafkaError),
}

impl DeadLetters {
    /// `counter_name` is the service's `tillstream_<service>_dead_letters_total` metric.
    pub fn new(
        producer: FutureProducer,
        topic: &str,
        registry: Registry,
        service: &'static str,
        counter_name: &'static str,
    ) -> Self {
        DeadLetters {
            producer,
            topic: topic.into(),
            registry,
            service,
            counter_name,
        }
    }

    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// Builds the dead-letter record for `payload` (pure; deterministic id from the source coordinates
    /// and the payload, so a redelivered bad input maps to the same id).
    #[allow(clippy::too_many_arguments)]
    pub fn record(
        &self,
        source: &Source<'_>,
        payload: &[u8],
        reason: &str,
        detail: &str,
        store_id: Option<&str>,
        device_id: Option<&str>,
        event_id: Option<&str>,
        now_ms: i64,
    ) -> DeadLetter {
        let identity = format!(
            "{}|{}|{:?}|{:?}|{:x}",
            self.service,
            source.topic,
            source.partition,
            source.offset,
            xxhash_rust::xxh3::xxh3_64(payload)
        );
        DeadLetter {
            dead_letter_id: uuid_v5(&identity),
            service: self.service.to_string(),
            reason: reason.to_string(),
            detail: detail.to_string(),
            source_kind: source.kind,
            source_topic: source.topic.to_string(),
            source_partition: source.partition,
            source_offset: source.offset,
            key: source.key.map(<[u8]>::to_vec),
            payload: payload.to_vec(),
            headers: source.headers.clone(),
            store_id: store_id.map(str::to_string),
            device_id: device_id.map(str::to_string),
            event_id: event_id.map(str::to_string),
            failed_at: now_ms,
        }
    }

    /// The dead letter of a Kafka record a consumer refuses: its coordinates, key, headers and
    /// bytes, keyed by the store it names or else by the record's key.
    pub fn for_message(
        &self,
        msg: &impl rdkafka::Message,
        rejected: &Rejected,
        failed_at_ms: i64,
    ) -> DeadLetter {
        let source = Source::of_message(msg);
        let store = rejected
            .store_id
            .clone()
            .or_else(|| msg.key().map(|k| String::from_utf8_lossy(k).into_owned()));
        self.record(
            &source,
            msg.payload().unwrap_or_default(),
            rejected.reason,
            &rejected.detail,
            store.as_deref(),
            rejected.device_id.as_deref(),
            rejected.event_id.as_deref(),
            failed_at_ms,
        )
    }

    /// Writes a dead letter and waits until Kafka holds it (retrying transient failures).
    pub async fn publish(
        &self,
        record: &DeadLetter,
        token: &tokio_util::sync::CancellationToken,
    ) -> Result<(), DeadLetterError> {
        let id = self.registry.schema_id(EventKind::DeadLetter, 1).await?;
        let datum = codec::encode_record(EventKind::DeadLetter, record)?;
        let payload = codec::frame(id, datum);
        let key = record.store_id.as_deref().unwrap_or("_unknown");
        let headers = make_headers(&[
            (headers::EVENT_TYPE, EventKind::DeadLetter.name()),
            (headers::PRODUCER, self.service),
            ("tillstream-dead-letter-reason", &record.reason),
        ]);
        send_with_retry(
            &self.producer,
            &self.topic,
            key.as_bytes(),
            &payload,
            Some(headers),
            token,
        )
        .await?;
        metrics::counter!(self.counter_name, "reason" => record.reason.clone()).increment(1);
        tracing::warn!(
            service = self.service,
            reason = %record.reason,
            detail = %record.detail,
            topic = %record.source_topic,
            "input dead-lettered"
        );
        Ok(())
    }

    pub fn producer(&self) -> &FutureProducer {
        &self.producer
    }
}
