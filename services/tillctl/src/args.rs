//! tillctl's command line: every command, subcommand and flag (clap derive). `main.rs` dispatches
//! them to the library's functions.

use std::path::PathBuf;

use clap::{Parser, Subcommand};
use tillstream_runtime::cli::{BrokersArg, RegistryArg};

#[derive(Parser)]
#[command(name = "tillctl", version, about = "tillstream operator CLI")]
pub(crate) struct Cli {
    #[command(subcommand)]
    pub(crate) command: Command,
}

#[derive(Subcommand)]
pub(crate) enum Command {
    /// The schema evolution gate.
    Schemas {
        #[command(subcommand)]
        command: SchemasCmd,
    },
    /// Topology as code: plan / apply topics.
    Topology {
        #[command(subcommand)]
        command: TopologyCmd,
    },
    /// Print a topic's records as JSON lines (decoded through the registry).
    Tail {
        topic: String,
        #[command(flatten)]
        brokers: BrokersArg,
        #[command(flatten)]
        registry: RegistryArg,
        #[arg(long, default_value_t = 100)]
        max: usize,
        #[arg(long, default_value_t = 10_000)]
        timeout_ms: u64,
    },
    /// The store bridge's outbox quarantine: records whose Kafka topic could not take them.
    Outbox {
        #[command(subcommand)]
        command: OutboxCmd,
    },
    /// The conflict detector's review queue.
    Conflicts(ConflictsArgs),
    /// Approved price lists.
    Prices {
        #[command(subcommand)]
        command: PricesCmd,
    },
    /// The finance export: export a range again, a store-day's ledger, reconciliation status.
    Finance(FinanceArgs),
    /// A live view of a running pipeline from its services' metrics: events/s per stage, stores,
    /// dead letters (docs/live-view.md says what each part means).
    Top(TopArgs),
    /// The dead-letter topic: a summary by service and reason; re-driving one reason's dead
    /// letters once their cause is fixed.
    DeadLetters {
        #[command(subcommand)]
        command: DeadLettersCmd,
    },
    /// Who may connect to the stores' MQTT broker: the fleet's CA, each device's certificate
    /// (add, rotate with a grace period, revoke) and the fleet file.
    Fleet(FleetArgs),
}

#[derive(clap::Args)]
pub(crate) struct FleetArgs {
    /// The PKI folder: CA, register of issued certificates, revocation list.
    #[arg(
        long,
        env = "TILLSTREAM_PKI_DIR",
        default_value = ".stack/pki",
        global = true
    )]
    pub(crate) pki: PathBuf,
    /// The broker's pid file: it is sent SIGHUP when the revocation list changes, so it refuses
    /// a revoked certificate from its next connection on.
    #[arg(long, env = "TILLSTREAM_MQTT_PID_FILE", global = true)]
    pub(crate) broker_pid_file: Option<PathBuf>,
    /// The broker's ACL file: its devices' part is rewritten from the fleet file after `sync`,
    /// `add` and `revoke` (each device writes only its own device level, reads its store's catalog).
    #[arg(long, env = "TILLSTREAM_MQTT_ACL_FILE", global = true)]
    pub(crate) broker_acl: Option<PathBuf>,
    /// Migration to the contract's device-level topics (`1`): the ACL also lets each device write
    /// its own store's v1 store-level topics.
    #[arg(
        long,
        env = "TILLSTREAM_MQTT_STORE_LEVEL_TOPICS",
        global = true,
        value_parser = clap::builder::BoolishValueParser::new(),
        action = clap::ArgAction::Set,
        default_value = "0"
    )]
    pub(crate) store_level_topics: bool,
    /// Validity of the certificates issued, in days.
    #[arg(long, default_value_t = 730, global = true)]
    pub(crate) days: u32,
    #[command(subcommand)]
    pub(crate) command: FleetCmd,
}

