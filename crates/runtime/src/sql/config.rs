//! The `[database]` section every service with SQL state shares ([`DatabaseConfig`]). Pure data; no
//! delivery guarantee.

use serde::{Deserialize, Serialize};

/// Where a service keeps its state and how it holds connections to it.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct DatabaseConfig {
    /// `postgres://...`, `sqlite://path` or a plain file path (SQLite, created with its folder if
    /// missing). `TILLSTREAM_PG_URL` sets it for the whole stack. Printed without its password.
    #[serde(serialize_with = "tillstream_contracts::secret::serialize_url_redacted")]
    pub url: String,
    /// Connections in the pool (a batch loop uses one; start-offset reads, APIs and tools the
    /// others).
    pub max_connections: u32,
    /// Rows per multi-row statement (capped by the driver's bind-parameter limit).
    pub rows_per_statement: usize,
    /// SQLite: how long a writer waits for another connection's or process's write lock.
    pub busy_timeout_ms: u64,
    /// How long one attempt waits for a connection before it fails as retryable (the caller
    /// backs off and tries again, so this bounds one attempt, not the wait for the database).
    pub acquire_timeout_ms: u64,
}

impl DatabaseConfig {
    /// The defaults with the service's own SQLite file, `data/<service>.db`: services that share
    /// no server by default share no file either.
    pub fn for_service(service: &str) -> Self {
        DatabaseConfig {
            url: format!("data/{service}.db"),
            ..DatabaseConfig::default()
        }
    }
}

impl Default for DatabaseConfig {
    /// A SQLite file no service names as its own; a service's `Config::default()` uses
    /// [`DatabaseConfig::for_service`] instead.
    fn default() -> Self {
        DatabaseConfig {
            url: "data/tillstream.db".into(),
            max_connections: 4,
            rows_per_statement: 1000,
            busy_timeout_ms: 60_000,
            acquire_timeout_ms: 30_000,
        }
    }
}
