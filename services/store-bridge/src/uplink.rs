//! The uplink: one MQTT v5 session (persistent: clean_start=false + session expiry; QoS 1; manual
//! acks; Receive Maximum = the unacked window) subscribed to the store and fleet topics. Each message
//! is classified (`validate`), converted to its Avro record (or to a dead letter) and handed to the
//! outbox writer in arrival order; it is acked only when the writer reports it durable.
//!
//! Delivery guarantee: at-least-once. Nothing is acked before it is fsync'd in the outbox (or, for
//! our own catalog echo, deliberately skipped). Acks are sent in arrival order and only on the
//! connection that received the message: an ack from before a reconnect is dropped (the broker
//! redelivers the message, which is stored again: a duplicate, never a loss).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::mqttbytes::v5::{Filter, Packet, Publish};
use rumqttc::v5::{AsyncClient, Event, MqttOptions};
use tillstream_contracts::{DeviceEvent, EventKind, Registry, SourceKind, codec};
use tillstream_runtime::Health;
use tillstream_runtime::clock::now_ms;
use tillstream_runtime::kafka::{DeadLetters, RecordHeaders, Source, headers};
use tokio_util::sync::CancellationToken;

use crate::config::{DeadLetterConfig, MqttConfig};
use crate::metrics as m;
use crate::outbox::{Record, WriterMsg};
use crate::validate::{Classifier, Rejection, Verdict};

/// The readiness check of the uplink (registered by `crate::start`): ready once subscribed.
pub const HEALTH: &str = "mqtt";

/// Name in the `tillstream-producer` header and in dead letters.
pub const SERVICE: &str = "store-bridge";

#[derive(Debug, thiserror::Error)]
pub enum UplinkError {
    #[error("mqtt configuration: {0}")]
    Config(String),
    #[error("schema id for {kind} v{version} not warmed up")]
    NoSchemaId { kind: EventKind, version: u32 },
    #[error("encoding: {0}")]
    Codec(#[from] tillstream_contracts::CodecError),
    #[error("outbox writer stopped")]
    OutboxGone,
}

impl tillstream_runtime::Classify for UplinkError {
    fn class(&self) -> tillstream_runtime::ErrorClass {
        match self {
            UplinkError::Codec(_) => tillstream_runtime::ErrorClass::Poison,
            _ => tillstream_runtime::ErrorClass::Fatal,
        }
    }
}

/// What the writer hands back once a message is durable: the message to ack and the connection
/// generation it arrived on.
#[derive(Debug)]
pub struct AckTicket {
    publish: Publish,
    generation: u64,
}

/// Connection state shared by the event loop and the acker. The lock makes "still the same
/// connection?" and "enqueue the ack" one step, so no ack from an old connection slips through.
#[derive(Debug, Default)]
struct ConnState {
    connected: bool,
    generation: u64,
}

/// Converts messages into outbox records. Pure apart from the registry's cached ids.
#[derive(Debug, Clone)]
pub struct Converter {
    pub classifier: Arc<Classifier>,
    pub registry: Registry,
    pub dead_letters: DeadLetters,
    pub dead_letter: DeadLetterConfig,
    /// Whether event records repeat the event's identity in headers (`kafka.record_headers`).
    pub record_headers: RecordHeaders,
}

/// The outcome of converting one message.
#[derive(Debug)]
pub enum Converted {
    Store(Record),
    Skip,
}

impl Converter {
    /// Converts one MQTT message: the Kafka record of the event, or of its dead letter.
    pub fn convert(
        &self,
        topic: &str,
        payload: &[u8],
        qos: u8,
        retain: bool,
        received_at_ms: i64,
    ) -> Result<Converted, UplinkError> {
        match self.classifier.classify(topic, payload) {
            Verdict::Ignore => {
                m::message_in("ignored", "");
                Ok(Converted::Skip)
            }
            Verdict::Forward {
                kind,
                kafka_topic,
                event,
                store_level_topic,
            } => {
                if store_level_topic {
                    m::store_level_topic_event(event.store_id());
                }
                observe(&event, kind, received_at_ms);
                let rec = self.event_record(kind, &kafka_topic, &event, received_at_ms);
                match rec {
                    Ok(r) => Ok(Converted::Store(r)),
                    // A validated event that does not encode is a bad input all the same.
                    Err(UplinkError::Codec(e)) => {
                        let rej = Rejection {
                            reason: crate::validate::Reason::InvalidValue,
                            detail: format!("does not encode: {e}"),
                            store_id: Some(event.store_id().to_string()),
                            device_id: Some(event.device_id().to_string()),
                            event_id: Some(event.event_id().to_string()),
                        };
                        self.dead_letter_record(topic, payload, qos, retain, &rej, received_at_ms)
                            .map(Converted::Store)
                    }
                    Err(e) => Err(e),
                }
            }
            Verdict::Reject(rej) => {
                let store = rej.store_id.clone().unwrap_or_default();
                m::message_in("rejected", &store);
                self.dead_letter_record(topic, payload, qos, retain, &rej, received_at_ms)
                    .map(Converted::Store)
            }
        }
    }

