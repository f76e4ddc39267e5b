//! The dedup service's configuration (`config::load::<Config>("dedup", file)`; environment
//! `TILLSTREAM_DEDUP__<SECTION>__<KEY>`). Pure data; no delivery guarantee.

use serde::{Deserialize, Serialize};
use tillstream_contracts::RegistryConfig;
use tillstream_runtime::config::OpsConfig;
use tillstream_runtime::kafka::KafkaConfig;

use crate::core::CoreConfig;

/// Service name (config prefix `TILLSTREAM_DEDUP__`, `tillstream-producer` header, dead letters).
pub const SERVICE: &str = "dedup";

/// Full configuration.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Config {
    pub kafka: KafkaConfig,
    pub registry: RegistryConfig,
    pub ops: OpsConfig,
    pub dedup: DedupConfig,
}

/// How a batch's effects become visible downstream.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DeliveryMode {
    /// Outputs, then the changelog, then gap records, then the input offsets, each step waiting
    /// for the broker's acknowledgement: a crash duplicates at most the batch in flight (sinks are
    /// idempotent on the event id). The only mode tansu supports.
    #[default]
    AtLeastOnce,
    /// The whole batch (outputs, changelog, gap records, input offsets) in one Kafka transaction
    /// (Apache Kafka only; needs consumer-group assignment for the offsets).
    Transactional,
}

/// The `[dedup]` section.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct DedupConfig {
    /// Raw store events written by the bridges.
    pub input_topic: String,
    /// One copy of every event, same partition as its input.
    pub output_topic: String,
    /// Per-device sequence-gap records.
    pub gaps_topic: String,
    /// Identity-collision records.
    pub conflicts_topic: String,
    pub dead_letter_topic: String,
    /// The state's changelog, co-partitioned with the input.
    pub changelog_topic: String,
    /// Sync receipts for devices (compacted, keyed by device id), delivered to each device by the
    /// store bridge's downlink.
    pub receipts_topic: String,
    /// A device gets at most one receipt per this many milliseconds; the newest state of a device
    /// whose receipt was held back goes out once the interval has passed. 0 = no receipts.
    pub receipt_interval_ms: u64,
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
    /// `at-least-once` or `transactional` (see [`DeliveryMode`]).
    pub delivery: DeliveryMode,
    /// `transactional.id` (default `<client_id>-txn`); must be stable per instance.
    pub transactional_id: Option<String>,
    /// How often the per-store gap gauges and state-size gauges are refreshed.
    pub gauge_interval_ms: u64,
    /// librdkafka properties for the producer only (on top of the runtime's producer settings
    /// and `kafka.properties`).
    pub producer_properties: std::collections::BTreeMap<String, String>,
}

impl Default for DedupConfig {
    fn default() -> Self {
        let core = CoreConfig::default();
        DedupConfig {
            input_topic: "tillstream.store-events.raw".into(),
            output_topic: "tillstream.store-events".into(),
            gaps_topic: "tillstream.sequence-gaps".into(),
            conflicts_topic: "tillstream.conflicts".into(),
            dead_letter_topic: "tillstream.dead-letter".into(),
            changelog_topic: "tillstream.dedup.changelog".into(),
            receipts_topic: "tillstream.device-receipts".into(),
            receipt_interval_ms: 1_000,
            group_id: "tillstream-dedup".into(),
            client_id: "tillstream-dedup".into(),
            horizon_ms: core.horizon_ms,
            device_refresh_ms: core.device_refresh_ms,
            max_open_gaps_per_device: core.max_open_gaps_per_device,
            max_batch: 5000,
            linger_ms: 20,
            changelog_chunk_bytes: 512 * 1024,
            restore_timeout_ms: 300_000,
            delivery: DeliveryMode::AtLeastOnce,
            transactional_id: None,
            gauge_interval_ms: 5_000,
            producer_properties: Default::default(),
        }
    }
}

impl DedupConfig {
    pub fn core(&self) -> CoreConfig {
        CoreConfig {
            horizon_ms: self.horizon_ms,
            device_refresh_ms: self.device_refresh_ms,
            max_open_gaps_per_device: self.max_open_gaps_per_device,
        }
    }

    /// The bounds a running service relies on.
    pub fn validate(&self, kafka: &KafkaConfig) -> Result<(), String> {
        if self.max_batch == 0 || self.horizon_ms <= 0 || self.changelog_chunk_bytes < 1024 {
            return Err(
                "max_batch > 0, horizon_ms > 0 and changelog_chunk_bytes >= 1024 are required"
                    .into(),
            );
        }
        if self.delivery == DeliveryMode::Transactional
            && kafka.assignment != tillstream_runtime::kafka::Assignment::Group
        {
            return Err(
                "delivery = \"transactional\" commits offsets through the consumer group: it needs kafka.assignment = \"group\"".into(),
            );
        }
        kafka.validate()
    }
}
