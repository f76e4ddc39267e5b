//! The conflict detector: the third consumer of `tillstream.store-events`. Evaluates the retail
//! rules (oversell, reservation breach, price variance, loyalty double redemption, duplicate
//! business key, stale count) in event time, takes the dedup's identity collisions from
//! `tillstream.conflicts` into its review queue, writes its verdicts and their resolutions to
//! `tillstream.conflicts` and the compensating actions to `tillstream.compensations`, replays the
//! append-only `tillstream.price-lists.history`, and serves the review queue (HTTP, `tillctl
//! conflicts`).
//!
//! Delivery guarantee: exactly-once effects in its database (the projection's pattern: an event-id
//! gate and the input offsets in each batch's transaction, the consumer starting from those
//! offsets); the records a transaction decides are written to an outbox in it and published after
//! it commits, at-least-once, with a restart dropping those the topics already hold. Reprocessing
//! the same input gives byte-identical records (ids and contents are functions of the evidence).
//!
//! # Layout
//! - [`config`]: [`Config`] (the API token never prints); [`error`]: [`DetectorError`];
//!   [`metrics`]: names and emit functions; [`fixtures`]: event builders for tests and benches.
//! - [`core`] (pure): timelines, the rules, verdict identity, the records a verdict becomes.
//! - I/O edges: [`decode`] (records in), [`db`] + `migrations/` (SQL state, own namespace),
//!   [`partitions`] (start offsets from the database, what to restore), [`processor`] (the batch
//!   loop, restores, price lists), [`history`] (the price-list history tailer), [`output`]
//!   (records out, framed), [`publish`] (the outbox publisher), [`api`] (the review queue).
//! - [`settle`] (pure): raised verdicts wait for their store's stream to move on before they are
//!   written; one superseded meanwhile is withdrawn unwritten.
//! - [`start`] wires them and returns a [`Running`].

pub mod api;
pub mod config;
pub mod core;
pub mod db;
pub mod decode;
pub mod error;
pub mod fixtures;
pub mod history;
pub mod metrics;
pub mod output;
pub mod partitions;
pub mod processor;
pub mod publish;
pub mod settle;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tillstream_contracts::{EventKind, Registry};
use tillstream_runtime::kafka::{self, ConsumerSettings, DeadLetters, InputConsumer};
use tillstream_runtime::service::ShutdownGuard;
use tillstream_runtime::{CancellationToken, Classify, ErrorClass, Health};
use tokio::sync::Notify;

pub use config::{Config, SERVICE};
pub use error::DetectorError;
pub use processor::Counters;

use crate::core::{Detector, Mode};
use crate::db::Db;
use crate::decode::Decoder;
use crate::output::{Encoder, SchemaIds};
use crate::partitions::{OffsetHook, Partitions};

/// What a running detector lets its caller observe.
#[derive(Debug, Clone)]
pub struct Observed {
    /// Where the review queue API listens (`None`: no token configured).
    pub api_addr: Option<SocketAddr>,
    pub counters: Arc<Counters>,
    pub db: Db,
}

/// A started detector.
pub type Running = tillstream_runtime::service::Running<DetectorError, Observed>;

/// Runs until `token` is cancelled (then finishes the batch in hand) or a fatal error.
pub async fn run(config: Config, token: CancellationToken) -> Result<(), DetectorError> {
    start(config, token).await?.wait().await
}

