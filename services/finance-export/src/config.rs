//! The finance export's configuration: defaults → TOML (`--config`) → `TILLSTREAM_*` shortcuts →
//! `TILLSTREAM_FINANCE_EXPORT__SECTION__KEY`. Pure data; no delivery guarantee. Credentials
//! (the object store's secret key) print as `<redacted>`.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use tillstream_contracts::RegistryConfig;
use tillstream_runtime::config::OpsConfig;
use tillstream_runtime::kafka::KafkaConfig;
pub use tillstream_runtime::sql::DatabaseConfig;

/// The service name: config prefix, metric prefix, dead-letter `service`.
pub const SERVICE: &str = "finance-export";

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct Config {
    /// Brokers and assignment mode of the input consumer and the dead-letter producer.
    pub kafka: KafkaConfig,
    /// Where writer schemas of the input records are looked up.
    pub registry: RegistryConfig,
    /// The ledger's database.
    pub database: DatabaseConfig,
    /// `/metrics`, `/healthz`, `/readyz`.
    pub ops: OpsConfig,
    /// The deduplicated store events (each event once, per-store order).
    pub topic: String,
    /// The conflict detector's compensations; empty = not read.
    pub compensations_topic: String,
    /// Where events that cannot be booked go, with their reason.
    pub dead_letter_topic: String,
    /// The consumer group whose committed offsets are a fallback to the database's.
    pub group_id: String,
    /// Batch sizes of the input loop.
    pub batch: BatchConfig,
    /// The chart of accounts (TOML); unset = the one shipped in `config/finance/`.
    pub chart_file: Option<PathBuf>,
    /// The store master data (`store_id,time_zone,currency,legal_entity`).
    pub stores_file: PathBuf,
    /// When store-days close and late lines are delivered.
    pub close: CloseConfig,
    /// Where the day files go.
    pub destination: DestinationConfig,
    /// Fault injection for tests and drills (off by default).
    pub fault: FaultConfig,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            kafka: KafkaConfig::default(),
            registry: RegistryConfig::default(),
            database: DatabaseConfig {
                // Ledger lines are wide rows: smaller statements than the shared default.
                rows_per_statement: 400,
                ..DatabaseConfig::for_service(SERVICE)
            },
            ops: OpsConfig::default(),
            topic: "tillstream.store-events".into(),
            compensations_topic: "tillstream.compensations".into(),
            dead_letter_topic: "tillstream.dead-letter".into(),
            group_id: "tillstream-finance-export".into(),
            batch: BatchConfig::default(),
            chart_file: None,
            stores_file: "config/fleet/stores.csv".into(),
            close: CloseConfig::default(),
            destination: DestinationConfig::default(),
            fault: FaultConfig::default(),
        }
    }
}

/// What a test or drill asks the exporter to do mid-export (a test kills the process then).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct FaultConfig {
    /// Hold a local delivery this long after its first file is written to `.tmp` and before the
    /// rest (0 = never): a kill then leaves a partial export behind, never visible.
    pub hold_mid_write_ms: u64,
    /// Created (empty) when a delivery starts holding mid-write.
    pub marker_file: Option<PathBuf>,
    /// Hold this long after an export was delivered, before it is recorded delivered (0 = never):
    /// a kill then makes the restart deliver it again.
    pub hold_after_delivery_ms: u64,
    /// Created when the exporter starts holding after a delivery.
    pub delivered_marker_file: Option<PathBuf>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct BatchConfig {
    /// Largest batch (one database transaction).
    pub max_events: usize,
    /// How long a batch waits for more records after the first.
    pub linger_ms: u64,
}

impl Default for BatchConfig {
    fn default() -> Self {
        BatchConfig {
            max_events: 5_000,
            linger_ms: 50,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct CloseConfig {
    /// Local time (`HH:MM`, the store's zone) on the day after a business date at which the day
    /// is due to be closed by every device.
    pub cutoff_local: String,
    /// How long after the cut-off a day with a device that never closed is closed anyway
    /// ("missing close"). A replay of past days needs a grace that covers the replay.
    pub grace_ms: i64,
    /// How often the exporter looks for store-days to close.
    pub check_every_ms: u64,
    /// How long late lines (for a day already exported) wait for the store's next day export
    /// before a supplementary export delivers them.
    pub late_flush_ms: i64,
}

impl Default for CloseConfig {
    fn default() -> Self {
        CloseConfig {
            cutoff_local: "04:00".into(),
            grace_ms: 6 * 3_600_000,
            check_every_ms: 1_000,
            late_flush_ms: 300_000,
        }
    }
}

/// Where the day files are delivered.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DestinationKind {
    /// A local folder (`destination.dir`): each export is renamed into place whole.
    #[default]
    Local,
    /// An S3-compatible bucket (`destination.url`, e.g. `s3://bucket/prefix`): each file is one PUT,
    /// the manifest last.
    ObjectStore,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct DestinationConfig {
    pub kind: DestinationKind,
    /// Local folder of the day files.
    pub dir: PathBuf,
    /// Object store: `s3://bucket/prefix`.
    pub url: String,
    /// Object store: endpoint of an S3-compatible service (MinIO, Ceph); empty = AWS.
    pub endpoint: String,
    /// Object store: region.
    pub region: String,
    /// Object store: access key id; empty = the environment's credentials.
    pub access_key_id: String,
    /// Object store: secret access key (printed as `<redacted>`).
    pub secret_access_key: Secret,
    /// Object store: allow plain HTTP to the endpoint (a local MinIO).
    pub allow_http: bool,
}

impl Default for DestinationConfig {
    fn default() -> Self {
        DestinationConfig {
            kind: DestinationKind::Local,
            dir: "data/finance-exports".into(),
            url: String::new(),
            endpoint: String::new(),
            region: "us-east-1".into(),
            access_key_id: String::new(),
            secret_access_key: Secret::default(),
            allow_http: false,
        }
    }
}

pub use tillstream_runtime::config::Secret;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_secret_key_never_prints() {
        let mut c = Config::default();
        c.destination.secret_access_key = Secret::new("hunter2");
        let toml = toml::to_string(&c).unwrap();
        let json = serde_json::to_string(&c).unwrap();
        let debug = format!("{c:?}");
        for text in [&toml, &json, &debug] {
            assert!(!text.contains("hunter2"));
        }
        assert!(json.contains("<redacted>"));
    }
}