#[derive(Subcommand)]
pub(crate) enum FleetCmd {
    /// Create the CA, the broker's certificate and an empty revocation list where missing
    /// (an existing CA is kept).
    Init {
        /// The broker's DNS names and IP addresses (its certificate's subject alternative names).
        #[arg(long = "broker-name", default_values_t = ["127.0.0.1".to_string(), "localhost".to_string()])]
        broker_names: Vec<String>,
    },
    /// Issue kept certificates (key in <pki>/clients/) for every device of a fleet file and every
    /// service named that has none: for the local stack and the simulator, which play every
    /// device. Real tills get theirs from `add`.
    Sync {
        /// Also issue kept certificates for this fleet file's devices (the simulator's).
        #[arg(long)]
        fleet: Option<PathBuf>,
        /// A service's user name (`bridge`, `admin`); repeatable.
        #[arg(long = "service")]
        services: Vec<String>,
    },
    /// Register a new device to its store in the fleet file and issue its certificate; the key is
    /// printed (or written with --out) once and stored nowhere else.
    Add {
        device: String,
        store: String,
        #[command(flatten)]
        fleet: FleetFileArg,
        /// Write <device>.crt, <device>.key (0600) and ca.crt here instead of printing them.
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// A new certificate for a device; its current ones stay valid for the grace period, then the
    /// next fleet command (or `retire`) revokes them.
    Rotate {
        device: String,
        /// How long the old certificates stay valid (`90s`, `30m`, `24h`, `7d`).
        #[arg(long, default_value = "24h")]
        grace: String,
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Revoke a device's certificates (or one --serial) and, for all of them, remove it from the
    /// fleet file.
    Revoke {
        device: String,
        /// Only this certificate (hex serial, see `list`).
        #[arg(long)]
        serial: Option<String>,
        #[command(flatten)]
        fleet: FleetFileArg,
    },
    /// Revoke the certificates whose grace period has ended (run it from a timer; every other
    /// fleet command does it first too).
    Retire,
    /// Every certificate issued: serial, name, role, validity, state.
    List,
    /// Rewrite the devices' part of the broker's ACL (--broker-acl) from the fleet file and reload
    /// the broker; needs no PKI (also for a plaintext broker with passwords).
    Acl {
        #[command(flatten)]
        fleet: FleetFileArg,
    },
}

#[derive(clap::Args)]
pub(crate) struct FleetFileArg {
    /// The fleet file (`device_id,store_id`) the store bridge reads.
    #[arg(
        long = "fleet",
        env = "TILLSTREAM_FLEET_FILE",
        default_value = "config/fleet/devices.csv"
    )]
    pub(crate) path: PathBuf,
}

#[derive(Subcommand)]
pub(crate) enum DeadLettersCmd {
    /// Dead letters per service and reason: how many, first and last failure.
    Summary {
        #[command(flatten)]
        args: DeadLetterArgs,
        /// Only this reason.
        #[arg(long)]
        reason: Option<String>,
    },
    /// Send the dead letters of one reason back through the validation that refused them: the store
    /// bridge's (with its configuration as it is now) for MQTT messages, the consumer's (written back
    /// to its input topic) for Kafka records. Repeats are absorbed by the dedup.
    Redrive {
        #[command(flatten)]
        args: DeadLetterArgs,
        /// The reason to re-drive (`unknown_device`, `out_of_bounds`, ...).
        #[arg(long)]
        reason: String,
        /// List what would be re-driven, write nothing.
        #[arg(long)]
        dry_run: bool,
    },
}

#[derive(clap::Args)]
pub(crate) struct DeadLetterArgs {
    #[command(flatten)]
    pub(crate) brokers: BrokersArg,
    #[command(flatten)]
    pub(crate) registry: RegistryArg,
    /// The store bridge's config file (its TILLSTREAM_STORE_BRIDGE__* variables apply too): its
    /// routes, fleet file, limits and dead-letter topic.
    #[arg(long)]
    pub(crate) bridge_config: Option<PathBuf>,
    /// The fleet file to validate against (default: the bridge config's).
    #[arg(long)]
    pub(crate) fleet_file: Option<PathBuf>,
    /// Only dead letters of this service (`store-bridge`, `dedup`, `inventory-projection`, ...).
    #[arg(long)]
    pub(crate) service: Option<String>,
    /// Only dead letters since: epoch milliseconds, or an age (`30m`, `6h`, `2d`).
    #[arg(long)]
    pub(crate) since: Option<String>,
    /// How long reading the topic, and each write's retries, may take (ms).
    #[arg(long, default_value_t = 30_000)]
    pub(crate) timeout_ms: u64,
}

