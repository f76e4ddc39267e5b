//! tillstream inventory projection: projects the deduplicated store-event stream
//! (`tillstream.store-events`) into SQL tables analysts query (stock on hand, the stock movement
//! ledger, hourly sales, reservations, store sync status) on PostgreSQL or SQLite.
//!
//! Delivery guarantee: exactly-once effects in the database. Each batch is one transaction that
//! applies the events the idempotency gate admits and records the next offset per partition; the
//! consumer starts from the offsets in the database. The tables are a pure function of the event
//! stream, so a replay (`rebuild`) reproduces them byte for byte. A database that is unavailable
//! (at start, on partition assignment, during a batch) is waited for with back-off, never a reason
//! to stop.
//!
//! # Layout
//! - [`config`]: [`Config`] and its sections; [`error`]: [`Error`]; [`metrics`]: names and emit
//!   functions.
//! - [`model`] (pure): a batch of new events in, row deltas for every table out.
//!   [`reorder_points`] (pure): the reorder-point CSV.
//! - I/O edges: [`db`] (the SQL side: connection, migrations, the batch transaction, offsets,
//!   blue/green sets and views, the canonical dump), [`decode`] (record → event),
//!   [`assignment`] (partition hook: start offsets from the database), [`live`] (the batch loop),
//!   [`lag`] (the lag gauge), [`rebuild`] (replay into the inactive set, compare, switch).
//! - [`start`] wires the live projection and returns a [`Running`]; [`run`] runs it until stopped.

pub mod assignment;
pub mod config;
pub mod db;
pub mod decode;
pub mod error;
pub mod lag;
pub mod live;
pub mod metrics;
pub mod model;
pub mod rebuild;
pub mod reorder_points;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tillstream_contracts::Registry;
use tillstream_runtime::kafka::{self, DeadLetters};
use tillstream_runtime::service::ShutdownGuard;
use tillstream_runtime::sql::mark_available;
use tillstream_runtime::{CancellationToken, Health, ops};

pub use config::{Config, SERVICE};
pub use db::{Color, Db, DbError};
pub use error::Error;

use crate::assignment::{OffsetHook, Partitions};
use crate::db::{DatabaseConfig, until_available};
use crate::live::{DATABASE_CHECK, Live, database_unavailable};

/// A started live projection.
pub type Running = tillstream_runtime::service::Running<Error>;

/// Starts the live projection: ops endpoint, then (in the batch-loop task, so a database that is
/// down only delays it) the database (migrated, views over the active set), the input consumer
/// with database-held offsets, the lag gauge and the batch loop. Must run on a multi-thread
/// runtime (the partition hook blocks in place to read offsets).
pub async fn start(cfg: Config, token: CancellationToken) -> Result<Running, Error> {
    let health = Health::new();
    health.register(DATABASE_CHECK);
    health.register("kafka");
    let ops_addr = ops::serve(&cfg.ops, health.clone(), token.clone()).await?;
    let mut guard = ShutdownGuard::new(SERVICE, token);
    let batches = guard.stage("batches");
    guard.spawn_task("batch loop", project(cfg, batches, health.clone()));
    Ok(Running::new(ops_addr, health, (), guard))
}

/// Runs the live projection until `token` is cancelled (SIGTERM): the batch in hand is finished
/// (or rolled back by a failure), then the loop exits; the database offsets make either safe.
pub async fn run(cfg: Config, token: CancellationToken) -> Result<(), Error> {
    start(cfg, token).await?.wait().await
}

/// The batch-loop task: opens the database, wires the consumer and runs the loop.
async fn project(cfg: Config, token: CancellationToken, health: Health) -> Result<(), Error> {
    let Some(db) = open_database(&cfg.database, &token, &health).await? else {
        return Ok(());
    };

    let registry = Registry::new(cfg.registry.clone())?;
    let producer = kafka::producer(&cfg.kafka, "tillstream-inventory-projection-dlq")?;
    let dead = DeadLetters::new(
        producer,
        &cfg.dead_letter_topic,
        registry.clone(),
        SERVICE,
        metrics::DEAD_LETTERS_TOTAL,
    );
    let parts = Arc::new(Mutex::new(Partitions::default()));
    let hook = OffsetHook::new(db.clone(), &cfg.topic, parts.clone());
    let consumer = Live::new_consumer(&cfg, hook)?;
    health.ready("kafka", format!("subscribed to {}", cfg.topic));
    // The lag loop reads watermarks with a client of its own (no group): it never holds the input
    // consumer, which is closed here, by its owner (a runtime shutting down waits for a blocking
    // thread stuck closing a consumer whose broker has gone meanwhile: once a 900 s test hang).
    let lag_client: rdkafka::consumer::BaseConsumer = cfg
        .kafka
        .client_config("tillstream-inventory-projection-lag")
        .create()?;
    let lag_token = token.child_token();
    let lag = tokio::spawn(lag::run(
        Arc::new(lag_client),
        cfg.topic.clone(),
        parts.clone(),
        lag_token.clone(),
    ));
    let mut live = Live {
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

/// Connects (migrating the schema) and points the views at the active set, waiting while the
/// database is unavailable. `None` when `token` is cancelled first.
async fn open_database(
    cfg: &DatabaseConfig,
    token: &CancellationToken,
    health: &Health,
) -> Result<Option<Db>, Error> {
    let opened = until_available(
        token,
        |e| database_unavailable(health, "open", e),
        || async {
            let db = Db::connect(cfg).await?;
            let color = db.ensure_views().await?;
            Ok((db, color))
        },
    )
    .await?;
    let Some((db, color)) = opened else {
        return Ok(None);
    };
    mark_available(health, db.backend());
    tracing::info!(backend = db.backend().name(), %color, "database ready");
    Ok(Some(db))
}
