//! Plays the cloud's pricing service: produces the plan's approved price lists, in approval order,
//! Confluent-framed `PriceListApproved` v1, and waits for every delivery report. Two topics take
//! them ([`PriceListTopic`]): the append-only history the conflict detector replays, and the
//! compacted downlink the store bridge delivers to the stores. The history is produced first, so a
//! list a store received is never missing from it. At least once: a list produced twice is one
//! list to its readers (same event id).

use std::time::Duration;

use tillstream_contracts::{DeviceEvent, EventKind, Registry, codec};
use tillstream_runtime::kafka::{self, KafkaConfig, headers};

use crate::plan::{PRICING_SERVICE, Plan, price_list_key};
use crate::publish::PublishError;

/// Which topic a price list goes to; it decides the record's key and headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PriceListTopic {
    /// The pricing service's append-only record (key = store id, like `tillctl prices approve`);
    /// the records name their producer.
    History,
    /// The downlink topic, compacted to the latest list per store (key `{store}/price-list`); the
    /// bridge's downlink publishes each store's latest as a retained MQTT message.
    Downlink,
}

/// Produces the plan's price lists to `topic` and waits for every delivery report. Returns how
/// many lists were produced.
pub async fn publish_price_lists(
    plan: &Plan,
    kafka_cfg: &KafkaConfig,
    registry: &Registry,
    topic: &str,
    kind: PriceListTopic,
) -> Result<usize, PublishError> {
    if plan.price_lists.is_empty() {
        return Ok(0);
    }
    let err = |e: &dyn std::fmt::Display| PublishError::PriceLists(e.to_string());
    let id = registry
        .schema_id(EventKind::PriceListApproved, 1)
        .await
        .map_err(|e| err(&e))?;
    let producer = kafka::producer(kafka_cfg, "tillstream-sim-pricing").map_err(|e| err(&e))?;
    let token = tokio_util::sync::CancellationToken::new();
    for list in &plan.price_lists {
        let event = DeviceEvent::from(list.clone());
        let payload = codec::frame(id, event.encode().map_err(|e| err(&e))?);
        let mut pairs = vec![
            (headers::EVENT_TYPE, EventKind::PriceListApproved.name()),
            (headers::EVENT_ID, list.event_id.as_str()),
        ];
        let key = match kind {
            PriceListTopic::History => {
                pairs.push((headers::PRODUCER, PRICING_SERVICE));
                list.store_id.clone()
            }
            PriceListTopic::Downlink => price_list_key(&list.store_id),
        };
        let send = kafka::send_with_retry(
            &producer,
            topic,
            key.as_bytes(),
            &payload,
            Some(kafka::make_headers(&pairs)),
            &token,
        );
        tokio::time::timeout(Duration::from_secs(60), send)
            .await
            .map_err(|_| err(&format!("{topic} did not take the price lists within 60 s")))?
            .map_err(|e| err(&e))?;
    }
    Ok(plan.price_lists.len())
}