#[derive(clap::Args)]
pub(crate) struct TopArgs {
    /// A service's metrics URL; repeat for each. Default: the five services `scripts/run` starts.
    #[arg(long = "metrics", value_name = "URL", default_values_t = [
        "http://127.0.0.1:19464/metrics".to_string(),
        "http://127.0.0.1:19465/metrics".to_string(),
        "http://127.0.0.1:19466/metrics".to_string(),
        "http://127.0.0.1:19467/metrics".to_string(),
        "http://127.0.0.1:19468/metrics".to_string(),
    ])]
    pub(crate) metrics: Vec<String>,
    /// Milliseconds between frames (each frame's rates are measured over it).
    #[arg(long, default_value_t = 2_000)]
    pub(crate) every_ms: u64,
    /// Stop after this many frames (default: until Ctrl-C).
    #[arg(long)]
    pub(crate) frames: Option<u64>,
    /// Print frames one after another instead of redrawing the screen (the default when the
    /// output is not a terminal).
    #[arg(long)]
    pub(crate) plain: bool,
    /// A file whose last line the view shows as the fleet's status.
    #[arg(long)]
    pub(crate) status_file: Option<PathBuf>,
    /// How many stores the store table shows.
    #[arg(long, default_value_t = 10)]
    pub(crate) stores: usize,
}

#[derive(clap::Args)]
pub(crate) struct FinanceArgs {
    /// The finance export's config file (its TILLSTREAM_FINANCE_EXPORT__* and TILLSTREAM_PG_URL
    /// variables apply too).
    #[arg(long)]
    pub(crate) config: Option<PathBuf>,
    /// The ledger database (sqlite://... or postgres://...); default: the config's.
    #[arg(long)]
    pub(crate) db: Option<String>,
    /// The store master data (store_id,time_zone,currency,legal_entity); default: the config's.
    #[arg(long)]
    pub(crate) stores: Option<PathBuf>,
    /// The chart of accounts (TOML); default: the config's, else the shipped one.
    #[arg(long)]
    pub(crate) chart: Option<PathBuf>,
    #[command(subcommand)]
    pub(crate) command: FinanceCmd,
}

#[derive(Subcommand)]
pub(crate) enum FinanceCmd {
    /// Render the delivered exports of business dates FROM..=TO again into another folder
    /// (byte-identical with the delivered files).
    Export {
        #[arg(long)]
        from: String,
        #[arg(long)]
        to: String,
        /// Only this store's exports.
        #[arg(long)]
        store: Option<String>,
        #[arg(long)]
        out: PathBuf,
    },
    /// A store-day's ledger lines and totals.
    Ledger {
        #[arg(long)]
        store: String,
        /// Business date, YYYY-MM-DD.
        #[arg(long)]
        date: String,
    },
    /// The latest reconciliation record of every device-day, per store.
    Reconciliation {
        #[arg(long)]
        store: Option<String>,
    },
}

#[derive(clap::Args)]
pub(crate) struct ConflictsArgs {
    /// The detector's review queue API.
    #[arg(
        long,
        env = "TILLSTREAM_CONFLICTS_API",
        default_value = "http://127.0.0.1:19470"
    )]
    pub(crate) api: String,
    /// Its bearer token (the detector's api.token).
    #[arg(long, env = "TILLSTREAM_CONFLICTS_TOKEN", hide_env_values = true)]
    pub(crate) token: String,
    #[command(subcommand)]
    pub(crate) command: ConflictsCmd,
}

