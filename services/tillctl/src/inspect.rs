//! Topic inspection for operators (Debian's kcat cannot talk to tansu): reads records from a topic
//! without joining a consumer group (manual assignment, nothing committed), decodes Confluent-framed
//! Avro through the registry, and prints one JSON object per record. Read-only.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use rdkafka::Message;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Headers;
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use serde_json::{Value, json};
use tillstream_contracts::{Registry, codec};
use tillstream_runtime::kafka::KafkaConfig;

#[derive(Debug, thiserror::Error)]
pub enum InspectError {
    #[error("cannot reach Kafka at {brokers}: {detail}")]
    Unreachable { brokers: String, detail: String },
    #[error("topic {0} does not exist")]
    NoTopic(String),
}

/// Decodes one record value into JSON: Confluent-framed Avro when possible, else a hex dump.
pub async fn decode_value(registry: &Registry, payload: Option<&[u8]>) -> Value {
    let Some(bytes) = payload else {
        return Value::Null;
    };
    match codec::unframe(bytes) {
        Ok((id, datum)) => match registry.writer_schema(id).await {
            Ok(writer) => match writer.decode_json(datum) {
                Ok(v) => json!({ "schema_id": id, "type": writer.kind.name(), "value": v }),
                Err(e) => json!({ "schema_id": id, "error": e.to_string() }),
            },
            Err(e) => json!({ "schema_id": id, "error": e.to_string() }),
        },
        Err(_) => json!({ "raw": String::from_utf8_lossy(bytes) }),
    }
}

/// Reads up to `max` records from every partition of `topic` from the beginning, stopping at the
/// end of the topic or after `timeout`.
pub async fn read_topic(
    config: &KafkaConfig,
    registry: &Registry,
    topic: &str,
    max: usize,
    timeout: Duration,
) -> Result<Vec<Value>, InspectError> {
    let unreachable = |e: rdkafka::error::KafkaError| InspectError::Unreachable {
        brokers: config.brokers.clone(),
        detail: e.to_string(),
    };
    let mut cfg = config.client_config("tillctl-inspect");
    cfg.set("group.id", "tillctl-inspect")
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "false");
    let consumer: BaseConsumer = cfg.create().map_err(unreachable)?;
    let metadata = tokio::task::block_in_place(|| {
        consumer.fetch_metadata(Some(topic), Duration::from_secs(10))
    })
    .map_err(unreachable)?;
    let Some(t) = metadata.topics().iter().find(|t| t.name() == topic) else {
        return Err(InspectError::NoTopic(topic.into()));
    };
    if t.partitions().is_empty() {
        return Err(InspectError::NoTopic(topic.into()));
    }
    let mut tpl = TopicPartitionList::new();
    let mut remaining = BTreeMap::new();
    for p in t.partitions() {
        let (lo, hi) = tokio::task::block_in_place(|| {
            consumer.fetch_watermarks(topic, p.id(), Duration::from_secs(10))
        })
        .map_err(unreachable)?;
        if hi > lo {
            remaining.insert(p.id(), hi);
            let _ = tpl.add_partition_offset(topic, p.id(), Offset::Offset(lo));
        }
    }
    let mut out = Vec::new();
    if remaining.is_empty() {
        return Ok(out);
    }
    consumer.assign(&tpl).map_err(unreachable)?;
    let deadline = Instant::now() + timeout;
    while !remaining.is_empty() && out.len() < max && Instant::now() < deadline {
        let msg = tokio::task::block_in_place(|| consumer.poll(Duration::from_millis(200)));
        let Some(msg) = msg else { continue };
        let msg = msg.map_err(unreachable)?;
        if let Some(hi) = remaining.get(&msg.partition())
            && msg.offset() + 1 >= *hi
        {
            remaining.remove(&msg.partition());
        }
        let headers: BTreeMap<String, String> = msg
            .headers()
            .map(|h| {
                h.iter()
                    .map(|x| {
                        (
                            x.key.to_string(),
                            x.value
                                .map(|v| String::from_utf8_lossy(v).into_owned())
                                .unwrap_or_default(),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default();
        let value = decode_value(registry, msg.payload()).await;
        out.push(json!({
            "partition": msg.partition(),
            "offset": msg.offset(),
            "timestamp": msg.timestamp().to_millis(),
            "key": msg.key().map(|k| String::from_utf8_lossy(k).into_owned()),
            "headers": headers,
            "value": value,
        }));
    }
    Ok(out)
}
