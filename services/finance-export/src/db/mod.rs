//! The ledger's SQL side on PostgreSQL or SQLite (sqlx `Any`): the event gate, the double-entry
//! lines, day closes, store-days, exports and the reconciliation records they reported, and the
//! input offsets. Its own namespace: tables prefixed `fe_`, migrations recorded in
//! [`MIGRATIONS_TABLE`] (services may share one PostgreSQL).
//!
//! # Layout
//! - this file: the connection ([`Db`]), [`DbError`] and its classes, the migrations;
//! - `rows`: multi-row statements (`?` placeholders on SQLite, `$N` on PostgreSQL);
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

use std::time::Duration;

use sqlx::any::AnyPoolOptions;
use sqlx::migrate::{Migration, MigrationType, Migrator};
use sqlx::{AnyPool, AssertSqlSafe, SqlSafeStr};
use tillstream_runtime::{Classify, ErrorClass};

pub use self::apply::{Applied, Booked};
pub use self::export::{ExportMeta, NewExport};
pub use self::read::{ExportLine, LedgerLine};
use crate::config::DatabaseConfig;

/// The schema (portable SQL).
const MIGRATION_0001: &str = include_str!("../../migrations/0001_finance_export.sql");
/// Where sqlx records this service's migrations (not `_sqlx_migrations`, which another service on
/// the same database may own).
pub const MIGRATIONS_TABLE: &str = "_finance_export_migrations";

/// Which database server, for the few places the dialects differ.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

impl Backend {
    pub fn name(self) -> &'static str {
        match self {
            Backend::Sqlite => "sqlite",
            Backend::Postgres => "postgres",
        }
    }

    /// Largest number of bind parameters one statement may carry.
    fn max_params(self) -> usize {
        match self {
            Backend::Sqlite => 32_766,
            Backend::Postgres => 65_535,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("database: {0}")]
    Sqlx(#[from] sqlx::Error),
    #[error("migration: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("stored JSON: {0}")]
    Json(#[from] serde_json::Error),
    /// Something stored makes no sense (a total that overflows, an unknown account role).
    #[error("{0}")]
    Invalid(String),
}

impl Classify for DbError {
    fn class(&self) -> ErrorClass {
        use sqlx::Error as E;
        let sqlx = match self {
            DbError::Sqlx(e) => e,
            DbError::Migrate(
                sqlx::migrate::MigrateError::Execute(e)
                | sqlx::migrate::MigrateError::ExecuteMigration(e, _),
            ) => e,
            _ => return ErrorClass::Fatal,
        };
        match sqlx {
            E::Io(_)
            | E::Tls(_)
            | E::Protocol(_)
            | E::PoolTimedOut
            | E::PoolClosed
            | E::WorkerCrashed => ErrorClass::Retryable,
            E::Database(db) => {
                let code = db.code().map(|c| c.into_owned()).unwrap_or_default();
                // PostgreSQL SQLSTATE 08 connection, 40 rollback, 53 resources, 57 shutdown,
                // 58 system; SQLite BUSY, LOCKED, IOERR, FULL, CANTOPEN (primary = low byte).
                let pg = code.len() == 5 && matches!(&code[..2], "08" | "40" | "53" | "57" | "58");
                let lite = code.len() < 5
                    && code
                        .parse::<i64>()
                        .is_ok_and(|c| matches!(c & 0xff, 5 | 6 | 10 | 13 | 14));
                if pg || lite {
                    ErrorClass::Retryable
                } else {
                    ErrorClass::Fatal
                }
            }
            _ => ErrorClass::Fatal,
        }
    }
}

/// (backend, sqlx URL) of a configured location.
pub fn resolve_url(url: &str) -> (Backend, String) {
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        return (Backend::Postgres, url.to_string());
    }
    let path = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))
        .unwrap_or(url);
    if path.starts_with(":memory:") {
        return (Backend::Sqlite, format!("sqlite:{path}"));
    }
    let (path, query) = path.split_once('?').unwrap_or((path, ""));
    let mut params: Vec<&str> = query.split('&').filter(|p| !p.is_empty()).collect();
    if !params.iter().any(|p| p.starts_with("mode=")) {
        params.push("mode=rwc");
    }
    (
        Backend::Sqlite,
        format!("sqlite://{path}?{}", params.join("&")),
    )
}

