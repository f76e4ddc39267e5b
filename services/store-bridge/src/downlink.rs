//! The downlink (selective replication): consumes the compacted `tillstream.catalog.downlink`
//! (key `{store_id}/{document}`, value a Confluent-framed `PriceListApproved` or other store
//! document) and publishes each record as a retained QoS 1 MQTT message on
//! `store/{store}/catalog/{document}` (payload: the event as JSON) — only on that store's topic.
//! A tombstone (null value) clears the retained message. It also consumes the dedup's sync
//! receipts (`tillstream.device-receipts`, key = device id) and publishes each as the retained
//! `device/{device}/receipt` message that only that device may read.
//!
//! Delivery guarantee: at-least-once. Offsets are stored only after the broker acknowledged every
//! publish of the batch (PUBACK); a record that cannot be delivered (bad key, undecodable value,
//! store mismatch) is dead-lettered before its offset is stored. Retained messages are idempotent:
//! a replay republishes the same latest document.
//!
//! A broker that restarts from its last snapshot (mosquitto saves every 30 s) may have lost retained
//! documents it had acknowledged. So after every (re)connect the whole catalog topic (compacted:
//! one record per document) is published again, up to its end at that moment, while no batch is
//! being published (so a newer document cannot be overtaken by an older one). Receipts are not
//! replayed: a device without a receipt sends its events again, and the dedup answers with a new
//! receipt.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use rdkafka::Message;
use rdkafka::message::OwnedMessage;
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::mqttbytes::v5::{Packet, PubAckReason};
use rumqttc::v5::{AsyncClient, Event};
use tillstream_contracts::{DeviceEvent, DeviceReceipt, Registry, codec};
use tillstream_runtime::Health;
use tillstream_runtime::clock::now_ms;
use tillstream_runtime::kafka::{
    BatchOffsets, ConsumerSettings, DeadLetters, InputConsumer, KafkaConfig, Source,
};
use tokio_util::sync::CancellationToken;

use crate::config::{DownlinkConfig, MqttConfig};
use crate::metrics as m;

/// The readiness check of the downlink (registered by `crate::start` when enabled).
pub const HEALTH: &str = "downlink";

#[derive(Debug, thiserror::Error)]
pub enum DownlinkError {
    #[error("kafka: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    #[error("mqtt configuration: {0}")]
    Config(String),
    #[error("dead letter: {0}")]
    DeadLetter(String),
}

impl tillstream_runtime::Classify for DownlinkError {
    fn class(&self) -> tillstream_runtime::ErrorClass {
        tillstream_runtime::ErrorClass::Fatal
    }
}

/// A downlink record's destination, or why it has none.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub store: String,
    pub document: String,
    pub mqtt_topic: String,
    /// Metric label: `catalog` or `receipt`.
    pub kind: &'static str,
}

/// Parses `{store_id}/{document}` and fills the MQTT topic template. Pure.
pub fn target(key: Option<&[u8]>, template: &str) -> Result<Target, String> {
    let key = key.ok_or("record has no key")?;
    let key = std::str::from_utf8(key).map_err(|_| "key is not UTF-8".to_string())?;
    let (store, document) = key
        .split_once('/')
        .ok_or_else(|| format!("key {key:?} is not store_id/document"))?;
    let bad =
        |s: &str| s.is_empty() || s.contains(['+', '#', '\0']) || s.split('/').any(str::is_empty);
    if bad(store) || store.contains('/') || bad(document) {
        return Err(format!("key {key:?} does not name a store and a document"));
    }
    Ok(Target {
        store: store.to_string(),
        document: document.to_string(),
        mqtt_topic: template
            .replace("{store}", store)
            .replace("{document}", document),
        kind: "catalog",
    })
}

/// Parses a receipt's key (a device id: one topic level) and fills the device's MQTT topic. Pure.
pub fn receipt_target(key: Option<&[u8]>, template: &str) -> Result<String, String> {
    let key = key.ok_or("receipt has no key")?;
    let device = std::str::from_utf8(key).map_err(|_| "key is not UTF-8".to_string())?;
    if device.is_empty() || device.contains(['+', '#', '/', '\0']) {
        return Err(format!("key {device:?} is not a device id"));
    }
    Ok(template.replace("{device}", device))
}

