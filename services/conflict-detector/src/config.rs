//! The conflict detector's configuration (`config::load::<Config>("conflict-detector", file)`;
//! environment `TILLSTREAM_CONFLICT_DETECTOR__<SECTION>__<KEY>`, `TILLSTREAM_PG_URL` for the
//! database). Pure data; no delivery guarantee. `--print-config` never prints the API token.

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use tillstream_contracts::RegistryConfig;
use tillstream_runtime::config::OpsConfig;
use tillstream_runtime::kafka::KafkaConfig;

use crate::core::CoreConfig;
use crate::db::DatabaseConfig;

/// Service name (config prefix `TILLSTREAM_CONFLICT_DETECTOR__`, `tillstream-producer` header,
/// dead letters, metric prefix).
pub const SERVICE: &str = "conflict-detector";

/// Full configuration.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct Config {
    pub kafka: KafkaConfig,
    pub registry: RegistryConfig,
    pub ops: OpsConfig,
    /// `database.url`: a SQLite file (default) or a `postgres://` URL (`TILLSTREAM_PG_URL`).
    pub database: DatabaseConfig,
    pub detector: DetectorConfig,
    /// The rules' parameters (README: policy per rule).
    pub rules: CoreConfig,
    /// The review queue's HTTP API.
    pub api: ApiConfig,
    /// Fault injection for tests and drills; leave at the defaults in production.
    pub fault: FaultConfig,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            kafka: KafkaConfig::default(),
            registry: RegistryConfig::default(),
            ops: OpsConfig::default(),
            database: DatabaseConfig {
                // Verdict and outbox rows are wide (JSON bodies): smaller statements than the
                // shared default keep one statement's text and binds modest.
                rows_per_statement: 500,
                ..DatabaseConfig::for_service(SERVICE)
            },
            detector: DetectorConfig::default(),
            rules: CoreConfig::default(),
            api: ApiConfig::default(),
            fault: FaultConfig::default(),
        }
    }
}

/// The `[detector]` section: topics, group, batching.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct DetectorConfig {
    /// The deduplicated store events.
    pub input_topic: String,
    /// Conflicts in (the dedup's identity collisions) and out (verdicts, resolutions).
    pub conflicts_topic: String,
    pub compensations_topic: String,
    /// Every approved price list, append-only (read by every instance, outside the group).
    pub price_history_topic: String,
    pub dead_letter_topic: String,
    pub group_id: String,
    pub client_id: String,
    /// Records per batch transaction at most.
    pub max_batch: usize,
    /// How long a batch waits for more records after its first.
    pub linger_ms: u64,
    /// Outbox records sent per round (also what a restart looks back for already-sent records).
    pub publish_chunk: usize,
    /// How often the publisher looks for records written by other instances (API resolutions).
    pub publish_poll_ms: u64,
    /// How often the queue gauges are refreshed.
    pub gauge_interval_ms: u64,
    /// How long a raised verdict waits, in its store's record time, before it is written; one
    /// that a later input supersedes meanwhile is withdrawn unwritten. Tills that deliver a
    /// backlog side by side change each other's verdicts many times a second; this nets those
    /// changes out. A store with no new event for this long (wall time) has its verdicts written.
    /// 0 writes every change at once.
    pub hold_ms: u64,
}

impl Default for DetectorConfig {
    fn default() -> Self {
        DetectorConfig {
            input_topic: "tillstream.store-events".into(),
            conflicts_topic: "tillstream.conflicts".into(),
            compensations_topic: "tillstream.compensations".into(),
            price_history_topic: "tillstream.price-lists.history".into(),
            dead_letter_topic: "tillstream.dead-letter".into(),
            group_id: "tillstream-conflict-detector".into(),
            client_id: "tillstream-conflict-detector".into(),
            max_batch: 5_000,
            linger_ms: 20,
            publish_chunk: 500,
            publish_poll_ms: 500,
            gauge_interval_ms: 5_000,
            hold_ms: 10_000,
        }
    }
}

impl DetectorConfig {
    pub fn validate(&self, kafka: &KafkaConfig, rules: &CoreConfig) -> Result<(), String> {
        if self.max_batch == 0 || self.publish_chunk == 0 {
            return Err("detector.max_batch and detector.publish_chunk must be > 0".into());
        }
        rules.validate()?;
        kafka.validate()
    }
}

pub use tillstream_runtime::config::Secret;

/// The `[api]` section.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct ApiConfig {
    /// Where the review queue API listens (port 0 = a free port).
    pub listen: SocketAddr,
    /// Bearer token every request must carry. Empty: the API is not served.
    pub token: Secret,
}

impl Default for ApiConfig {
    fn default() -> Self {
        ApiConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            token: Secret::default(),
        }
    }
}

/// What a test or drill asks the batch transaction to do just before COMMIT.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct FaultConfig {
    /// Hold every batch that decided something open this long before committing (0 = never).
    pub hold_batch_open_ms: u64,
    /// Created (empty) when a batch starts holding, so a test knows it can kill -9 mid-batch.
    pub marker_file: Option<PathBuf>,
    /// Hold this long after outbox records were delivered, before they are deleted (0 = never):
    /// a kill then leaves delivered records in the outbox.
    pub hold_after_publish_ms: u64,
    /// Created when the publisher starts holding.
    pub publish_marker_file: Option<PathBuf>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_token_never_prints() {
        let mut c = Config::default();
        c.api.token = Secret::new("s3cret");
        let json = serde_json::to_string(&c).unwrap();
        assert!(!json.contains("s3cret"), "{json}");
        assert!(json.contains("<redacted>"));
        let toml = toml::to_string(&c).unwrap();
        assert!(!toml.contains("s3cret"));
        assert!(!format!("{c:?}").contains("s3cret"));
        let back: ApiConfig = serde_json::from_str(r#"{"token":"abc"}"#).unwrap();
        assert_eq!(back.token.expose(), "abc");
    }
}
