//! The dedup service: reads `tillstream.store-events.raw`, writes each event once to
//! `tillstream.store-events` (same bytes, key, headers and partition, so per-store order is kept),
//! reports identity collisions to `tillstream.conflicts` and per-device sequence gaps to
//! `tillstream.sequence-gaps`, dead-letters what it cannot decode, and keeps its state in memory,
//! rebuilt per partition from the co-partitioned changelog `tillstream.dedup.changelog`.
//!
//! Delivery guarantee: at-least-once with idempotent downstream. Per batch: outputs delivered ->
//! changelog record delivered -> gap records delivered -> input offsets stored (committed by the
//! auto-commit timer, on revoke and on shutdown). A crash can duplicate at most the one batch in
//! flight per partition (outputs delivered, changelog record not yet written); a batch whose
//! changelog record was written is never replayed, because a partition resumes where its changelog
//! ends. With `delivery = "transactional"` (Apache Kafka only) the whole batch, changelog and
//! offsets included, is one Kafka transaction.
//!
//! # Layout
//! - [`config`]: [`Config`], [`DeliveryMode`]; [`error`]: [`DedupError`]; [`metrics`]: names and
//!   emit functions.
//! - [`core`] (pure): a batch of decoded events in, verdicts, conflicts, gap records and the
//!   changelog delta out. [`changelog`] (pure): the delta's record format. [`receipts`] (pure):
//!   a device's sync receipt from its sequence state, and their per-device rate limit.
//! - I/O edges: [`decode`] (raw record -> core input), [`restore`] (partition hook: state from the
//!   changelog, start offsets), [`produce`] (records out, the batch transaction), [`processor`]
//!   (the batch loop), [`receipt_sender`] (receipts out, after their batch is durable).
//! - [`start`] wires them and returns a [`Running`].

pub mod changelog;
pub mod config;
pub mod core;
pub mod decode;
pub mod error;
pub mod metrics;
pub mod processor;
pub mod produce;
pub mod receipt_sender;
pub mod receipts;
pub mod restore;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::consumer::Consumer;
use tillstream_contracts::{EventKind, Registry};
use tillstream_runtime::kafka::{self, ConsumerSettings, DeadLetters, InputConsumer};
use tillstream_runtime::service::ShutdownGuard;
use tillstream_runtime::{CancellationToken, Health};

pub use config::{Config, DedupConfig, DeliveryMode, SERVICE};
pub use error::DedupError;
pub use processor::{BEYOND_HORIZON_HEADER, Counters, Observed};

use crate::processor::BatchProcessor;
use crate::produce::BatchTransaction;
use crate::restore::{Hook, Restorer, Shared};

/// A started dedup (its [`Observed`] counters and state are for tests and benches).
pub type Running = tillstream_runtime::service::Running<DedupError, Observed>;

/// Runs until `token` is cancelled (then finishes the batch in hand and commits) or a fatal error.
pub async fn run(config: Config, token: CancellationToken) -> Result<(), DedupError> {
    start(config, token).await?.wait().await
}

