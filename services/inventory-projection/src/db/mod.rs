//! The SQL side of the projection: PostgreSQL or SQLite through the runtime's shared SQL plumbing
//! (`tillstream_runtime::sql`: config, connecting, error classes, the outage loop, migrations in a
//! table of our own, multi-row statements, offsets per (topic, partition)); this module owns what
//! the projection's tables hold and how a batch reaches them.
//!
//! # Layout
//! - this file: the handle ([`Db`]: connect and migrate, waiting out a database that is down);
//! - [`DbError`] is the runtime's (every SQL service's database error);
//! - `migrate`: the schema migrations, their record table ([`MIGRATIONS_TABLE`]) and carrying the
//!   record of earlier versions over from `_sqlx_migrations`;
//! - `apply`: the batch transaction ([`Db::apply`]): gate, one upsert per table, offsets;
//! - `offsets`: the consumer offsets the database holds per table set ([`Db::live_offsets`]);
//! - `sets`: blue/green table sets ([`Color`], [`TABLES`]), the analyst views, the switch;
//! - `dump`: the canonical dump ([`Db::dump`]);
//! - `overflow`: sums that would leave 64 bits (SQLite triggers, the dead-letter reason);
//! - `refused`: a batch the database refuses, applied event by event (live and rebuild alike);
//! - `reorder`: writing reorder points;
//! - `multirow`: the upsert templates of `sql/*.sql` for a table set, run as chunked multi-row
//!   statements;
//! - `sql/*.sql`: the upsert templates and the views, beside the code that runs them.
//!
//! Delivery guarantee: exactly-once effects. One batch = one transaction that inserts the batch's
//! event ids into the gate, applies only the events the gate admitted, and upserts the next offset
//! per partition (see `apply`).

mod apply;
mod dump;
mod migrate;
mod multirow;
mod offsets;
mod overflow;
mod refused;
mod reorder;
mod sets;

use sqlx::AnyPool;
use tillstream_runtime::CancellationToken;
use tillstream_runtime::sql::{self, Database};

pub use self::apply::{Applied, Target};
pub use self::dump::first_difference;
pub use self::migrate::{LEGACY_MIGRATIONS_TABLE, MIGRATION_0001, MIGRATIONS_TABLE, migrator};
pub use self::overflow::rejection_reason;
pub use self::refused::apply_isolating_refused;
pub use self::sets::{
    ColType, Color, Switch, TABLES, TableSpec, VIEWS_SQL, offsets_differ, view_names,
    view_statements,
};
pub use crate::config::{DatabaseConfig, FaultConfig};
pub use tillstream_runtime::sql::{
    Backend, DbError, RETRY_INITIAL_DELAY, resolve_url, until_available, values_sql,
};

/// The database handle. Cheap to clone.
#[derive(Clone)]
pub struct Db {
    /// The pool and which server it talks to (SQLite: each connection with the runtime's session
    /// settings).
    database: Database,
    /// Rows per multi-row statement (before the bind-parameter cap).
    rows_per_statement: usize,
}

impl std::fmt::Debug for Db {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Db")
            .field("backend", &self.backend())
            .finish_non_exhaustive()
    }
}

impl Db {
    /// Connects (creating a SQLite file if needed) and runs the migrations.
    pub async fn connect(cfg: &DatabaseConfig) -> Result<Db, DbError> {
        let db = Db {
            database: sql::connect(cfg).await?,
            rows_per_statement: cfg.rows_per_statement.max(1),
        };
        db.migrate().await?;
        db.guard_overflow().await?;
        Ok(db)
    }

    /// [`Db::connect`], waiting out a database that is unreachable (until `token` is cancelled:
    /// `None`).
    pub async fn connect_retrying(
        cfg: &DatabaseConfig,
        token: &CancellationToken,
    ) -> Result<Option<Db>, DbError> {
        until_available(token, |_: &DbError| {}, || Db::connect(cfg)).await
    }

    pub fn backend(&self) -> Backend {
        self.database.backend()
    }

    pub fn pool(&self) -> &AnyPool {
        self.database.pool()
    }

    /// Verifies the connection (readiness).
    pub async fn ping(&self) -> Result<(), DbError> {
        Ok(self.database.ping().await?)
    }
}