#[derive(Subcommand)]
pub(crate) enum ConflictsCmd {
    /// Open conflicts (oldest first), filtered.
    List {
        #[arg(long)]
        store: Option<String>,
        #[arg(long)]
        rule: Option<String>,
        /// info | auto-resolved | needs-review
        #[arg(long)]
        severity: Option<String>,
        /// open (default) | closed | resolved | superseded | all
        #[arg(long)]
        status: Option<String>,
        /// Only conflicts waiting at least this many minutes.
        #[arg(long)]
        older_than_min: Option<i64>,
        #[arg(long, default_value_t = 100)]
        limit: i64,
        /// JSON lines instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// One conflict with its evidence, compensations and audit trail (JSON).
    Show { id: String },
    /// Resolve: accept (the rule's outcome stands) or reject (its compensations are reversed).
    Resolve {
        id: String,
        #[arg(long, value_parser = ["accept", "reject"])]
        action: String,
        #[arg(long)]
        who: String,
        #[arg(long)]
        why: String,
    },
}

#[derive(Subcommand)]
pub(crate) enum PricesCmd {
    /// Publish an approved list (JSON file) to the downlink and the history topic.
    Approve {
        file: PathBuf,
        #[command(flatten)]
        brokers: BrokersArg,
        #[command(flatten)]
        registry: RegistryArg,
        #[arg(long, default_value = "tillstream.catalog.downlink")]
        downlink_topic: String,
        #[arg(long, default_value = "tillstream.price-lists.history")]
        history_topic: String,
    },
}

#[derive(Subcommand)]
pub(crate) enum OutboxCmd {
    /// List the quarantined records (JSON lines, oldest first).
    Quarantine(OutboxArgs),
    /// Put quarantined records back at the end of the outbox (the bridge takes them within seconds).
    Redrive(OutboxArgs),
}

#[derive(clap::Args)]
pub(crate) struct OutboxArgs {
    /// The bridge's outbox folder (its `outbox.dir`).
    #[arg(
        long,
        env = "TILLSTREAM_STORE_BRIDGE__OUTBOX__DIR",
        default_value = "data/store-bridge"
    )]
    pub(crate) dir: PathBuf,
    /// Only records of this Kafka topic.
    #[arg(long)]
    pub(crate) topic: Option<String>,
    /// Only records set aside for this reason (topic_unknown, not_authorized, topic_invalid).
    #[arg(long)]
    pub(crate) reason: Option<String>,
}

#[derive(Subcommand)]
pub(crate) enum SchemasCmd {
    /// Check every version against its predecessors; with --registry, also register them in order.
    Check {
        #[arg(long, default_value = "schemas")]
        dir: PathBuf,
        /// Registry URL (Confluent-compatible). Without it only the local check runs.
        #[arg(long, env = "TILLSTREAM_REGISTRY_URL")]
        registry: Option<String>,
        /// Skip the registry even if TILLSTREAM_REGISTRY_URL is set.
        #[arg(long)]
        offline: bool,
    },
    /// Print the latest registered version of a subject.
    Show {
        subject: String,
        #[command(flatten)]
        registry: RegistryArg,
    },
}

#[derive(Subcommand)]
pub(crate) enum TopologyCmd {
    /// Show the difference between the file and the live cluster (read-only).
    Plan(TopologyArgs),
    /// Create missing topics, add partitions, align configs. Never deletes unless --allow-delete.
    Apply(TopologyArgs),
    /// Validate the file without a cluster.
    Validate(TopologyArgs),
    /// Print the file as Kubernetes resources (`--format strimzi`: Strimzi KafkaTopic resources,
    /// checked in as k8s/strimzi/topics.yaml).
    Render(RenderArgs),
}

#[derive(clap::Args)]
pub(crate) struct RenderArgs {
    #[arg(long, default_value = "topology/topology.toml")]
    pub(crate) file: PathBuf,
    #[arg(long, value_parser = ["strimzi"])]
    pub(crate) format: String,
    #[arg(long, default_value = "production")]
    pub(crate) profile: String,
    /// The namespace of the resources.
    #[arg(long, default_value = "tillstream")]
    pub(crate) namespace: String,
    /// The Strimzi Kafka cluster that owns them (their `strimzi.io/cluster` label).
    #[arg(long, default_value = "tillstream")]
    pub(crate) cluster: String,
}

#[derive(clap::Args)]
pub(crate) struct TopologyArgs {
    #[arg(long, default_value = "topology/topology.toml")]
    pub(crate) file: PathBuf,
    #[command(flatten)]
    pub(crate) brokers: BrokersArg,
    #[arg(long, env = "TILLSTREAM_TOPOLOGY_PROFILE", default_value = "local")]
    pub(crate) profile: String,
    #[arg(long)]
    pub(crate) allow_delete: bool,
    #[arg(long, default_value_t = 15_000)]
    pub(crate) timeout_ms: u64,
    /// With `plan`: exit 2 when the cluster differs from the file (for CI drift checks).
    #[arg(long)]
    pub(crate) detailed_exitcode: bool,
}
