//! tillstream's own Confluent-compatible schema registry (Avro only) for development and tests:
//! the REST API Kafka serializers and `schema_registry_converter` use, backed by a durable
//! append-only log in a data directory.
//!
//! Guarantee: a mutation (register, config change, delete) is acknowledged only after it has been
//! fsynced to the data directory; on restart subjects, versions, ids and configs are as they were
//! acknowledged, and a schema id is never reused.
//!
//! # Layout
//! - [`start`] opens the store, binds the API and the ops endpoint and returns a [`Running`];
//!   [`run`] serves until stopped.
//! - `config`, `error`, `metrics`: the service skeleton's files (docs/DEVELOPING.md).
//! - `store` (subjects, versions, ids; the pure core) and `persist` (its fsynced append-only log).
//! - `schema` (Avro parsing and canonical form) and `compat` (compatibility levels and checks).
//! - `api`: the Confluent REST API over the store.

pub mod api;
pub mod compat;
pub mod config;
pub mod error;
pub mod metrics;
pub mod persist;
pub mod schema;
pub mod store;

use std::net::SocketAddr;
use std::path::PathBuf;

use tillstream_runtime::service::{ShutdownGuard, TaskFailure};
use tillstream_runtime::{CancellationToken, Classify, ErrorClass, Health};

pub use crate::compat::Level;
pub use crate::config::Config;
pub use crate::error::RegistryError;
pub use crate::store::Registry;

/// Name of the readiness check this service registers.
const READY_CHECK: &str = "registry";

#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error("cannot open the registry in {dir}: {source}")]
    Store {
        dir: PathBuf,
        #[source]
        source: RegistryError,
    },
    #[error("cannot bind the {what} on {addr}: {source}")]
    Bind {
        what: &'static str,
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("the API server failed: {0}")]
    Serve(#[source] std::io::Error),
    #[error("opening the store: {0}")]
    Open(String),
    #[error(transparent)]
    Task(#[from] TaskFailure),
}

impl Classify for ServiceError {
    fn class(&self) -> ErrorClass {
        // Every one of these stops the service: nothing can be served without the store and socket.
        ErrorClass::Fatal
    }
}

/// A started registry; `wait` returns once the server has stopped (after the token is cancelled)
/// and every connection has closed, so the data directory is released.
pub type Running = tillstream_runtime::service::Running<ServiceError, Api>;

/// Where a started registry's REST API listens.
#[derive(Debug, Clone, Copy)]
pub struct Api {
    /// The address the REST API is bound to (useful with port 0).
    pub addr: SocketAddr,
}

impl Api {
    /// The base URL of the REST API, e.g. `http://127.0.0.1:18081`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

/// Loads the store, binds the API and the ops endpoint, and serves in the background until
/// `token` is cancelled.
pub async fn start(config: Config, token: CancellationToken) -> Result<Running, ServiceError> {
    let health = Health::new();
    health.register(READY_CHECK);
    let ops_addr = tillstream_runtime::ops::serve(&config.ops, health.clone(), token.clone())
        .await
        .map_err(|source| ServiceError::Bind {
            what: "ops endpoint",
            addr: config.ops.listen,
            source,
        })?;

    let dir = config.data_dir.clone();
    let level = config.default_compatibility;
    let registry = tokio::task::spawn_blocking(move || Registry::open(&dir, level))
        .await
        .map_err(|e| ServiceError::Open(e.to_string()))?
        .map_err(|source| ServiceError::Store {
            dir: config.data_dir.clone(),
            source,
        })?;

    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|source| ServiceError::Bind {
            what: "API",
            addr: config.listen,
            source,
        })?;
    let addr = listener.local_addr().map_err(|source| ServiceError::Bind {
        what: "API",
        addr: config.listen,
        source,
    })?;
    let app = api::router(
        api::AppState::new(registry, config.allow_deletes)
            .with_basic_auth(config.basic_auth.as_ref()),
    );
    health.ready(READY_CHECK, format!("serving on {addr}"));
    tracing::info!(%addr, %ops_addr, data_dir = %config.data_dir.display(), "schema registry listening");

    let task_health = health.clone();
    let mut guard = ShutdownGuard::new("schema-registry", token);
    let serving = guard.stage("api");
    guard.spawn_task("api", async move {
        let result = axum::serve(listener, app)
            .with_graceful_shutdown(async move { serving.cancelled().await })
            .await;
        task_health.not_ready(READY_CHECK, "stopped");
        tracing::info!("schema registry stopped");
        result.map_err(ServiceError::Serve)
    });
    Ok(Running::new(ops_addr, health, Api { addr }, guard))
}

/// Serves the registry until `token` is cancelled.
pub async fn run(config: Config, token: CancellationToken) -> Result<(), ServiceError> {
    start(config, token).await?.wait().await
}
