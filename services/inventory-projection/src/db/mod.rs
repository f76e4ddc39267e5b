//! The SQL side of the projection: PostgreSQL or SQLite through sqlx's `Any` driver, one dialect
//! with `$N` placeholders (which both drivers accept; multi-row statements use `?` on SQLite, see
//! [`values_sql`]).
//!
//! # Layout
//! - this file: the connection ([`Db`], [`Backend`], [`resolve_url`]) and [`until_available`], the
//!   one retry loop for a database that is down;
//! - `error`: [`DbError`] and its classification (retryable / fatal / poison);
//! - `migrate`: the schema migrations and their own record table ([`MIGRATIONS_TABLE`]);
//! - `apply`: the batch transaction ([`Db::apply`]): gate, one upsert per table, offsets;
//! - `offsets`: the consumer offsets the database holds ([`Db::live_offsets`]);
//! - `sets`: blue/green table sets ([`Color`], [`TABLES`]), the analyst views, the switch;
//! - `dump`: the canonical dump ([`Db::dump`]);
//! - `reorder`: writing reorder points;
//! - `multirow`: turning an upsert template into chunked multi-row statements;
//! - `sql/*.sql`: the upsert templates and the views, beside the code that runs them.
//!
//! Delivery guarantee: exactly-once effects. One batch = one transaction that inserts the batch's
//! event ids into the gate, applies only the events the gate admitted, and upserts the next offset
//! per partition (see `apply`).

mod apply;
mod dump;
mod error;
mod migrate;
mod multirow;
mod offsets;
mod reorder;
mod sets;

use std::future::Future;
use std::time::Duration;

use sqlx::any::AnyPoolOptions;
use sqlx::{AnyPool, AssertSqlSafe, Connection};
use tillstream_runtime::retry::Backoff;
use tillstream_runtime::{CancellationToken, Classify, ErrorClass};

pub use self::apply::{Applied, Target};
pub use self::dump::first_difference;
pub use self::error::DbError;
pub use self::migrate::{LEGACY_MIGRATIONS_TABLE, MIGRATION_0001, MIGRATIONS_TABLE, migrator};
pub use self::multirow::values_sql;
pub use self::sets::{
    ColType, Color, Switch, TABLES, TableSpec, VIEWS_SQL, offsets_differ, view_names,
    view_statements,
};
pub use crate::config::{DatabaseConfig, FaultConfig};

/// The first wait of every retry while the database is unavailable (doubling up to the runtime's
/// cap).
pub const RETRY_INITIAL_DELAY: Duration = Duration::from_millis(200);

/// Which database server, for the few places the dialects differ.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

impl Backend {
    /// Largest number of bind parameters one statement may carry.
    fn max_params(self) -> usize {
        match self {
            Backend::Sqlite => 32_766,
            Backend::Postgres => 65_535,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Backend::Sqlite => "sqlite",
            Backend::Postgres => "postgres",
        }
    }
}

/// The database handle. Cheap to clone.
#[derive(Clone)]
pub struct Db {
    /// Connections to the database (SQLite: each with the pragmas of [`Db::connect`]).
    pool: AnyPool,
    /// Which server `pool` talks to.
    backend: Backend,
    /// Rows per multi-row statement (before the bind-parameter cap).
    rows_per_statement: usize,
}

impl std::fmt::Debug for Db {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Db")
            .field("backend", &self.backend)
            .finish_non_exhaustive()
    }
}

/// Normalises a configured database location into (backend, sqlx URL).
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

impl Db {
    /// Connects (creating a SQLite file if needed) and runs the migrations.
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
            .acquire_timeout(Duration::from_millis(cfg.acquire_timeout_ms.max(1)));
        if backend == Backend::Sqlite {
            opts = opts.after_connect(move |conn, _| {
                Box::pin(async move {
                    // WAL: readers never block the writer. synchronous=NORMAL may lose the last
                    // commits on power loss, but effects and offsets are lost together, so the
                    // events are simply read again: exactly-once still holds.
                    // Big batches: a 64 MiB page cache (no spilling mid-transaction) and
                    // statement journals in memory (every multi-row upsert needs one).
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

    /// [`Db::connect`], waiting out a database that is unreachable (until `token` is cancelled:
    /// `None`).
    pub async fn connect_retrying(
        cfg: &DatabaseConfig,
        token: &CancellationToken,
    ) -> Result<Option<Db>, DbError> {
        until_available(token, |_| {}, || Db::connect(cfg)).await
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }

    /// Verifies the connection (readiness).
    pub async fn ping(&self) -> Result<(), DbError> {
        let mut conn = self.pool.acquire().await?;
        conn.ping().await?;
        Ok(())
    }
}

/// Runs `attempt` until it succeeds or fails with an error that is not retryable (returned), backing
/// off between attempts ([`RETRY_INITIAL_DELAY`], doubling up to the runtime's cap). `waiting` is
/// told about every retryable failure before the wait (readiness, metrics). Returns `None` when
/// `token` is cancelled while waiting.
pub async fn until_available<T, Fut>(
    token: &CancellationToken,
    mut waiting: impl FnMut(&DbError),
    mut attempt: impl FnMut() -> Fut,
) -> Result<Option<T>, DbError>
where
    Fut: Future<Output = Result<T, DbError>>,
{
    let mut backoff = Backoff::new(RETRY_INITIAL_DELAY);
    loop {
        match attempt().await {
            Ok(v) => return Ok(Some(v)),
            Err(e) if e.class() == ErrorClass::Retryable => {
                waiting(&e);
                tracing::warn!(error = %e, retry_in_ms = backoff.delay().as_millis() as u64, "database unavailable; retrying");
                if !backoff.wait(token).await {
                    return Ok(None);
                }
            }
            Err(e) => return Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_resolve_to_a_backend() {
        assert_eq!(
            resolve_url("postgres://u:p@127.0.0.1:5/db"),
            (Backend::Postgres, "postgres://u:p@127.0.0.1:5/db".into())
        );
        assert_eq!(
            resolve_url("data/x.db"),
            (Backend::Sqlite, "sqlite://data/x.db?mode=rwc".into())
        );
        assert_eq!(
            resolve_url("sqlite:///tmp/x.db?mode=ro"),
            (Backend::Sqlite, "sqlite:///tmp/x.db?mode=ro".into())
        );
    }

    /// Retryable failures are retried (the caller hears of each); the first other error ends it.
    #[tokio::test]
    async fn until_available_retries_only_what_is_retryable() {
        let token = CancellationToken::new();
        let mut calls = 0;
        let mut heard = 0;
        let got = until_available(
            &token,
            |_| heard += 1,
            || {
                calls += 1;
                let n = calls;
                async move {
                    match n {
                        1 | 2 => Err(DbError::Sqlx(sqlx::Error::PoolTimedOut)),
                        _ => Ok(n),
                    }
                }
            },
        )
        .await
        .unwrap();
        assert_eq!((got, heard), (Some(3), 2));

        let fatal = until_available(
            &token,
            |_| {},
            || async { Err::<(), _>(DbError::Invalid("no".into())) },
        )
        .await;
        assert!(matches!(fatal, Err(DbError::Invalid(_))));

        token.cancel();
        let cancelled = until_available(
            &token,
            |_| {},
            || async { Err::<(), _>(DbError::Sqlx(sqlx::Error::PoolClosed)) },
        )
        .await
        .unwrap();
        assert_eq!(cancelled, None);
    }
}