/// Runs the downlink until `token` is cancelled.
pub async fn run(
    cfg: DownlinkConfig,
    mqtt: MqttConfig,
    kafka_cfg: KafkaConfig,
    registry: Registry,
    dead_letters: DeadLetters,
    health: Health,
    token: CancellationToken,
) -> Result<(), DownlinkError> {
    let mut o = mqtt
        .connection_options(&cfg.client_id)
        .map_err(DownlinkError::Config)?;
    o.set_keep_alive(Duration::from_secs(mqtt.keep_alive_s.max(5)))
        // Persistent, so publishes unacked at a disconnect are re-sent on the resumed session.
        .set_clean_start(false)
        .set_session_expiry_interval(Some(24 * 3600))
        .set_max_packet_size(Some(mqtt.max_packet_bytes));
    let (client, mut eventloop) = AsyncClient::new(o, cfg.batch * 2 + 16);
    let published = Published::default();
    let connected = Arc::new(tokio::sync::Notify::new());
    let loop_task = {
        let (acked, notify, token, health, connected) = (
            published.acked.clone(),
            published.acked_notify.clone(),
            token.clone(),
            health.clone(),
            connected.clone(),
        );
        let delay = mqtt.reconnect_delay_ms;
        tokio::spawn(async move {
            loop {
                let ev = tokio::select! {
                    _ = token.cancelled() => break,
                    ev = eventloop.poll() => ev,
                };
                match ev {
                    Ok(Event::Incoming(Packet::ConnAck(_))) => {
                        health.ready(HEALTH, "connected");
                        connected.notify_one();
                    }
                    Ok(Event::Incoming(Packet::PubAck(a))) => {
                        if !matches!(
                            a.reason,
                            PubAckReason::Success | PubAckReason::NoMatchingSubscribers
                        ) {
                            tracing::error!(reason = ?a.reason, "broker refused a catalog publish");
                            m::downlink_rejected("mqtt_refused");
                        }
                        acked.fetch_add(1, Ordering::SeqCst);
                        notify.notify_waiters();
                    }
                    Ok(_) => {}
                    Err(e) => {
                        health.not_ready(HEALTH, format!("{e}"));
                        tracing::warn!(error = %e, "downlink mqtt error; reconnecting");
                        tokio::time::sleep(Duration::from_millis(delay)).await;
                    }
                }
            }
        })
    };

    let settings = ConsumerSettings {
        isolation_level: "read_uncommitted".into(),
        ..ConsumerSettings::new(&cfg.group_id, "tillstream-store-bridge-downlink")
    };
    let mut topics = vec![cfg.topic.as_str()];
    if !cfg.receipts_topic.is_empty() {
        topics.push(cfg.receipts_topic.as_str());
    }
    let mut consumer = InputConsumer::new(&kafka_cfg, &settings, "store-bridge", (), &topics)?;
    let replayer = tokio::spawn(replay_catalog_on_connect(
        cfg.clone(),
        kafka_cfg.clone(),
        registry.clone(),
        client.clone(),
        published.clone(),
        connected,
        token.clone(),
    ));
    while let Some(batch) = consumer
        .next_batch(&token, cfg.batch, Duration::from_millis(50))
        .await
    {
        let _publishing = published.publishing.lock().await;
        let mut offsets = BatchOffsets::new();
        for msg in &batch {
            let delivery = if msg.topic() == cfg.receipts_topic {
                receipt(&cfg, &registry, msg).await
            } else {
                document(&cfg, &registry, msg).await
            };
            match delivery {
                Ok((t, payload)) => {
                    if client
                        .publish(t.mqtt_topic.clone(), QoS::AtLeastOnce, true, payload)
                        .await
                        .is_err()
                    {
                        break;
                    }
                    published.sent.fetch_add(1, Ordering::SeqCst);
                    m::downlink_published(t.store, t.kind);
                }
                Err((reason, detail, store)) => {
                    m::downlink_rejected(reason);
                    let source = Source::of_message(msg);
                    let dl = dead_letters.record(
                        &source,
                        msg.payload().unwrap_or_default(),
                        reason,
                        &detail,
                        store.as_deref(),
                        None,
                        None,
                        now_ms(),
                    );
                    if let Err(e) = dead_letters.publish(&dl, &token).await {
                        if token.is_cancelled() {
                            return Ok(()); // stopping: the record is re-read next time
                        }
                        tracing::error!(error = %e, "downlink dead letter not written; not committing");
                        return Err(DownlinkError::DeadLetter(e.to_string()));
                    }
                }
            }
            offsets.done(msg.topic(), msg.partition(), msg.offset());
        }
        // Offsets only once the broker has every publish of the batch.
        if published.all_acked(&token).await {
            consumer.store_offsets(&offsets);
        }
        if token.is_cancelled() {
            break;
        }
    }
    consumer.commit_on_shutdown();
    replayer.abort();
    let _ = client.try_disconnect();
    let _ = tokio::time::timeout(Duration::from_secs(1), loop_task).await;
    Ok(())
}

