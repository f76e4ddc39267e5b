//! tillstream store bridge: carries store events from MQTT (POS devices, JSON) into Kafka (Avro,
//! Confluent framing, key = store id) through a durable outbox, dead-letters bad input, and
//! replicates each store's catalog documents and each device's sync receipt back down as retained
//! MQTT messages.
//!
//! Delivery guarantee (uplink): an MQTT message is acked only after its record (or its dead letter)
//! is fsync'd in the outbox; records leave the outbox only after Kafka confirmed them (or are set
//! aside, with their reason, in its quarantine when Kafka cannot take their topic); per-store order
//! is kept end to end. At-least-once: crashes and reconnects can duplicate, never lose. A full disk
//! stops the acks, never the bridge. Downlink: at-least-once, offsets stored after the PUBACK.
//!
//! # Layout
//! - [`config`]: [`Config`]; [`metrics`]: names and emit functions.
//! - Pure: [`validate`] (topic + payload → event, or a rejection with its reason), [`bounds`]
//!   (input bounds before any arithmetic), [`routes`],
//!   [`fleet`] (device → store), [`json_schema`] (the published device JSON contract),
//!   [`quarantine`] (which Kafka errors set a topic aside, and when).
//! - [`redrive`]: the same validation and conversion for a dead letter re-driven by `tillctl`.
//! - I/O edges: [`uplink`] (the MQTT session: convert, hand to the outbox, ack when durable) →
//!   [`outbox`] (SQLite writer thread with group commit, reader, disk reserve) → [`drainer`] (the
//!   producer, in outbox-id order); [`downlink`] (Kafka → retained MQTT).
//! - [`start`] wires them under one shutdown guard (stages: intake, drain, outbox) and returns a
//!   [`Running`].

pub mod bounds;
pub mod config;
pub mod downlink;
pub mod drainer;
pub mod fleet;
pub mod json_schema;
pub mod metrics;
pub mod outbox;
pub mod quarantine;
pub mod redrive;
pub mod routes;
pub mod uplink;
pub mod validate;

use std::sync::Arc;
use std::time::Duration;

use rdkafka::error::KafkaError;
use rdkafka::producer::{BaseProducer, Producer};
use tillstream_contracts::{EventKind, Registry, SourceKind};
use tillstream_runtime::kafka::{self, DeadLetters, Source};
use tillstream_runtime::retry::Backoff;
use tillstream_runtime::service::{ShutdownGuard, TaskFailure};
use tillstream_runtime::{CancellationToken, Classify, ErrorClass, Health, ops};

pub use config::Config;
pub use uplink::SERVICE;

use crate::drainer::{Drainer, Refused};
use crate::outbox::{Record, WriterMsg};
use crate::uplink::{AckTicket, Converter};
use crate::validate::Classifier;

