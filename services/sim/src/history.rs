//! The cloud pricing service's append-only record: every approved price list of the plan, in
//! approval order, on the price-list history topic (key = store id, like `tillctl prices approve`),
//! which the conflict detector replays (the downlink topic is compacted to the latest list per
//! store). Produced before the downlink, so a list a store received is never missing from the
//! history. At least once: a list produced twice is one list to the detector (same event id).

use std::time::Duration;

use tillstream_contracts::{DeviceEvent, EventKind, Registry, codec};
use tillstream_runtime::kafka::{self, KafkaConfig, headers};

use crate::plan::{PRICING_SERVICE, Plan};
use crate::publish::PublishError;

/// Produces the plan's price lists to `topic` and waits for every delivery report. Returns how
/// many lists were produced.
pub async fn publish_price_history(
    plan: &Plan,
    kafka_cfg: &KafkaConfig,
    registry: &Registry,
    topic: &str,
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
        let hdrs = kafka::make_headers(&[
            (headers::EVENT_TYPE, EventKind::PriceListApproved.name()),
            (headers::EVENT_ID, &list.event_id),
            (headers::PRODUCER, PRICING_SERVICE),
        ]);
        let send = kafka::send_with_retry(
            &producer,
            topic,
            list.store_id.as_bytes(),
            &payload,
            Some(hdrs),
            &token,
        );
        tokio::time::timeout(Duration::from_secs(60), send)
            .await
            .map_err(|_| err(&format!("{topic} did not take the price lists within 60 s")))?
            .map_err(|e| err(&e))?;
    }
    Ok(plan.price_lists.len())
}