/// Starts the service: checks the topics, warms up the registry, serves the ops endpoint, and
/// starts the batch loop on its input consumer.
pub async fn start(config: Config, token: CancellationToken) -> Result<Running, DedupError> {
    let cfg = &config.dedup;
    cfg.validate(&config.kafka).map_err(DedupError::Config)?;
    let health = Health::new();
    health.register(restore::HEALTH);
    let ops_addr =
        tillstream_runtime::ops::serve(&config.ops, health.clone(), token.clone()).await?;

    let registry = Registry::new(config.registry.clone())?;
    registry
        .warm_up(&[
            EventKind::ConflictDetected,
            EventKind::SequenceGap,
            EventKind::DeadLetter,
            EventKind::DeviceReceipt,
        ])
        .await?;

    let restorer = Restorer::new(
        &config.kafka,
        &cfg.group_id,
        &cfg.client_id,
        &cfg.changelog_topic,
        Duration::from_millis(cfg.restore_timeout_ms),
    )?;
    check_topics(&restorer, cfg)?;

    let mut producer_cfg = config.kafka.clone();
    producer_cfg
        .properties
        .extend(cfg.producer_properties.clone());
    // Receipts are published by their own task at their own pace, after the batches they cover
    // have committed; on a transactional producer they would land between a commit and the next
    // begin ("Erroneous state") or inside another batch's transaction (and fail it when they time
    // out), so in that mode they get a producer of their own without a transactional id.
    let receipt_producer = match cfg.delivery {
        DeliveryMode::Transactional => Some(kafka::producer(
            &producer_cfg,
            &format!("{}-receipts", cfg.client_id),
        )?),
        DeliveryMode::AtLeastOnce => None,
    };
    if cfg.delivery == DeliveryMode::Transactional {
        let id = cfg
            .transactional_id
            .clone()
            .unwrap_or_else(|| format!("{}-txn", cfg.client_id));
        producer_cfg
            .properties
            .insert("transactional.id".into(), id);
    }
    let producer = kafka::producer(&producer_cfg, &cfg.client_id)?;
    let transaction = BatchTransaction::new(cfg.delivery, producer.clone());
    transaction.init().await?;
    let dead_letters = DeadLetters::new(
        producer.clone(),
        &cfg.dead_letter_topic,
        registry.clone(),
        SERVICE,
        metrics::DEAD_LETTERS,
    );

    let shared = Arc::new(Shared::default());
    let hook = Hook::new(
        shared.clone(),
        restorer,
        cfg.core(),
        &cfg.input_topic,
        health.clone(),
    );
    let settings = ConsumerSettings::new(&cfg.group_id, &cfg.client_id);
    let consumer = InputConsumer::new(
        &config.kafka,
        &settings,
        SERVICE,
        hook,
        &[cfg.input_topic.as_str()],
    )?;
    let counters = Arc::new(Counters::default());
    let (receipts_tx, receipts_rx) = tokio::sync::mpsc::unbounded_channel();
    let receipts_on = cfg.receipt_interval_ms > 0;
    let processor = BatchProcessor {
        config: config.clone(),
        registry: registry.clone(),
        producer: producer.clone(),
        transaction,
        dead_letters,
        shared: shared.clone(),
        counters: counters.clone(),
        group_seq: 0,
        writer_id: u64::from(uuid::Uuid::new_v4().as_u128() as u32) << 32,
        gauge_stores: BTreeSet::new(),
        last_gauges: Instant::now(),
        receipts: receipts_on.then_some(receipts_tx),
    };
    let mut guard = ShutdownGuard::new(SERVICE, token);
    let intake = guard.stage("batches");
    guard.spawn_task("batch loop", processor.run(consumer, intake.clone()));
    let lag = kafka::LagGauge::new(metrics::CONSUMER_LAG, &cfg.group_id, &[&cfg.input_topic]);
    guard.spawn_task(
        "consumer lag",
        lag.task(&config.kafka, &cfg.client_id, intake)?,
    );
    if receipts_on {
        let schema_id = registry.schema_id(EventKind::DeviceReceipt, 1).await?;
        let stop = guard.stage("receipts");
        guard.spawn_task(
            "receipt sender",
            receipt_sender::run(
                receipts_rx,
                receipt_producer.unwrap_or_else(|| producer.clone()),
                cfg.receipts_topic.clone(),
                schema_id,
                cfg.receipt_interval_ms,
                stop,
            ),
        );
    }
    Ok(Running::new(
        ops_addr,
        health,
        Observed { counters, shared },
        guard,
    ))
}

/// The output, changelog and input topics must have the same partition count (outputs and state are
/// co-partitioned with the input); the others must exist.
fn check_topics(restorer: &Restorer, cfg: &DedupConfig) -> Result<(), DedupError> {
    let mut present = vec![
        cfg.gaps_topic.as_str(),
        cfg.conflicts_topic.as_str(),
        cfg.dead_letter_topic.as_str(),
    ];
    if cfg.receipt_interval_ms > 0 {
        present.push(cfg.receipts_topic.as_str());
    }
    kafka::check_topics(
        restorer.consumer().client(),
        &[&cfg.input_topic, &cfg.output_topic, &cfg.changelog_topic],
        &present,
        Duration::from_secs(15),
    )?;
    Ok(())
}
