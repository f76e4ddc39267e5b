//! tillstream inventory projection: projects the deduplicated store-event stream
//! (`tillstream.store-events`) into SQL tables analysts query (stock on hand, the stock movement
//! ledger, hourly sales, reservations, store sync status) on PostgreSQL or SQLite.
//!
//! Delivery guarantee: exactly-once effects in the database. Each batch is one transaction that
//! applies the events the idempotency gate admits and records the next offset per partition; the
//! consumer starts from the offsets in the database. The tables are a pure function of the event
//! stream, so a replay (`rebuild`) reproduces them byte for byte.
//!
//! Modules: `model` (pure projection), `db` (SQL, offsets, blue/green sets, canonical dump),
//! `decode`, `consumer` (live loop), `rebuild`, `metrics`, `config`.

pub mod config;
pub mod consumer;
pub mod db;
pub mod decode;
pub mod metrics;
pub mod model;
pub mod rebuild;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tillstream_contracts::{Registry, RegistryError};
use tillstream_runtime::kafka::{self, DeadLetterError, DeadLetters};
use tillstream_runtime::service::{ShutdownGuard, TaskFailure};
use tillstream_runtime::{CancellationToken, Classify, ErrorClass, Health, ops};

pub use config::{Config, SERVICE};
pub use db::{Color, Db, DbError};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Db(#[from] DbError),
    #[error("kafka: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    #[error("schema registry: {0}")]
    Registry(#[from] RegistryError),
    #[error("dead letter: {0}")]
    DeadLetter(#[from] DeadLetterError),
    #[error("ops endpoint: {0}")]
    Io(#[from] std::io::Error),
    #[error("{0}")]
    Other(String),
    #[error(transparent)]
    Task(#[from] TaskFailure),
}

impl Classify for Error {
    fn class(&self) -> ErrorClass {
        match self {
            Error::Db(e) => e.class(),
            Error::Kafka(e) => e.class(),
            Error::Registry(e) => e.class(),
            Error::DeadLetter(_) | Error::Io(_) => ErrorClass::Retryable,
            Error::Other(_) | Error::Task(_) => ErrorClass::Fatal,
        }
    }
}

/// Connects to the database, retrying while it is unreachable (until `token` is cancelled).
pub async fn connect_db(cfg: &Config, token: &CancellationToken) -> Result<Option<Db>, Error> {
    let mut delay = Duration::from_millis(200);
    loop {
        match Db::connect(&cfg.database).await {
            Ok(db) => return Ok(Some(db)),
            Err(e) if e.class() == ErrorClass::Retryable => {
                tracing::warn!(error = %e, "database unreachable; retrying");
                tokio::select! {
                    _ = token.cancelled() => return Ok(None),
                    _ = tokio::time::sleep(delay) => {}
                }
                delay = (delay * 2).min(Duration::from_secs(5));
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// A started live projection.
pub type Running = tillstream_runtime::service::Running<Error>;

/// Starts the live projection: ops endpoint, database (migrated, views over the active set), the
/// input consumer with database-held offsets, and the batch loop. Must run on a multi-thread
/// runtime (the partition hook blocks in place to read offsets).
pub async fn start(cfg: Config, token: CancellationToken) -> Result<Running, Error> {
    let health = Health::new();
    health.register("database");
    health.register("kafka");
    let ops_addr = ops::serve(&cfg.ops, health.clone(), token.clone()).await?;
    let mut guard = ShutdownGuard::new(SERVICE, token);
    let batches = guard.stage("batches");
    guard.spawn_task("batch loop", run_with(cfg, batches, health.clone()));
    Ok(Running::new(ops_addr, health, (), guard))
}

/// Runs the live projection until `token` is cancelled (SIGTERM): the batch in hand is finished
/// (or rolled back by a failure), then the loop exits; the database offsets make either safe.
pub async fn run(cfg: Config, token: CancellationToken) -> Result<(), Error> {
    start(cfg, token).await?.wait().await
}

async fn run_with(cfg: Config, token: CancellationToken, health: Health) -> Result<(), Error> {
    let Some(db) = connect_db(&cfg, &token).await? else {
        return Ok(());
    };
    let color = db.ensure_views().await?;
    health.ready("database", db.backend().name());
    tracing::info!(backend = db.backend().name(), %color, "database ready");

    let registry = Registry::new(cfg.registry.clone())?;
    let producer = kafka::producer(&cfg.kafka, "tillstream-inventory-projection-dlq")?;
    let dead = DeadLetters::new(
        producer,
        &cfg.dead_letter_topic,
        registry.clone(),
        "inventory-projection",
        metrics::DEAD_LETTERS_TOTAL,
    );
    let parts = Arc::new(Mutex::new(consumer::Partitions::default()));
    let hook = consumer::OffsetHook::new(db.clone(), &cfg.topic, parts.clone());
    let consumer = consumer::Live::new_consumer(&cfg, hook)?;
    health.ready("kafka", format!("subscribed to {}", cfg.topic));
    // The lag loop reads watermarks with a client of its own (no group): it never holds the input
    // consumer, which is closed here, by its owner (a runtime shutting down waits for a blocking
    // thread stuck closing a consumer whose broker has gone meanwhile: once a 900 s test hang).
    let lag_client: rdkafka::consumer::BaseConsumer = cfg
        .kafka
        .client_config("tillstream-inventory-projection-lag")
        .create()?;
    let lag_token = token.child_token();
    let lag = tokio::spawn(consumer::Live::lag_loop(
        Arc::new(lag_client),
        cfg.topic.clone(),
        parts.clone(),
        lag_token.clone(),
    ));
    let mut live = consumer::Live {
        cfg,
        db,
        registry,
        dead,
        consumer,
        parts,
        token,
        health,
    };
    let res = live.run().await;
    if let Err(e) = &res {
        tracing::error!(error = %e, "projection stopped");
    }
    kafka::flush(live.dead.producer(), Duration::from_secs(5));
    lag_token.cancel();
    let _ = lag.await;
    drop(live); // closes the consumer (leaves the group) before the service reports it stopped
    res
}