#[derive(Debug, thiserror::Error)]
pub enum BridgeError {
    #[error("fleet: {0}")]
    Fleet(#[from] fleet::FleetError),
    #[error("routes: {0}")]
    Routes(#[from] routes::RouteError),
    #[error("registry: {0}")]
    Registry(#[from] tillstream_contracts::RegistryError),
    #[error("kafka: {0}")]
    Kafka(#[from] KafkaError),
    #[error("outbox: {0}")]
    Outbox(#[from] outbox::OutboxError),
    #[error("uplink: {0}")]
    Uplink(#[from] uplink::UplinkError),
    #[error("drainer: {0}")]
    Drainer(#[from] drainer::DrainerError),
    #[error("downlink: {0}")]
    Downlink(#[from] downlink::DownlinkError),
    #[error("ops endpoint: {0}")]
    Ops(#[from] std::io::Error),
    #[error(transparent)]
    Task(#[from] TaskFailure),
}

impl Classify for BridgeError {
    fn class(&self) -> ErrorClass {
        match self {
            BridgeError::Registry(e) => e.class(),
            BridgeError::Kafka(e) => e.class(),
            _ => ErrorClass::Fatal,
        }
    }
}

/// A started bridge.
pub type Running = tillstream_runtime::service::Running<BridgeError>;

/// Runs the bridge until `token` is cancelled (SIGTERM), then stops in order.
pub async fn run(config: Config, token: CancellationToken) -> Result<(), BridgeError> {
    start(config, token).await?.wait().await
}

/// Kinds the bridge encodes: every routed kind plus dead letters.
fn kinds(routes: &routes::Routes) -> Vec<EventKind> {
    let mut k: Vec<EventKind> = routes.iter().map(|r| r.kind).collect();
    k.push(EventKind::DeadLetter);
    k.sort();
    k.dedup();
    k
}

/// Starts every component and returns once the ops endpoint listens.
pub async fn start(config: Config, token: CancellationToken) -> Result<Running, BridgeError> {
    let fleet = fleet::SharedFleet::new(fleet::Fleet::load(&config.fleet_file)?);
    let routes = routes::Routes::new(&config.effective_routes())?;
    tracing::info!(
        devices = fleet.current().len(),
        routes = config.effective_routes().len(),
        topic_levels = ?config.topic_levels,
        "store bridge starting"
    );
    // Every readiness check is declared before the ops endpoint answers: a component that
    // registered itself once its task ran would leave a window in which /readyz says ready
    // without it (seen: devices published before the uplink had subscribed, and mosquitto
    // discarded those messages, as it does for a topic nobody subscribes to).
    let health = Health::new();
    health.register("kafka");
    health.register("registry");
    health.register(uplink::HEALTH);
    if config.downlink.enabled {
        health.register(downlink::HEALTH);
    }
    let ops_addr = ops::serve(&config.ops, health.clone(), token.clone()).await?;

    let registry = Registry::new(config.registry.clone())?;
    let kinds = kinds(&routes);
    // Every schema id up front: the hot path never waits on HTTP.
    let mut backoff = Backoff::new(Duration::from_millis(200));
    loop {
        match registry.warm_up(&kinds).await {
            Ok(()) => break,
            Err(e) if e.class() == ErrorClass::Retryable && !token.is_cancelled() => {
                health.not_ready("registry", e.to_string());
                tracing::warn!(error = %e, "schema registry not ready; retrying");
                backoff.wait(&token).await;
            }
            Err(e) => return Err(e.into()),
        }
    }
    health.ready("registry", "schema ids resolved");

    let dl_producer = kafka::producer(&config.kafka, "tillstream-store-bridge-dlq")?;
    let dead_letters = DeadLetters::new(
        dl_producer,
        &config.dead_letter.topic,
        registry.clone(),
        uplink::SERVICE,
        metrics::DEAD_LETTERS_TOTAL,
    );
    let converter = Converter {
        classifier: Arc::new(Classifier {
            routes,
            fleet: fleet.clone(),
            ignore: config.mqtt.ignore.clone(),
            limits: config.limits.clone(),
        }),
        registry: registry.clone(),
        dead_letters: dead_letters.clone(),
        dead_letter: config.dead_letter.clone(),
        record_headers: config.kafka.record_headers,
    };

    let (ack_tx, ack_rx) = tokio::sync::mpsc::unbounded_channel::<Vec<AckTicket>>();
    let ob = outbox::start(&config.outbox, ack_tx)?;
    let writer_tx = ob.tx.clone();
    let drainer = Drainer {
        kafka: config.kafka.clone(),
        client_id: "tillstream-store-bridge".into(),
        shared: ob.shared.clone(),
        reader: Some(ob.reader),
        writer: ob.tx.clone(),
        max_in_flight: config.outbox.max_in_flight.max(1),
        window_ms: config.outbox.in_flight_window_ms,
        linger_ms: config.outbox.producer_linger_ms,
        delivery_timeout_ms: config.outbox.delivery_timeout_ms,
        shutdown_drain: Duration::from_millis(config.outbox.shutdown_drain_ms),
        quarantine_after_failures: config.outbox.quarantine_after_failures,
        quarantine_recheck: Duration::from_millis(config.outbox.quarantine_recheck_ms),
        refused: Arc::new(RefusedToDeadLetter(converter.clone())),
        topics: {
            let mut t: Vec<String> = config
                .routes
                .iter()
                .map(|r| r.kafka_topic.clone())
                .collect();
            t.push(config.dead_letter.topic.clone());
            t.sort();
            t.dedup();
            t
        },
    };
    // Stopped in stages: intake first (the uplink stops taking MQTT messages, makes what it
    // received durable and acks it; the downlink commits), then the drainer finishes in-flight
    // deliveries (the rest stays in the outbox), then the writer commits the last deletes and
    // closes the database. A component failing stops everything in the same order.
    let mut guard = ShutdownGuard::new(uplink::SERVICE, token);
    let intake = guard.stage("intake");
    guard.spawn_task("uplink", {
        let run = uplink::run(
            config.mqtt.clone(),
            converter,
            ob.tx.clone(),
            ack_rx,
            health.clone(),
            intake.clone(),
        );
        async move { run.await.map_err(BridgeError::from) }
    });
    if config.downlink.enabled {
        let run = downlink::run(
            config.downlink.clone(),
            config.mqtt.clone(),
            config.kafka.clone(),
            registry.clone(),
            dead_letters.clone(),
            health.clone(),
            intake.clone(),
        );
        guard.spawn_task(
            "downlink",
            async move { run.await.map_err(BridgeError::from) },
        );
    }
    // A device added to the fleet file is accepted within seconds, without a restart.
    guard.spawn_task("fleet watch", {
        let watch = fleet::watch(config.fleet_file.clone(), fleet, intake.clone());
        async move {
            watch.await;
            Ok(())
        }
    });
    guard.spawn_task(
        "kafka probe",
        probe_kafka(
            config.kafka.clone(),
            config.dead_letter.topic.clone(),
            health.clone(),
            intake,
        ),
    );
    let drain = guard.stage("drain");
    guard.spawn_task("drainer", async move {
        drainer.run(drain).await.map_err(BridgeError::from)
    });
    let close = guard.stage("outbox");
    let writer_thread = ob.thread;
    guard.spawn_task("outbox writer", async move {
        let mut join = tokio::task::spawn_blocking(move || writer_thread.join());
        tokio::select! {
            r = &mut join => return writer_result(r),
            _ = close.cancelled() => {}
        }
        let _ = writer_tx.send(WriterMsg::Shutdown);
        let r = writer_result(join.await);
        tracing::info!("store bridge stopped");
        r
    });
    Ok(Running::new(ops_addr, health, (), guard))
}

/// What the outbox writer thread ended with.
fn writer_result(
    r: Result<std::thread::Result<Result<(), outbox::OutboxError>>, tokio::task::JoinError>,
) -> Result<(), BridgeError> {
    match r {
        Ok(Ok(res)) => res.map_err(BridgeError::from),
        _ => Err(BridgeError::Task(TaskFailure {
            task: "outbox writer",
            detail: "panicked".into(),
        })),
    }
}

/// Readiness of Kafka: a metadata request every few seconds.
async fn probe_kafka(
    kafka_cfg: kafka::KafkaConfig,
    topic: String,
    health: Health,
    token: CancellationToken,
) -> Result<(), BridgeError> {
    let probe: BaseProducer = match kafka_cfg
        .client_config("tillstream-store-bridge-probe")
        .create()
    {
        Ok(p) => p,
        Err(e) => {
            health.broken("kafka", e.to_string());
            return Err(e.into());
        }
    };
    let probe = Arc::new(probe);
    loop {
        let p = probe.clone();
        let topic = topic.clone();
        let res = tokio::task::spawn_blocking(move || {
            // One topic, generous timeout: tansu answers all-topic metadata slowly under load.
            p.client()
                .fetch_metadata(Some(&topic), Duration::from_secs(10))
                .map(|md| md.brokers().len())
        })
        .await;
        match res {
            Ok(Ok(n)) if n > 0 => {
                health.ready("kafka", format!("{n} broker(s)"));
                metrics::kafka_reachable(true);
            }
            other => {
                let detail = match other {
                    Ok(Err(e)) => e.to_string(),
                    _ => "no brokers".into(),
                };
                health.not_ready("kafka", detail);
                metrics::kafka_reachable(false);
            }
        }
        tokio::select! {
            _ = token.cancelled() => return Ok(()),
            _ = tokio::time::sleep(Duration::from_secs(3)) => {}
        }
    }
}

/// Turns a record Kafka refused for good into a dead letter carrying its bytes.
struct RefusedToDeadLetter(Converter);

impl Refused for RefusedToDeadLetter {
    fn dead_letter_for(&self, record: &Record, error: &KafkaError) -> Option<Record> {
        let already_dead = record.kind == EventKind::DeadLetter.name();
        let max = self.0.dead_letter.max_payload_bytes;
        let payload: &[u8] = if already_dead {
            &[]
        } else {
            &record.value[..record.value.len().min(max)]
        };
        let source = Source {
            kind: SourceKind::Mqtt,
            topic: &record.topic,
            partition: None,
            offset: None,
            key: Some(&record.key),
            headers: record.headers.iter().cloned().collect(),
        };
        let dl = self.0.dead_letters.record(
            &source,
            payload,
            validate::Reason::KafkaRejected.as_str(),
            &format!(
                "Kafka refused the {} record ({} bytes): {error}",
                record.kind,
                record.value.len()
            ),
            Some(&record.store),
            None,
            None,
            record.received_at_ms,
        );
        metrics::dead_lettered(validate::Reason::KafkaRejected.as_str());
        self.0
            .dead_letter_to_record(&dl, record.received_at_ms)
            .ok()
    }
}
