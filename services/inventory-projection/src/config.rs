//! The service's configuration (defaults → TOML → environment, see `tillstream_runtime::config`).
//! Owns only parsing; no delivery guarantee.

use serde::{Deserialize, Serialize};
use tillstream_contracts::RegistryConfig;
use tillstream_runtime::config::OpsConfig;
use tillstream_runtime::kafka::KafkaConfig;

use crate::db::{DatabaseConfig, FaultConfig};
use crate::model::ProjectionParams;

/// Service name used for config (`TILLSTREAM_INVENTORY_PROJECTION__...`), logs and dead letters.
pub const SERVICE: &str = "inventory-projection";

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct Config {
    pub kafka: KafkaConfig,
    pub registry: RegistryConfig,
    /// `database.url`: a SQLite file path (default, embedded) or a `postgres://` URL
    /// (`TILLSTREAM_PG_URL` sets it).
    pub database: DatabaseConfig,
    pub ops: OpsConfig,
    /// The deduplicated store-event topic.
    pub topic: String,
    pub group_id: String,
    pub dead_letter_topic: String,
    pub batch: BatchConfig,
    pub projection: ProjectionConfig,
    /// Fault injection for tests and drills; leave at the defaults in production.
    pub fault: FaultConfig,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            kafka: KafkaConfig::default(),
            registry: RegistryConfig::default(),
            database: DatabaseConfig::default(),
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
    pub fn params(&self) -> ProjectionParams {
        ProjectionParams {
            offline_threshold_ms: self.offline_threshold_ms,
        }
    }
}