/// What the batch loop and the catalog replay share about publishing.
#[derive(Clone, Default)]
struct Published {
    /// Publishes handed to the client so far.
    sent: Arc<AtomicU64>,
    /// PUBACKs received so far.
    acked: Arc<AtomicU64>,
    acked_notify: Arc<tokio::sync::Notify>,
    /// Held while publishing a batch or a replay, until the broker acknowledged all of it.
    publishing: Arc<tokio::sync::Mutex<()>>,
}

impl Published {
    /// Waits until the broker acknowledged every publish handed to the client so far; `false`
    /// when `token` was cancelled first.
    async fn all_acked(&self, token: &CancellationToken) -> bool {
        loop {
            let wait = self.acked_notify.notified();
            if self.acked.load(Ordering::SeqCst) >= self.sent.load(Ordering::SeqCst) {
                return true;
            }
            tokio::select! {
                _ = token.cancelled() => return false,
                _ = wait => {}
                _ = tokio::time::sleep(Duration::from_millis(200)) => {}
            }
        }
    }
}

/// After every (re)connect: the catalog topic, from its start to its end at that moment, published
/// again (retained), then waits until the broker acknowledged it all.
async fn replay_catalog_on_connect(
    cfg: DownlinkConfig,
    kafka_cfg: KafkaConfig,
    registry: Registry,
    client: AsyncClient,
    published: Published,
    connected: Arc<tokio::sync::Notify>,
    token: CancellationToken,
) {
    loop {
        tokio::select! {
            _ = token.cancelled() => return,
            _ = connected.notified() => {}
        }
        let _publishing = published.publishing.lock().await;
        let (kafka, topic) = (kafka_cfg.clone(), cfg.topic.clone());
        let read = tokio::task::spawn_blocking(move || {
            tillstream_runtime::kafka::read_topic_to_end(&kafka, &topic, Duration::from_secs(60))
        })
        .await
        .map_err(|e| e.to_string())
        .and_then(|r| r.map_err(|e| e.to_string()));
        let records = match read {
            Ok(records) => records,
            Err(e) => {
                tracing::warn!(error = %e, "catalog not re-published after connecting");
                continue;
            }
        };
        let mut republished = 0u64;
        for msg in &records {
            // A record that cannot be delivered was dead-lettered when it was first read.
            let Ok((t, payload)) = document(&cfg, &registry, msg).await else {
                continue;
            };
            if client
                .publish(t.mqtt_topic, QoS::AtLeastOnce, true, payload)
                .await
                .is_err()
            {
                break;
            }
            published.sent.fetch_add(1, Ordering::SeqCst);
            republished += 1;
        }
        if !published.all_acked(&token).await {
            return;
        }
        tracing::info!(
            documents = republished,
            "catalog re-published after connecting"
        );
    }
}

