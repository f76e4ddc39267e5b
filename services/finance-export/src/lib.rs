//! tillstream finance export: books every sale, refund, loyalty redemption, day close and
//! compensation of `tillstream.store-events` (and `tillstream.compensations`) into a double-entry
//! ledger in SQL (PostgreSQL or SQLite), exports each closed store-day as immutable files finance
//! can load (CSV, Parquet, a JSON manifest with row counts, totals and sha256 per file) and
//! reconciles each till's own day totals with what reached the ledger.
//!
//! Delivery guarantee: exactly-once effects in the ledger (event gate and input offsets in the
//! batch's transaction); every line in exactly one delivered export; delivered files never change
//! (late events become adjustment lines of the store's next export).
//!
//! # Layout
//! - [`config`]: [`Config`] and its sections; [`error`]: [`Error`]; [`metrics`]: names and emit
//!   functions.
//! - [`core`] (pure): the chart of accounts and store master data, posting (event -> balanced
//!   lines, one tax rule, checked sums), store-day close decisions, reconciliation.
//! - I/O edges: [`db`] (the ledger's SQL, migrations in its own table), [`decode`] (record ->
//!   input), [`hook`] (start offsets from the database), [`processor`] (the batch loop),
//!   [`exporter`] (close, assign, render, deliver), [`barrier`] (a day its tills closed waits
//!   until the ledger booked what the input held then), [`export`] (the files and where they go).
//! - [`start`] wires the service and returns a [`Running`]; [`run`] runs it until stopped.

pub mod barrier;
pub mod config;
pub mod core;
pub mod db;
pub mod decode;
pub mod error;
pub mod export;
pub mod exporter;
pub mod hook;
pub mod metrics;
pub mod processor;

use std::sync::Arc;
use std::time::Duration;

use tillstream_contracts::Registry;
use tillstream_runtime::kafka::{self, ConsumerSettings, DeadLetters, InputConsumer};
use tillstream_runtime::retry::Backoff;
use tillstream_runtime::service::ShutdownGuard;
use tillstream_runtime::{CancellationToken, Classify, ErrorClass, Health, ops};

pub use config::{Config, FaultConfig, SERVICE};
pub use db::{Db, DbError};
pub use error::Error;

use crate::barrier::CloseBarrier;
use crate::core::{Chart, Stores};
use crate::export::Sink;
use crate::exporter::Exporter;
use crate::hook::OffsetHook;
use crate::processor::{DATABASE_CHECK, Processor};

/// A started finance export.
pub type Running = tillstream_runtime::service::Running<Error>;

/// Loads the chart of accounts (the configured file, or the shipped one) and the stores file.
pub fn load_master_data(cfg: &Config) -> Result<(Chart, Stores), Error> {
    let chart = match &cfg.chart_file {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .map_err(|e| Error::Config(format!("chart_file {}: {e}", path.display())))?;
            Chart::parse(&text).map_err(|e| Error::Config(e.0))?
        }
        None => Chart::embedded(),
    };
    let text = std::fs::read_to_string(&cfg.stores_file)
        .map_err(|e| Error::Config(format!("stores_file {}: {e}", cfg.stores_file.display())))?;
    let stores = Stores::parse(&text).map_err(|e| Error::Config(e.0))?;
    Ok((chart, stores))
}

/// Starts the service: master data (a bad file stops it here), the ops endpoint, then in its
/// tasks the database (waited for while unavailable), the batch loop and the exporter. Must run on
/// a multi-thread runtime (the partition hook blocks in place to read offsets).
pub async fn start(cfg: Config, token: CancellationToken) -> Result<Running, Error> {
    cfg.kafka.validate().map_err(Error::Config)?;
    let (chart, stores) = load_master_data(&cfg)?;
    let sink = Sink::from_config(&cfg.destination)?;
    let health = Health::new();
    health.register(DATABASE_CHECK);
    health.register("kafka");
    let ops_addr = ops::serve(&cfg.ops, health.clone(), token.clone()).await?;
    let db = connect(&cfg, &token, &health).await?;
    let mut guard = ShutdownGuard::new(SERVICE, token.clone());
    let (chart, stores) = (Arc::new(chart), Arc::new(stores));
    let batches = guard.stage("batches");
    let Some(db) = db else {
        return Ok(Running::new(ops_addr, health, (), guard));
    };
    health.ready(DATABASE_CHECK, db.backend().name());
    let registry = Registry::new(cfg.registry.clone())?;
    let producer = kafka::producer(&cfg.kafka, "tillstream-finance-export-dlq")?;
    let dead = DeadLetters::new(
        producer,
        &cfg.dead_letter_topic,
        registry.clone(),
        SERVICE,
        metrics::DEAD_LETTERS,
    );
    let mut topics = vec![cfg.topic.as_str()];
    if !cfg.compensations_topic.is_empty() {
        topics.push(cfg.compensations_topic.as_str());
    }
    let settings = ConsumerSettings::new(&cfg.group_id, "tillstream-finance-export");
    let consumer = InputConsumer::new(
        &cfg.kafka,
        &settings,
        SERVICE,
        OffsetHook::new(db.clone()),
        &topics,
    )?;
    health.ready("kafka", format!("reading {}", topics.join(", ")));
    let lag = kafka::LagGauge::new(metrics::CONSUMER_LAG, &cfg.group_id, &topics);
    guard.spawn_task(
        "consumer lag",
        lag.task(&cfg.kafka, "tillstream-finance-export", batches.clone())?,
    );
    let exporter = Exporter {
        db: db.clone(),
        sink,
        chart: chart.clone(),
        stores: stores.clone(),
        close: cfg.close.clone(),
        barrier: Some(Arc::new(CloseBarrier::new(&cfg.kafka, &topics)?)),
        fault: cfg.fault.clone(),
    };
    let processor = Processor {
        cfg,
        db,
        registry,
        dead,
        consumer,
        chart,
        stores,
        token: batches,
        health: health.clone(),
    };
    guard.spawn_task("batch loop", processor.run());
    let exports = guard.stage("exports");
    guard.spawn_task("exporter", exporter.run(exports));
    Ok(Running::new(ops_addr, health, (), guard))
}

/// Connects to the database, waiting while it is unavailable; `None` when stopped meanwhile.
async fn connect(
    cfg: &Config,
    token: &CancellationToken,
    health: &Health,
) -> Result<Option<Db>, Error> {
    let mut backoff = Backoff::new(Duration::from_millis(200));
    loop {
        match Db::connect(&cfg.database).await {
            Ok(db) => return Ok(Some(db)),
            Err(e) if e.class() == ErrorClass::Retryable => {
                metrics::db_retry("connect");
                health.not_ready(DATABASE_CHECK, format!("unavailable: {e}"));
                tracing::warn!(error = %e, "database unavailable; retrying");
                if !backoff.wait(token).await {
                    return Ok(None);
                }
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// Runs the service until `token` is cancelled (SIGTERM): the batch in hand is committed (or left
/// for the next start), then the exporter finishes its pass.
pub async fn run(cfg: Config, token: CancellationToken) -> Result<(), Error> {
    start(cfg, token).await?.wait().await
}