    fn event_record(
        &self,
        kind: EventKind,
        kafka_topic: &str,
        event: &DeviceEvent,
        received_at_ms: i64,
    ) -> Result<Record, UplinkError> {
        let version = event.schema_version() as u32;
        let id = self
            .registry
            .cached_id(kind, version)
            .ok_or(UplinkError::NoSchemaId { kind, version })?;
        let value = codec::frame(id, event.encode()?);
        let store = event.store_id().to_string();
        Ok(Record {
            topic: kafka_topic.to_string(),
            key: store.as_bytes().to_vec(),
            value,
            headers: match self.record_headers {
                RecordHeaders::PayloadOnly => Vec::new(),
                RecordHeaders::Descriptive => vec![
                    (headers::EVENT_TYPE.into(), kind.name().into()),
                    (headers::EVENT_ID.into(), event.event_id().into()),
                    (headers::DEVICE_ID.into(), event.device_id().into()),
                    (headers::SEQ.into(), event.seq().to_string()),
                    (headers::PRODUCER.into(), SERVICE.into()),
                ],
            },
            kind: kind.name().into(),
            store,
            received_at_ms,
        })
    }

    /// The dead-letter record for a rejected message (raw bytes, MQTT topic, reason).
    pub fn dead_letter_record(
        &self,
        topic: &str,
        payload: &[u8],
        qos: u8,
        retain: bool,
        rej: &Rejection,
        received_at_ms: i64,
    ) -> Result<Record, UplinkError> {
        let reason = rej.reason.as_str();
        m::dead_lettered(reason);
        let max = self.dead_letter.max_payload_bytes;
        let (kept, detail) = if payload.len() > max {
            (
                &payload[..max],
                format!(
                    "{} (payload cut to its first {max} of {} bytes)",
                    rej.detail,
                    payload.len()
                ),
            )
        } else {
            (payload, rej.detail.clone())
        };
        let source = Source {
            kind: SourceKind::Mqtt,
            topic,
            partition: None,
            offset: None,
            key: None,
            headers: [
                ("mqtt.qos".to_string(), qos.to_string()),
                ("mqtt.retain".to_string(), retain.to_string()),
                ("mqtt.payload_bytes".to_string(), payload.len().to_string()),
            ]
            .into(),
        };
        let dl = self.dead_letters.record(
            &source,
            kept,
            reason,
            &detail,
            rej.store_id.as_deref(),
            rej.device_id.as_deref(),
            rej.event_id.as_deref(),
            received_at_ms,
        );
        tracing::warn!(reason, %detail, topic, "input dead-lettered");
        self.dead_letter_to_record(&dl, received_at_ms)
    }

