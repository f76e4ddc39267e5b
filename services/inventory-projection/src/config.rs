//! The service's configuration (defaults → TOML → environment, see `tillstream_runtime::config`;
//! environment `TILLSTREAM_INVENTORY_PROJECTION__<SECTION>__<KEY>`). Pure data; no delivery
//! guarantee.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use tillstream_contracts::RegistryConfig;
use tillstream_runtime::config::OpsConfig;
use tillstream_runtime::kafka::KafkaConfig;
/// The `[database]` section: the one every service with SQL state shares.
pub use tillstream_runtime::sql::DatabaseConfig;

use crate::model::ProjectionParams;

/// Service name used for config (`TILLSTREAM_INVENTORY_PROJECTION__...`), logs and dead letters.
pub const SERVICE: &str = "inventory-projection";

/// Full configuration.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct Config {
    /// Brokers, assignment mode (group or static share) and client properties.
    pub kafka: KafkaConfig,
    /// The schema registry the records' writer schemas come from.
    pub registry: RegistryConfig,
    /// `database.url`: a SQLite file path (default, embedded) or a `postgres://` URL
    /// (`TILLSTREAM_PG_URL` sets it).
    pub database: DatabaseConfig,
    /// Where `/metrics`, `/healthz` and `/readyz` listen.
    pub ops: OpsConfig,
    /// The deduplicated store-event topic.
    pub topic: String,
    /// The consumer group: its committed offsets are only a hint for tools (the database holds the
    /// offsets the projection starts from); `rebuild` uses `<group_id>-rebuild`.
    pub group_id: String,
    /// Where undecodable records and events the database refuses go.
    pub dead_letter_topic: String,
    /// How many records one batch transaction takes.
    pub batch: BatchConfig,
    /// Settings of the projection function itself.
    pub projection: ProjectionConfig,
    /// Fault injection for tests and drills; leave at the defaults in production.
    pub fault: FaultConfig,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            kafka: KafkaConfig::default(),
            registry: RegistryConfig::default(),
            database: DatabaseConfig::for_service(SERVICE),
            ops: OpsConfig::default(),
            topic: "tillstream.store-events".into(),
            group_id: "tillstream-inventory-projection".into(),
            dead_letter_topic: "tillstream.dead-letter".into(),
            batch: BatchConfig::default(),
            projection: ProjectionConfig::default(),
            fault: FaultConfig::default(),
        }
    }
}

/// The `[batch]` section.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct BatchConfig {
    /// Most records per batch transaction.
    pub max_events: usize,
    /// How long a batch waits for more records after the first.
    pub linger_ms: u64,
}

impl Default for BatchConfig {
    fn default() -> Self {
        BatchConfig {
            max_events: 20_000,
            linger_ms: 50,
        }
    }
}

/// The `[projection]` section.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct ProjectionConfig {
    /// Events received more than this after they occurred count as offline volume. Part of the
    /// projection function: after changing it, run `rebuild --force`.
    pub offline_threshold_ms: i64,
}

impl Default for ProjectionConfig {
    fn default() -> Self {
        ProjectionConfig {
            offline_threshold_ms: ProjectionParams::default().offline_threshold_ms,
        }
    }
}

impl ProjectionConfig {
    /// The projection function's parameters.
    pub fn params(&self) -> ProjectionParams {
        ProjectionParams {
            offline_threshold_ms: self.offline_threshold_ms,
        }
    }
}

/// The `[fault]` section: what a test or drill asks the batch transaction to do just before COMMIT.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct FaultConfig {
    /// Hold every batch that applies new events open this long before committing (0 = never).
    pub hold_batch_open_ms: u64,
    /// Created (empty) when a batch starts holding, so a test knows it can kill -9 mid-batch.
    pub marker_file: Option<PathBuf>,
}