/// Connects to the database, retrying while it is unreachable.
async fn connect_db(
    config: &Config,
    token: &CancellationToken,
) -> Result<Option<Db>, DetectorError> {
    let mut backoff = tillstream_runtime::retry::Backoff::new(Duration::from_millis(200));
    loop {
        match Db::connect(&config.database).await {
            Ok(db) => return Ok(Some(db)),
            Err(e) if e.class() == ErrorClass::Retryable => {
                tracing::warn!(error = %e, "database unreachable; retrying");
                if !backoff.wait(token).await {
                    return Ok(None);
                }
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// Starts the service: database (migrated), registry, topics checked, every price list read,
/// then the batch loop, the history tailer, the publisher, the review queue API and the gauges.
/// Must run on a multi-thread runtime (the partition hook blocks in place to read offsets).
pub async fn start(config: Config, token: CancellationToken) -> Result<Running, DetectorError> {
    let cfg = config.detector.clone();
    cfg.validate(&config.kafka, &config.rules)
        .map_err(DetectorError::Config)?;
    let health = Health::new();
    for check in ["database", "kafka", "price-lists"] {
        health.register(check);
    }
    let ops_addr =
        tillstream_runtime::ops::serve(&config.ops, health.clone(), token.clone()).await?;
    let Some(db) = connect_db(&config, &token).await? else {
        return Err(DetectorError::Config(
            "stopped before the database was reachable".into(),
        ));
    };
    health.ready("database", db.backend().name());

    let registry = Registry::new(config.registry.clone())?;
    registry.warm_up(&SchemaIds::KINDS).await?;
    registry.warm_up(&[EventKind::DeadLetter]).await?;
    let encoder = Encoder::new(SchemaIds::fetch(&registry).await?, &cfg);
    let producer = kafka::producer(&config.kafka, &cfg.client_id)?;
    check_topics(&config.kafka, &cfg)?;
    let dead_letters = DeadLetters::new(
        producer.clone(),
        &cfg.dead_letter_topic,
        registry.clone(),
        SERVICE,
        metrics::DEAD_LETTERS,
    );

    // Every price list before any store event is judged: the stored ones, then the topic to its
    // end (the bootstrap barrier that makes a reprocessing judge every sale with every list).
    let mut detector = Detector::new(config.rules.clone());
    let mut decoder = Decoder::new(registry.clone());
    let mut stored = 0;
    for body in db.price_lists().await? {
        let list = serde_json::from_str(&body).map_err(db::DbError::from)?;
        let _ = detector.apply_price_list(&list, Mode::Replay);
        stored += 1;
    }
    let (kc, topic) = (config.kafka.clone(), cfg.price_history_topic.clone());
    let (msgs, next) = tokio::task::spawn_blocking(move || {
        history::read_to_end(&kc, &topic, Duration::from_secs(120))
    })
    .await
    .map_err(|e| DetectorError::Topology(e.to_string()))??;
    let lists = history::decode_all(&mut decoder, &dead_letters, &msgs, &token).await?;
    let mut fresh = Vec::new();
    for list in &lists {
        if let Ok(Some(_)) = detector.apply_price_list(list, Mode::Replay) {
            fresh.push((
                list.event_id.clone(),
                list.store_id.clone(),
                list.price_list_id.clone(),
                list.effective_from,
                serde_json::to_string(list).map_err(db::DbError::from)?,
            ));
        }
    }
    db.insert_price_lists(&fresh).await?;
    metrics::price_lists(fresh.len());
    health.ready(
        "price-lists",
        format!(
            "{} known ({stored} stored, {} new from the topic)",
            detector.price_list_count(),
            fresh.len()
        ),
    );
    tracing::info!(
        lists = detector.price_list_count(),
        new = fresh.len(),
        "price-list history read to its end"
    );

    let shared = Arc::new(std::sync::Mutex::new(Partitions::default()));
    let topics = [cfg.input_topic.as_str(), cfg.conflicts_topic.as_str()];
    let hook = OffsetHook::new(db.clone(), &cfg.input_topic, &topics, shared.clone());
    let settings = ConsumerSettings::new(&cfg.group_id, &cfg.client_id);
    let consumer = InputConsumer::new(&config.kafka, &settings, SERVICE, hook, &topics)?;

    let publish_wake = Arc::new(Notify::new());
    let lists_waiting = Arc::new(Notify::new());
    let (lists_tx, lists_rx) = tokio::sync::mpsc::unbounded_channel();
    let counters = Arc::new(Counters::default());
    let processor = processor::Processor {
        cfg: config.clone(),
        db: db.clone(),
        decoder: decoder.clone(),
        detector,
        encoder: encoder.clone(),
        dead_letters: dead_letters.clone(),
        shared: shared.clone(),
        counters: counters.clone(),
        health: health.clone(),
        lists: lists_rx,
        lists_waiting: lists_waiting.clone(),
        publish: publish_wake.clone(),
        seen: Default::default(),
        store_partition: Default::default(),
        held: settle::HeldVerdicts::new(cfg.hold_ms),
    };
    let mut guard = ShutdownGuard::new(SERVICE, token.clone());
    let intake = guard.stage("intake");
    guard.spawn_task("batch loop", processor.run(consumer, intake.clone()));
    let lag = kafka::LagGauge::new(metrics::CONSUMER_LAG, &cfg.group_id, &topics);
    guard.spawn_task(
        "consumer lag",
        lag.task(&config.kafka, &cfg.client_id, intake.clone())?,
    );
    guard.spawn_task(
        "price-list history",
        history::tail(
            config.kafka.clone(),
            cfg.price_history_topic.clone(),
            cfg.client_id.clone(),
            next,
            decoder,
            dead_letters,
            lists_tx,
            lists_waiting,
            intake,
        ),
    );
    let publishing = guard.stage("publisher");
    let publisher = publish::Publisher {
        db: db.clone(),
        producer,
        kafka: config.kafka.clone(),
        cfg: cfg.clone(),
        shared,
        wake: publish_wake.clone(),
        fault: config.fault.clone(),
    };
    guard.spawn_task("outbox publisher", publisher.run(publishing));
    let api_stop = guard.stage("api");
    let api_addr = api::serve(
        &config.api,
        db.clone(),
        encoder,
        publish_wake,
        api_stop.clone(),
    )
    .await?;
    guard.spawn_task(
        "queue gauges",
        gauges(db.clone(), cfg.gauge_interval_ms, api_stop),
    );
    Ok(Running::new(
        ops_addr,
        health,
        Observed {
            api_addr,
            counters,
            db,
        },
        guard,
    ))
}

/// The input, conflicts and compensations topics must exist with one partition count (a store's
/// records go to the same partition number everywhere); the history and dead-letter topics exist.
fn check_topics(
    kafka_cfg: &kafka::KafkaConfig,
    cfg: &config::DetectorConfig,
) -> Result<(), DetectorError> {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    let client: BaseConsumer = kafka_cfg
        .client_config("tillstream-conflict-detector-check")
        .create()?;
    kafka::check_topics(
        client.client(),
        &[
            &cfg.input_topic,
            &cfg.conflicts_topic,
            &cfg.compensations_topic,
        ],
        &[&cfg.price_history_topic, &cfg.dead_letter_topic],
        Duration::from_secs(15),
    )?;
    Ok(())
}

/// Refreshes the queue gauges (open conflicts per owner, oldest open age, outbox size).
async fn gauges(db: Db, every_ms: u64, stop: CancellationToken) -> Result<(), DetectorError> {
    loop {
        match db.queue_stats().await {
            Ok((by_owner, oldest)) => {
                let now = tillstream_runtime::clock::now_ms();
                let age = oldest.map_or(0.0, |o| ((now - o).max(0) as f64) / 1000.0);
                metrics::queue(&by_owner, age);
            }
            Err(e) => tracing::debug!(error = %e, "queue gauges not refreshed"),
        }
        tokio::select! {
            _ = stop.cancelled() => return Ok(()),
            _ = tokio::time::sleep(Duration::from_millis(every_ms.max(100))) => {}
        }
    }
}
