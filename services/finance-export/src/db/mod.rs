//! The ledger's SQL side on PostgreSQL or SQLite (sqlx `Any` through the runtime's shared plumbing,
//! `tillstream_runtime::sql`): the event gate, the double-entry
//! lines, day closes, store-days, exports and the reconciliation records they reported, and the
//! input offsets. Its own namespace: tables prefixed `fe_`, migrations recorded in
//! [`MIGRATIONS_TABLE`] (services may share one PostgreSQL).
//!
//! # Layout
//! - this file: the connection ([`Db`]), [`DbError`] and its classes, the migrations;
//! - `rows`: dynamically typed rows for the shared multi-row statements, placeholders;
//! - `apply`: the batch transaction ([`Db::apply`]);
//! - `read`: what the exporter, reconciliation and `tillctl finance` read;
//! - `export`: assigning lines to an export and recording what it reported.
//!
//! Delivery guarantee: exactly-once effects. A batch is one transaction: the events the gate
//! admits, their lines and closes, the store-days they touch, and the next offset per partition;
//! all of it commits or none of it does.

mod apply;
mod export;
mod read;
mod rows;

use std::sync::LazyLock;

use sqlx::migrate::{Migration, MigrationType, Migrator};
use sqlx::{AnyPool, SqlSafeStr};
use tillstream_runtime::sql::{self, Database, OffsetTable};

pub use self::apply::{Applied, Booked};
pub use self::export::{ExportMeta, NewExport};
pub use self::read::{ExportLine, LedgerLine};
pub use tillstream_runtime::sql::{Backend, DatabaseConfig, resolve_url};

/// The schema (portable SQL).
const MIGRATION_0001: &str = include_str!("../../migrations/0001_finance_export.sql");
/// Where sqlx records this service's migrations (not `_sqlx_migrations`, which another service on
/// the same database may own).
pub const MIGRATIONS_TABLE: &str = "_finance_export_migrations";
/// The next input offset per (topic, partition), advanced inside every batch transaction.
static OFFSETS: LazyLock<OffsetTable> = LazyLock::new(|| OffsetTable::new("fe_consumer_offset"));

/// The database error of every SQL service (the runtime's): the plumbing's, stored JSON, invalid
/// stored rows.
pub use tillstream_runtime::sql::DbError;

/// The ledger database. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Db {
    /// The pool and which server it talks to.
    database: Database,
    /// Rows per multi-row statement (`database.rows_per_statement`).
    rows_per_statement: usize,
}

fn migrator() -> Migrator {
    sql::migrator(
        MIGRATIONS_TABLE,
        vec![Migration::new(
            1,
            "finance_export".into(),
            MigrationType::Simple,
            MIGRATION_0001.into_sql_str(),
            false,
        )],
    )
}

impl Db {
    /// Connects (creating a SQLite file and its folder if needed) and migrates. One attempt: a
    /// database that is down fails as retryable.
    pub async fn connect(cfg: &DatabaseConfig) -> Result<Db, DbError> {
        let database = sql::connect(cfg).await?;
        sql::migrate(&database, &migrator()).await?;
        Ok(Db {
            database,
            rows_per_statement: cfg.rows_per_statement.max(1),
        })
    }

    pub fn backend(&self) -> Backend {
        self.database.backend()
    }

    pub fn pool(&self) -> &AnyPool {
        self.database.pool()
    }
}
