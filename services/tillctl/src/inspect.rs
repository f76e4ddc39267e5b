//! Topic inspection for operators (Debian's kcat cannot talk to tansu): reads records from a topic
//! without joining a consumer group (manual assignment, nothing committed), decodes Confluent-framed
//! Avro through the registry, and prints one JSON object per record. Read-only.

use std::time::Duration;

use rdkafka::Message;
use serde_json::{Value, json};
use tillstream_contracts::{Registry, codec};
use tillstream_runtime::kafka::{self, KafkaConfig};

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
    let (cfg, name) = (config.clone(), topic.to_string());
    let records =
        tokio::task::spawn_blocking(move || kafka::read_topic_to_end(&cfg, &name, timeout))
            .await
            .map_err(|e| InspectError::Unreachable {
                brokers: config.brokers.clone(),
                detail: e.to_string(),
            })?
            .map_err(|e| match e {
                kafka::ReadError::NoTopic(t) => InspectError::NoTopic(t),
                other => InspectError::Unreachable {
                    brokers: config.brokers.clone(),
                    detail: other.to_string(),
                },
            })?;
    let mut out = Vec::new();
    for msg in records.iter().take(max) {
        let value = decode_value(registry, msg.payload()).await;
        out.push(json!({
            "partition": msg.partition(),
            "offset": msg.offset(),
            "timestamp": msg.timestamp().to_millis(),
            "key": msg.key().map(|k| String::from_utf8_lossy(k).into_owned()),
            "headers": kafka::header_map(msg),
            "value": value,
        }));
    }
    Ok(out)
}
