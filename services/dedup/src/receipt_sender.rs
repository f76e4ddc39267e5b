//! Sync receipts, the I/O part: a task that takes the receipts of each finished batch, passes them
//! through the [`ReceiptThrottle`], and produces them to the receipts topic (key = device id,
//! Confluent-framed `DeviceReceipt`).
//!
//! Delivery guarantee: at-least-once, newest state per device. A receipt that fails to publish is
//! held again (unless a newer one replaced it) and retried; one producer keeps a device's receipts
//! in order (same key, same partition). On shutdown everything held is published without waiting
//! for its interval (best effort, bounded): a receipt lost then only delays a device's clean-up,
//! never loses an event (the device keeps what no receipt covers, and the next receipt covers it).

use std::borrow::Cow;
use std::time::Duration;

use rdkafka::producer::FutureProducer;
use tillstream_contracts::{DeviceReceipt, EventKind, codec};
use tillstream_runtime::CancellationToken;
use tillstream_runtime::clock::now_ms;
use tillstream_runtime::kafka::{self, headers};
use tokio::sync::mpsc::UnboundedReceiver;

use crate::config::{DeliveryMode, SERVICE};
use crate::error::DedupError;
use crate::metrics as m;
use crate::produce::{OutputRecord, Stop, deliver_all};
use crate::receipts::ReceiptThrottle;

/// How long the final publish of held receipts may take at shutdown.
const FINAL_FLUSH: Duration = Duration::from_secs(5);

/// Runs until `token` is cancelled or the processor is gone, then publishes what it holds.
pub async fn run(
    mut receipts: UnboundedReceiver<Vec<DeviceReceipt>>,
    producer: FutureProducer,
    topic: String,
    schema_id: u32,
    interval_ms: u64,
    token: CancellationToken,
) -> Result<(), DedupError> {
    let mut throttle = ReceiptThrottle::new(interval_ms);
    loop {
        let wait = throttle
            .next_due()
            .map(|due| Duration::from_millis((due - now_ms()).max(0) as u64));
        let ready = tokio::select! {
            biased;
            _ = token.cancelled() => break,
            batch = receipts.recv() => match batch {
                Some(b) => throttle.offer(b, now_ms()),
                None => break,
            },
            _ = tokio::time::sleep(wait.unwrap_or(Duration::from_secs(3600))), if wait.is_some() => {
                throttle.due(now_ms())
            }
        };
        m::receipts_held(throttle.held());
        if let Err(back) = publish(&producer, &topic, schema_id, ready, &token).await {
            throttle.put_back(back);
        }
    }
    // Whatever the processor sent before it stopped, then everything held.
    while let Ok(b) = receipts.try_recv() {
        throttle.offer(b, now_ms());
    }
    let rest = throttle.drain();
    if !rest.is_empty() {
        let n = rest.len();
        let never = CancellationToken::new();
        match tokio::time::timeout(
            FINAL_FLUSH,
            publish(&producer, &topic, schema_id, rest, &never),
        )
        .await
        {
            Ok(Ok(())) => tracing::info!(receipts = n, "held receipts published at shutdown"),
            _ => tracing::warn!(
                receipts = n,
                "held receipts not published at shutdown (devices keep those events until the next receipt)"
            ),
        }
    }
    Ok(())
}

/// Publishes `receipts`; on failure hands them back.
async fn publish(
    producer: &FutureProducer,
    topic: &str,
    schema_id: u32,
    receipts: Vec<DeviceReceipt>,
    token: &CancellationToken,
) -> Result<(), Vec<DeviceReceipt>> {
    if receipts.is_empty() {
        return Ok(());
    }
    let mut records = Vec::with_capacity(receipts.len());
    for r in &receipts {
        match codec::encode_record(EventKind::DeviceReceipt, r) {
            Ok(datum) => records.push(OutputRecord {
                topic,
                partition: None,
                key: Cow::Borrowed(r.device_id.as_bytes()),
                payload: Cow::Owned(codec::frame(schema_id, datum)),
                headers: Some(kafka::make_headers(&[
                    (headers::EVENT_TYPE, EventKind::DeviceReceipt.name()),
                    (headers::DEVICE_ID, &r.device_id),
                    (headers::PRODUCER, SERVICE),
                ])),
                timestamp: None,
            }),
            // Our own record type not encoding is a bug, not a reason to stop deduplicating.
            Err(e) => tracing::error!(device = %r.device_id, error = %e, "receipt does not encode"),
        }
    }
    match deliver_all(producer, &records, DeliveryMode::AtLeastOnce, token).await {
        Ok(_) => {
            m::receipts_published(records.len());
            Ok(())
        }
        Err(Stop::Cancelled) => Err(receipts),
        Err(Stop::Failed(e)) => {
            tracing::warn!(error = %e, receipts = receipts.len(), "receipts not published; held for a retry");
            Err(receipts)
        }
    }
}