/// The device's MQTT topic and the JSON receipt of one receipt record, or (reason, detail, store)
/// for a dead letter. The JSON is the Avro record's fields (documented in `schemas/json/`).
async fn receipt(
    cfg: &DownlinkConfig,
    registry: &Registry,
    msg: &OwnedMessage,
) -> Result<(Target, Vec<u8>), (&'static str, String, Option<String>)> {
    let mqtt_topic =
        receipt_target(msg.key(), &cfg.receipt_mqtt_topic).map_err(|d| ("bad_key", d, None))?;
    let Some(value) = msg.payload() else {
        return Err(("empty_receipt", "receipt record has no value".into(), None));
    };
    let (id, datum) = codec::unframe(value).map_err(|e| ("not_framed", e.to_string(), None))?;
    let writer = registry
        .writer_schema(id)
        .await
        .map_err(|e| ("unknown_schema", e.to_string(), None))?;
    let r: DeviceReceipt = writer
        .decode(datum)
        .map_err(|e| ("undecodable", e.to_string(), None))?;
    let store = Some(r.store_id.clone());
    if msg.key() != Some(r.device_id.as_bytes()) {
        return Err((
            "device_mismatch",
            format!(
                "key names device {:?}, receipt is for {:?}",
                String::from_utf8_lossy(msg.key().unwrap_or_default()),
                r.device_id
            ),
            store,
        ));
    }
    let json = serde_json::to_vec(&r).unwrap_or_default();
    Ok((
        Target {
            store: r.store_id.clone(),
            document: "receipt".into(),
            mqtt_topic,
            kind: "receipt",
        },
        json,
    ))
}

/// The MQTT target and JSON payload of one downlink record (empty payload for a tombstone), or
/// (reason, detail, store) for a dead letter.
async fn document(
    cfg: &DownlinkConfig,
    registry: &Registry,
    msg: &OwnedMessage,
) -> Result<(Target, Vec<u8>), (&'static str, String, Option<String>)> {
    let t = target(msg.key(), &cfg.mqtt_topic).map_err(|d| ("bad_key", d, None))?;
    let store = Some(t.store.clone());
    let Some(value) = msg.payload() else {
        return Ok((t, Vec::new()));
    };
    let (id, datum) =
        codec::unframe(value).map_err(|e| ("not_framed", e.to_string(), store.clone()))?;
    let writer = registry
        .writer_schema(id)
        .await
        .map_err(|e| ("unknown_schema", e.to_string(), store.clone()))?;
    let event = DeviceEvent::decode(&writer, datum)
        .map_err(|e| ("undecodable", e.to_string(), store.clone()))?;
    if event.store_id() != t.store {
        return Err((
            "store_mismatch",
            format!(
                "key names store {:?}, document is for {:?}",
                t.store,
                event.store_id()
            ),
            store,
        ));
    }
    let json = serde_json::to_vec(&event.to_json()).unwrap_or_default();
    Ok((t, json))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_map_to_the_stores_own_topic() {
        let tpl = "store/{store}/catalog/{document}";
        let t = target(Some(b"s001/prices"), tpl).unwrap();
        assert_eq!(t.mqtt_topic, "store/s001/catalog/prices");
        assert_eq!(t.store, "s001");
        let t = target(Some(b"s001/range/fresh"), tpl).unwrap();
        assert_eq!(t.mqtt_topic, "store/s001/catalog/range/fresh");
        for bad in [
            &b"s001"[..],
            b"/prices",
            b"s001/",
            b"s+/p",
            b"s1/#",
            b"s1//x",
            b"\xff/x",
        ] {
            assert!(target(Some(bad), tpl).is_err(), "{bad:?}");
        }
        assert!(target(None, tpl).is_err());
    }

    #[test]
    fn receipts_go_to_the_devices_own_topic() {
        let tpl = "device/{device}/receipt";
        assert_eq!(
            receipt_target(Some(b"s001-d01"), tpl).unwrap(),
            "device/s001-d01/receipt"
        );
        for bad in [&b""[..], b"a/b", b"+", b"d#", b"\xff"] {
            assert!(receipt_target(Some(bad), tpl).is_err(), "{bad:?}");
        }
        assert!(receipt_target(None, tpl).is_err());
    }
}
