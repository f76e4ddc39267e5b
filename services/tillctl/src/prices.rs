//! `tillctl prices approve FILE`: publishes an approved price list the way the pricing service does:
//! to the compacted downlink topic (key `{store}/price-list`, the latest list per store, which the
//! store bridge delivers to the store) and to the append-only history topic (key store id, every
//! list, which the conflict detector replays). Delivery guarantee: returns once both topics
//! acknowledged the record; the list's event id is derived from its store and list id, so running
//! it twice publishes the same list twice, which every reader ignores.

use std::path::Path;
use std::time::Duration;

use serde::Deserialize;
use tillstream_contracts::{DeviceEvent, EventKind, PriceItem, PriceListApproved, Registry, codec};
use tillstream_runtime::CancellationToken;
use tillstream_runtime::kafka::{self, KafkaConfig, headers};

#[derive(Debug, thiserror::Error)]
pub enum PricesError {
    #[error("cannot read {path}: {detail}")]
    File { path: String, detail: String },
    #[error("{0}")]
    Invalid(String),
    #[error("schema registry: {0}")]
    Registry(#[from] tillstream_contracts::RegistryError),
    #[error("encoding: {0}")]
    Codec(#[from] tillstream_contracts::CodecError),
    #[error("kafka: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    #[error("{topic} did not acknowledge within {secs} s")]
    Timeout { topic: String, secs: u64 },
}

/// The file: one store's approved list.
///
/// ```json
/// {"store_id": "s001", "price_list_id": "pl-s001-2026-12", "effective_from": 1796000000000,
///  "approved_by": "pricing@hq", "version": 3,
///  "items": [{"sku": "SKU-0001", "price": {"amount_minor": 499, "currency": "EUR"}}]}
/// ```
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PriceListFile {
    pub store_id: String,
    pub price_list_id: String,
    /// Epoch milliseconds from which the list is in force.
    pub effective_from: i64,
    pub approved_by: String,
    /// The list's version for the store (its `seq`); default 1.
    #[serde(default)]
    pub version: Option<i64>,
    pub items: Vec<PriceItem>,
}

/// The downlink key of a store's price list.
pub fn downlink_key(store: &str) -> String {
    format!("{store}/price-list")
}

/// The event a file becomes, approved at `now_ms`.
pub fn event_of(f: &PriceListFile, now_ms: i64) -> Result<PriceListApproved, PricesError> {
    if f.store_id.is_empty() || f.price_list_id.is_empty() || f.items.is_empty() {
        return Err(PricesError::Invalid(
            "store_id, price_list_id and at least one item are required".into(),
        ));
    }
    if let Some(bad) = f.items.iter().find(|i| i.price.currency.len() != 3) {
        return Err(PricesError::Invalid(format!(
            "item {}: currency {:?} is not an ISO 4217 code",
            bad.sku, bad.price.currency
        )));
    }
    Ok(PriceListApproved {
        event_id: tillstream_runtime::ids::uuid_v5(&format!(
            "price-list/{}/{}",
            f.store_id, f.price_list_id
        )),
        device_id: "tillctl".into(),
        store_id: f.store_id.clone(),
        seq: f.version.unwrap_or(1),
        occurred_at: now_ms,
        schema_version: 1,
        price_list_id: f.price_list_id.clone(),
        effective_from: f.effective_from,
        approved_by: f.approved_by.clone(),
        items: f.items.clone(),
    })
}

/// Reads `file` and publishes the list to `history_topic` and `downlink_topic`.
pub async fn approve(
    kafka_cfg: &KafkaConfig,
    registry: &Registry,
    file: &Path,
    downlink_topic: &str,
    history_topic: &str,
) -> Result<PriceListApproved, PricesError> {
    let text = std::fs::read_to_string(file).map_err(|e| PricesError::File {
        path: file.display().to_string(),
        detail: e.to_string(),
    })?;
    let f: PriceListFile = serde_json::from_str(&text).map_err(|e| PricesError::File {
        path: file.display().to_string(),
        detail: e.to_string(),
    })?;
    let list = event_of(&f, tillstream_runtime::clock::now_ms())?;
    let id = registry.schema_id(EventKind::PriceListApproved, 1).await?;
    let payload = codec::frame(id, DeviceEvent::from(list.clone()).encode()?);
    let producer = kafka::producer(kafka_cfg, "tillctl-prices")?;
    let token = CancellationToken::new();
    let hdrs = kafka::make_headers(&[
        (headers::EVENT_TYPE, EventKind::PriceListApproved.name()),
        (headers::EVENT_ID, &list.event_id),
        (headers::PRODUCER, "tillctl"),
    ]);
    // History first: a list the downlink delivered to a store must never be missing from the
    // detector's history.
    for (topic, key) in [
        (history_topic, list.store_id.clone()),
        (downlink_topic, downlink_key(&list.store_id)),
    ] {
        let send = kafka::send_with_retry(
            &producer,
            topic,
            key.as_bytes(),
            &payload,
            Some(hdrs.clone()),
            &token,
        );
        tokio::time::timeout(Duration::from_secs(60), send)
            .await
            .map_err(|_| PricesError::Timeout {
                topic: topic.to_string(),
                secs: 60,
            })??;
    }
    Ok(list)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_becomes_a_stable_event() {
        let f: PriceListFile = serde_json::from_str(
            r#"{"store_id":"s001","price_list_id":"pl-1","effective_from":5,"approved_by":"hq",
                "items":[{"sku":"A","price":{"amount_minor":499,"currency":"EUR"}}]}"#,
        )
        .unwrap();
        let a = event_of(&f, 10).unwrap();
        let b = event_of(&f, 20).unwrap();
        assert_eq!(a.event_id, b.event_id, "same list, same id");
        assert_eq!((a.seq, a.effective_from, a.occurred_at), (1, 5, 10));
        let mut bad = f.clone();
        bad.items[0].price.currency = "EURO".into();
        assert!(event_of(&bad, 1).is_err());
        assert!(serde_json::from_str::<PriceListFile>(r#"{"store_id":"s","typo":1}"#).is_err());
    }
}