    /// A `DeadLetter` as an outbox record for the dead-letter topic.
    pub fn dead_letter_to_record(
        &self,
        dl: &tillstream_contracts::DeadLetter,
        received_at_ms: i64,
    ) -> Result<Record, UplinkError> {
        let kind = EventKind::DeadLetter;
        let id = self.registry.cached_id(kind, kind.latest_version()).ok_or(
            UplinkError::NoSchemaId {
                kind,
                version: kind.latest_version(),
            },
        )?;
        let value = codec::frame(id, codec::encode_record(kind, dl)?);
        let store = dl.store_id.clone().unwrap_or_else(|| "_unknown".into());
        Ok(Record {
            topic: self.dead_letter.topic.clone(),
            key: store.as_bytes().to_vec(),
            value,
            headers: vec![
                (headers::EVENT_TYPE.into(), kind.name().into()),
                (headers::PRODUCER.into(), SERVICE.into()),
                ("tillstream-dead-letter-reason".into(), dl.reason.clone()),
            ],
            kind: kind.name().into(),
            store,
            received_at_ms,
        })
    }
}

/// Per-store and per-device liveness and lag, from an accepted event.
fn observe(event: &DeviceEvent, kind: EventKind, received_at_ms: i64) {
    let store = event.store_id().to_string();
    let now_s = received_at_ms as f64 / 1000.0;
    m::message_in(kind.name(), &store);
    let lag = (received_at_ms - event.occurred_at()) as f64 / 1000.0;
    m::event_seen(&store, event.device_id(), now_s, lag);
}

/// MQTT options of the uplink session.
pub fn mqtt_options(cfg: &MqttConfig) -> Result<MqttOptions, UplinkError> {
    let mut o = cfg
        .connection_options(&cfg.client_id)
        .map_err(UplinkError::Config)?;
    o.set_keep_alive(Duration::from_secs(cfg.keep_alive_s.max(5)))
        .set_clean_start(false)
        .set_session_expiry_interval(Some(cfg.session_expiry_s))
        .set_receive_maximum(Some(cfg.receive_maximum.max(1)))
        .set_max_packet_size(Some(cfg.max_packet_bytes))
        .set_manual_acks(true)
        // Acks flow through this channel; it must hold a full window of them.
        .set_request_channel_capacity(cfg.receive_maximum as usize * 2 + 64);
    Ok(o)
}

/// Runs the uplink until `token` is cancelled: then it stops taking messages, waits until the
/// writer has made everything received durable, sends those acks and disconnects.
pub async fn run(
    cfg: MqttConfig,
    converter: Converter,
    writer: std::sync::mpsc::Sender<WriterMsg<AckTicket>>,
    mut acks: tokio::sync::mpsc::UnboundedReceiver<Vec<AckTicket>>,
    health: Health,
    token: CancellationToken,
) -> Result<(), UplinkError> {
    let options = mqtt_options(&cfg)?;
    let (client, mut eventloop) = AsyncClient::new(options, cfg.receive_maximum as usize * 2 + 64);
    let state = Arc::new(Mutex::new(ConnState::default()));
    // Messages handed to the writer and not yet acked (or dropped as stale) by the acker.
    let outstanding = Arc::new(AtomicU64::new(0));
    // Acks are sent by their own task so that a slow ack never stalls the event loop.
    let acker = {
        let client = client.clone();
        let state = state.clone();
        let outstanding = outstanding.clone();
        tokio::spawn(async move {
            while let Some(batch) = acks.recv().await {
                let n = batch.len() as u64;
                for t in batch {
                    send_ack(&client, &state, t).await;
                }
                outstanding.fetch_sub(n, Ordering::SeqCst);
            }
        })
    };
    let filters: Vec<Filter> = cfg
        .subscriptions
        .iter()
        .map(|f| Filter::new(f.clone(), QoS::AtLeastOnce))
        .collect();
    let mut phase = Phase::Running;
    loop {
        let now = tokio::time::Instant::now();
        phase = match phase {
            Phase::Running if token.is_cancelled() => {
                // Stop taking messages; make everything handed over durable, then ack it.
                let (tx, rx) = tokio::sync::oneshot::channel();
                if writer.send(WriterMsg::Flush(tx)).is_err() {
                    break;
                }
                tracing::info!("uplink stopping: flushing the outbox, then acking");
                Phase::Flushing(rx, now + Duration::from_secs(30))
            }
            Phase::Flushing(mut rx, deadline) => match rx.try_recv() {
                Err(tokio::sync::oneshot::error::TryRecvError::Empty) if now < deadline => {
                    Phase::Flushing(rx, deadline)
                }
                _ => Phase::Acking(now + Duration::from_secs(3)),
            },
            Phase::Acking(deadline)
                if outstanding.load(Ordering::SeqCst) == 0 || now >= deadline =>
            {
                let left = outstanding.load(Ordering::SeqCst);
                if left > 0 {
                    tracing::warn!(
                        unacked = left,
                        "not stored (outbox full?): the broker keeps them"
                    );
                }
                let _ = client.try_disconnect();
                Phase::Disconnecting(now + Duration::from_secs(3))
            }
            Phase::Disconnecting(deadline) if now >= deadline => break,
            other => other,
        };
        let polled = if matches!(phase, Phase::Running) {
            tokio::select! {
                biased;
                _ = token.cancelled() => continue,
                r = eventloop.poll() => r,
            }
        } else {
            match tokio::time::timeout(Duration::from_millis(50), eventloop.poll()).await {
                Ok(r) => r,
                Err(_) => continue,
            }
        };
        match polled {
            Ok(Event::Incoming(Packet::ConnAck(ack))) => {
                {
                    let mut s = state.lock().unwrap_or_else(|p| p.into_inner());
                    s.generation += 1;
                    s.connected = true;
                }
                m::mqtt_connected(true);
                tracing::info!(
                    session_present = ack.session_present,
                    "mqtt uplink connected"
                );
                if ack.session_present {
                    health.ready(HEALTH, "connected, session resumed");
                }
                if matches!(phase, Phase::Running)
                    && let Err(e) = client.subscribe_many(filters.clone()).await
                {
                    tracing::warn!(error = %e, "subscribe request failed");
                }
            }
            Ok(Event::Incoming(Packet::Publish(p))) => {
                if !matches!(phase, Phase::Running) {
                    // Not ours to take any more: unacked, the broker keeps it for the next session.
                    continue;
                }
                let generation = state.lock().unwrap_or_else(|p| p.into_inner()).generation;
                let received = now_ms();
                let topic = String::from_utf8_lossy(&p.topic).into_owned();
                let qos = p.qos as u8;
                let converted = converter.convert(&topic, &p.payload, qos, p.retain, received)?;
                let mut publish = p;
                publish.payload = bytes::Bytes::new();
                let ticket = AckTicket {
                    publish,
                    generation,
                };
                let msg = match converted {
                    Converted::Store(r) => WriterMsg::Append(r, ticket),
                    Converted::Skip => WriterMsg::AckOnly(ticket),
                };
                outstanding.fetch_add(1, Ordering::SeqCst);
                writer.send(msg).map_err(|_| UplinkError::OutboxGone)?;
            }
            Ok(Event::Incoming(Packet::SubAck(_))) => {
                health.ready(HEALTH, "connected and subscribed");
            }
            Ok(Event::Outgoing(rumqttc::Outgoing::Disconnect)) => {
                tracing::info!("mqtt uplink disconnected cleanly");
                break;
            }
            Ok(_) => {}
            Err(e) => {
                state.lock().unwrap_or_else(|p| p.into_inner()).connected = false;
                // Acks queued for the lost connection must not reach the next one.
                eventloop.clean();
                m::mqtt_connected(false);
                if !matches!(phase, Phase::Running) {
                    // Whatever is unacked is redelivered to the next session.
                    break;
                }
                m::mqtt_reconnect();
                health.not_ready(HEALTH, format!("{e}"));
                tracing::warn!(error = %e, "mqtt uplink connection error; reconnecting");
                tokio::select! {
                    _ = token.cancelled() => {}
                    _ = tokio::time::sleep(Duration::from_millis(cfg.reconnect_delay_ms)) => {}
                }
            }
        }
    }
    acker.abort();
    m::mqtt_connected(false);
    health.not_ready(HEALTH, "stopped");
    Ok(())
}

enum Phase {
    Running,
    Flushing(tokio::sync::oneshot::Receiver<()>, tokio::time::Instant),
    Acking(tokio::time::Instant),
    Disconnecting(tokio::time::Instant),
}

async fn send_ack(client: &AsyncClient, state: &Mutex<ConnState>, t: AckTicket) {
    loop {
        {
            let s = state.lock().unwrap_or_else(|p| p.into_inner());
            if !s.connected || s.generation != t.generation {
                // The broker redelivers it on the new connection; that copy gets its own ack.
                return;
            }
            match client.try_ack(&t.publish) {
                Ok(()) => return,
                Err(rumqttc::v5::ClientError::TryRequest(_)) => {}
                Err(_) => return,
            }
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}