/// The ledger database. Cheap to clone.
#[derive(Clone)]
pub struct Db {
    pool: AnyPool,
    backend: Backend,
    rows_per_statement: usize,
}

impl std::fmt::Debug for Db {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Db")
            .field("backend", &self.backend)
            .finish_non_exhaustive()
    }
}

fn migrator() -> Migrator {
    let mut migrator = Migrator::with_migrations(vec![Migration::new(
        1,
        "finance_export".into(),
        MigrationType::Simple,
        MIGRATION_0001.into_sql_str(),
        false,
    )]);
    migrator.dangerous_set_table_name(MIGRATIONS_TABLE);
    migrator
}

impl Db {
    /// Connects (creating a SQLite file and its folder if needed) and migrates.
    pub async fn connect(cfg: &DatabaseConfig) -> Result<Db, DbError> {
        sqlx::any::install_default_drivers();
        let (backend, url) = resolve_url(&cfg.url);
        if backend == Backend::Sqlite
            && let Some(path) = url
                .strip_prefix("sqlite://")
                .and_then(|p| p.split('?').next())
            && let Some(parent) = std::path::Path::new(path).parent()
            && !parent.as_os_str().is_empty()
        {
            std::fs::create_dir_all(parent).map_err(|e| {
                DbError::Invalid(format!("cannot create {}: {e}", parent.display()))
            })?;
        }
        let busy = cfg.busy_timeout_ms;
        let mut opts = AnyPoolOptions::new()
            .max_connections(cfg.max_connections.max(1))
            .acquire_timeout(Duration::from_secs(30));
        if backend == Backend::Sqlite {
            opts = opts.after_connect(move |conn, _| {
                Box::pin(async move {
                    // WAL: readers (tillctl, the exporter) never block the batch writer.
                    // synchronous=NORMAL may lose the last commits on power loss; effects and
                    // offsets are lost together, so the events are read again.
                    for pragma in [
                        format!("PRAGMA busy_timeout = {busy}"),
                        "PRAGMA journal_mode = WAL".to_string(),
                        "PRAGMA synchronous = NORMAL".to_string(),
                        "PRAGMA cache_size = -65536".to_string(),
                        "PRAGMA temp_store = MEMORY".to_string(),
                    ] {
                        sqlx::query(AssertSqlSafe(pragma))
                            .execute(&mut *conn)
                            .await?;
                    }
                    Ok(())
                })
            });
        }
        let pool = opts.connect(&url).await?;
        let db = Db {
            pool,
            backend,
            rows_per_statement: cfg.rows_per_statement.max(1),
        };
        db.migrate().await?;
        Ok(db)
    }

    async fn migrate(&self) -> Result<(), DbError> {
        let migrator = migrator();
        // sqlx locks migrations on PostgreSQL only: two instances on a fresh SQLite file race, the
        // loser fails once and finds the migration applied on the next pass.
        let mut attempt = 0u64;
        loop {
            match migrator.run(&self.pool).await {
                Ok(()) => return Ok(()),
                Err(e) if self.backend == Backend::Sqlite && attempt < 5 => {
                    attempt += 1;
                    tracing::debug!(error = %e, attempt, "migration raced another instance; checking again");
                    tokio::time::sleep(Duration::from_millis(50 * attempt)).await;
                }
                Err(e) => return Err(e.into()),
            }
        }
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_resolve_to_a_backend() {
        assert_eq!(
            resolve_url("data/x.db"),
            (Backend::Sqlite, "sqlite://data/x.db?mode=rwc".into())
        );
        assert_eq!(resolve_url("postgres://u@h/d").0, Backend::Postgres);
        assert_eq!(resolve_url("sqlite::memory:").1, "sqlite::memory:");
    }

    #[test]
    fn connection_losses_retry_and_the_rest_is_fatal() {
        assert_eq!(
            DbError::Sqlx(sqlx::Error::PoolTimedOut).class(),
            ErrorClass::Retryable
        );
        assert_eq!(DbError::Invalid("x".into()).class(), ErrorClass::Fatal);
    }
}
