//! The dedup service: reads `tillstream.store-events.raw`, writes each event once to
//! `tillstream.store-events` (same bytes, key, headers and partition, so per-store order is kept),
//! reports identity collisions to `tillstream.conflicts` and per-device sequence gaps to
//! `tillstream.sequence-gaps`, dead-letters what it cannot decode, and keeps its state in memory,
//! rebuilt per partition from the co-partitioned changelog `tillstream.dedup.changelog`.
//!
//! Delivery guarantee: at-least-once with idempotent downstream. Per batch: outputs delivered ->
//! changelog record delivered -> gap records delivered -> input offsets stored (committed by the
//! auto-commit timer, on revoke and on shutdown). A crash can duplicate at most the one batch in
//! flight per partition (outputs delivered, changelog record not yet written); a batch whose
//! changelog record was written is never replayed, because a restore starts after what the changelog
//! covers. With `transactional = true` (Apache Kafka only) the whole batch, changelog and offsets
//! included, is one Kafka transaction.
//!
//! Modules: `core` (pure decisions), `changelog` (state record format), `decode` (raw record ->
//! input), `restore` (rebalance hook, state restore), `service` (the consumer loop), `metrics`.

pub mod changelog;
pub mod core;
pub mod decode;
pub mod metrics;
pub mod restore;
pub mod service;

use serde::{Deserialize, Serialize};
use tillstream_contracts::{RegistryConfig, RegistryError};
use tillstream_runtime::config::OpsConfig;
use tillstream_runtime::kafka::KafkaConfig;
use tillstream_runtime::{Classify, ErrorClass};

pub use service::{Counters, Running, run, start};

/// Service name (config prefix `TILLSTREAM_DEDUP__`, `tillstream-producer` header, dead letters).
pub const SERVICE: &str = "dedup";

/// Header added to an emitted event whose `occurred_at` is older than the retention horizon.
pub const BEYOND_HORIZON_HEADER: &str = "tillstream-dedup-beyond-horizon";

/// Full configuration (`config::load::<Config>("dedup", file)`).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Config {
    pub kafka: KafkaConfig,
    pub registry: RegistryConfig,
    pub ops: OpsConfig,
    pub dedup: DedupConfig,
}

/// The `[dedup]` section.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct DedupConfig {
    pub input_topic: String,
    pub output_topic: String,
    pub gaps_topic: String,
    pub conflicts_topic: String,
    pub dead_letter_topic: String,
    pub changelog_topic: String,
    pub group_id: String,
    pub client_id: String,
    /// Retention horizon (record time): how long an event id is remembered, and the age of
    /// `occurred_at` beyond which an event is emitted flagged. Default 7 days.
    pub horizon_ms: i64,
    /// Device states are re-written to the changelog at least this often (record time).
    pub device_refresh_ms: i64,
    pub max_open_gaps_per_device: usize,
    /// Records per batch at most (one batch = one changelog record per partition).
    pub max_batch: usize,
    /// How long a batch waits for more records after its first.
    pub linger_ms: u64,
    /// Largest changelog record; a bigger delta is split into chunks.
    pub changelog_chunk_bytes: usize,
    /// Give up restoring a partition after this long (the service then stops: never runs without
    /// its state).
    pub restore_timeout_ms: u64,
    /// Kafka transactions around each batch (Apache Kafka only; tansu has none).
    pub transactional: bool,
    /// `transactional.id` (default `<client_id>-txn`); must be stable per instance.
    pub transactional_id: Option<String>,
    /// How often the per-store gap gauges and state-size gauges are refreshed.
    pub gauge_interval_ms: u64,
    /// librdkafka properties for the producer only (on top of the runtime's idempotent producer
    /// settings and `kafka.properties`).
    pub producer_properties: std::collections::BTreeMap<String, String>,
}

impl Default for DedupConfig {
    fn default() -> Self {
        let core = core::CoreConfig::default();
        DedupConfig {
            input_topic: "tillstream.store-events.raw".into(),
            output_topic: "tillstream.store-events".into(),
            gaps_topic: "tillstream.sequence-gaps".into(),
            conflicts_topic: "tillstream.conflicts".into(),
            dead_letter_topic: "tillstream.dead-letter".into(),
            changelog_topic: "tillstream.dedup.changelog".into(),
            group_id: "tillstream-dedup".into(),
            client_id: "tillstream-dedup".into(),
            horizon_ms: core.horizon_ms,
            device_refresh_ms: core.device_refresh_ms,
            max_open_gaps_per_device: core.max_open_gaps_per_device,
            max_batch: 5000,
            linger_ms: 20,
            changelog_chunk_bytes: 512 * 1024,
            restore_timeout_ms: 300_000,
            transactional: false,
            transactional_id: None,
            gauge_interval_ms: 5_000,
            producer_properties: Default::default(),
        }
    }
}

impl DedupConfig {
    pub fn core(&self) -> core::CoreConfig {
        core::CoreConfig {
            horizon_ms: self.horizon_ms,
            device_refresh_ms: self.device_refresh_ms,
            max_open_gaps_per_device: self.max_open_gaps_per_device,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DedupError {
    #[error("invalid configuration: {0}")]
    Config(String),
    #[error("topology: {0}")]
    Topology(String),
    #[error("kafka: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    #[error("schema registry: {0}")]
    Registry(#[from] RegistryError),
    #[error("encoding an output record: {0}")]
    Codec(#[from] tillstream_contracts::CodecError),
    #[error("changelog: {0}")]
    Changelog(#[from] changelog::ChangelogError),
    #[error("dead letter: {0}")]
    DeadLetter(#[from] tillstream_runtime::kafka::DeadLetterError),
    #[error("state restore failed: {0}")]
    Restore(String),
    #[error("transaction: {0}")]
    Transaction(String),
    #[error("ops endpoint: {0}")]
    Io(#[from] std::io::Error),
}

impl Classify for DedupError {
    fn class(&self) -> ErrorClass {
        match self {
            DedupError::Kafka(e) => e.class(),
            DedupError::Registry(e) => e.class(),
            _ => ErrorClass::Fatal,
        }
    }
}
