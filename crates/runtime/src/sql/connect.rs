//! Connecting: which server a configured location names ([`Backend`], [`resolve_url`]), the pool
//! with its SQLite session settings ([`connect`]) and the handle services keep ([`Database`]).
//!
//! Delivery guarantee: none of its own. The SQLite settings are chosen so that a service's batch
//! transaction stays the unit of durability (see [`connect`]).

use std::time::Duration;

use sqlx::any::AnyPoolOptions;
use sqlx::{AnyPool, AssertSqlSafe, Connection};

use super::{DatabaseConfig, SqlError};

/// Which database server, for the few places the dialects differ.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

impl Backend {
    /// Largest number of bind parameters one statement may carry.
    pub fn max_params(self) -> usize {
        match self {
            Backend::Sqlite => 32_766,
            Backend::Postgres => 65_535,
        }
    }

    /// How the server is named in logs, metrics and readiness details.
    pub fn name(self) -> &'static str {
        match self {
            Backend::Sqlite => "sqlite",
            Backend::Postgres => "postgres",
        }
    }
}

/// Normalises a configured database location into (backend, sqlx URL): `postgres://` and
/// `postgresql://` URLs as they are; anything else is SQLite (`sqlite://path`, `sqlite:path` or a
/// plain path), opened read-write-create unless the location sets its own `mode=`.
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

/// A pool of connections to one database and which server it is. Cheap to clone.
#[derive(Clone)]
pub struct Database {
    /// Connections to the database (SQLite: each with the session settings of [`connect`]).
    pool: AnyPool,
    /// Which server `pool` talks to.
    backend: Backend,
}

impl std::fmt::Debug for Database {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Database")
            .field("backend", &self.backend)
            .finish_non_exhaustive()
    }
}

impl Database {
    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Verifies that a connection answers (readiness).
    pub async fn ping(&self) -> Result<(), SqlError> {
        let mut conn = self.pool.acquire().await?;
        conn.ping().await?;
        Ok(())
    }
}

/// Opens a pool to `cfg.url`: on SQLite, creates the file's folder and the file if missing, and
/// gives every connection the session settings below. Runs no migrations (see
/// [`migrate`](super::migrate)). One attempt: a server that is down fails as retryable, for
/// [`until_available`](super::until_available) to wait out.
pub async fn connect(cfg: &DatabaseConfig) -> Result<Database, SqlError> {
    sqlx::any::install_default_drivers();
    let (backend, url) = resolve_url(&cfg.url);
    if backend == Backend::Sqlite
        && let Some(path) = url
            .strip_prefix("sqlite://")
            .and_then(|p| p.split('?').next())
        && let Some(parent) = std::path::Path::new(path).parent()
        && !parent.as_os_str().is_empty()
    {
        std::fs::create_dir_all(parent).map_err(|source| SqlError::CreateDir {
            path: parent.to_path_buf(),
            source,
        })?;
    }
    let busy = cfg.busy_timeout_ms;
    let mut opts = AnyPoolOptions::new()
        .max_connections(cfg.max_connections.max(1))
        .acquire_timeout(Duration::from_millis(cfg.acquire_timeout_ms.max(1)));
    if backend == Backend::Sqlite {
        opts = opts.after_connect(move |conn, _| {
            Box::pin(async move {
                // WAL: readers (start offsets, APIs, tools) never block the batch writer.
                // synchronous=NORMAL may lose the last commits on power loss, but effects and
                // offsets are lost together, so the events are simply read again: exactly-once
                // still holds. Big batches: a 64 MiB page cache (no spilling mid-transaction) and
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
    Ok(Database { pool, backend })
}

#[cfg(test)]
mod tests {
    use sqlx::Row;

    use super::*;

    #[test]
    fn urls_resolve_to_a_backend() {
        for (configured, backend, url) in [
            (
                "postgres://u:p@127.0.0.1:5/db",
                Backend::Postgres,
                "postgres://u:p@127.0.0.1:5/db",
            ),
            ("data/x.db", Backend::Sqlite, "sqlite://data/x.db?mode=rwc"),
            (
                "sqlite:///tmp/x.db?mode=ro",
                Backend::Sqlite,
                "sqlite:///tmp/x.db?mode=ro",
            ),
            ("sqlite::memory:", Backend::Sqlite, "sqlite::memory:"),
        ] {
            assert_eq!(resolve_url(configured), (backend, url.to_string()));
        }
    }

    /// A SQLite file in a folder that does not exist yet: both are created, the connections run in
    /// WAL mode with the configured busy timeout.
    #[tokio::test]
    async fn a_sqlite_file_and_its_folder_are_created_with_the_session_settings() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = DatabaseConfig {
            url: dir.path().join("a/b/state.db").display().to_string(),
            busy_timeout_ms: 1234,
            ..DatabaseConfig::default()
        };
        let db = connect(&cfg).await.unwrap();
        assert_eq!(db.backend(), Backend::Sqlite);
        db.ping().await.unwrap();
        let mut conn = db.pool().acquire().await.unwrap();
        let mut pragma = async |name: &str| -> String {
            let row = sqlx::query(AssertSqlSafe(format!("PRAGMA {name}")))
                .fetch_one(&mut *conn)
                .await
                .unwrap();
            row.try_get::<String, _>(0)
                .or_else(|_| row.try_get::<i64, _>(0).map(|n| n.to_string()))
                .unwrap()
        };
        assert_eq!(pragma("journal_mode").await, "wal");
        assert_eq!(pragma("busy_timeout").await, "1234");
        assert!(dir.path().join("a/b/state.db").exists());
    }
}
