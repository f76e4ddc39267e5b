//! tillctl entry point: parses arguments, runs one command, prints its result. Errors are one line on
//! stderr with a non-zero exit code, never a panic.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use tillctl::{
    conflicts, dead_letters, finance, inspect, outbox, prices, schemas, strimzi, top, topology,
};
use tillstream_contracts::{Registry, RegistryConfig};
use tillstream_runtime::cli::{BrokersArg, RegistryArg};

#[derive(Parser)]
#[command(name = "tillctl", version, about = "tillstream operator CLI")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
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
}

#[derive(Subcommand)]
enum DeadLettersCmd {
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
struct DeadLetterArgs {
    #[command(flatten)]
    brokers: BrokersArg,
    #[command(flatten)]
    registry: RegistryArg,
    /// The store bridge's config file (its TILLSTREAM_STORE_BRIDGE__* variables apply too): its
    /// routes, fleet file, limits and dead-letter topic.
    #[arg(long)]
    bridge_config: Option<PathBuf>,
    /// The fleet file to validate against (default: the bridge config's).
    #[arg(long)]
    fleet_file: Option<PathBuf>,
    /// Only dead letters of this service (`store-bridge`, `dedup`, `inventory-projection`, ...).
    #[arg(long)]
    service: Option<String>,
    /// Only dead letters since: epoch milliseconds, or an age (`30m`, `6h`, `2d`).
    #[arg(long)]
    since: Option<String>,
    /// How long reading the topic, and each write's retries, may take (ms).
    #[arg(long, default_value_t = 30_000)]
    timeout_ms: u64,
}

#[derive(clap::Args)]
struct TopArgs {
    /// A service's metrics URL; repeat for each. Default: the five services `scripts/run` starts.
    #[arg(long = "metrics", value_name = "URL", default_values_t = [
        "http://127.0.0.1:19464/metrics".to_string(),
        "http://127.0.0.1:19465/metrics".to_string(),
        "http://127.0.0.1:19466/metrics".to_string(),
        "http://127.0.0.1:19467/metrics".to_string(),
        "http://127.0.0.1:19468/metrics".to_string(),
    ])]
    metrics: Vec<String>,
    /// Milliseconds between frames (each frame's rates are measured over it).
    #[arg(long, default_value_t = 2_000)]
    every_ms: u64,
    /// Stop after this many frames (default: until Ctrl-C).
    #[arg(long)]
    frames: Option<u64>,
    /// Print frames one after another instead of redrawing the screen (the default when the
    /// output is not a terminal).
    #[arg(long)]
    plain: bool,
    /// A file whose last line the view shows as the fleet's status.
    #[arg(long)]
    status_file: Option<PathBuf>,
    /// How many stores the store table shows.
    #[arg(long, default_value_t = 10)]
    stores: usize,
}

#[derive(clap::Args)]
struct FinanceArgs {
    /// The finance export's config file (its TILLSTREAM_FINANCE_EXPORT__* and TILLSTREAM_PG_URL
    /// variables apply too).
    #[arg(long)]
    config: Option<PathBuf>,
    /// The ledger database (sqlite://... or postgres://...); default: the config's.
    #[arg(long)]
    db: Option<String>,
    /// The store master data (store_id,time_zone,currency,legal_entity); default: the config's.
    #[arg(long)]
    stores: Option<PathBuf>,
    /// The chart of accounts (TOML); default: the config's, else the shipped one.
    #[arg(long)]
    chart: Option<PathBuf>,
    #[command(subcommand)]
    command: FinanceCmd,
}

#[derive(Subcommand)]
enum FinanceCmd {
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
struct ConflictsArgs {
    /// The detector's review queue API.
    #[arg(
        long,
        env = "TILLSTREAM_CONFLICTS_API",
        default_value = "http://127.0.0.1:19470"
    )]
    api: String,
    /// Its bearer token (the detector's api.token).
    #[arg(long, env = "TILLSTREAM_CONFLICTS_TOKEN", hide_env_values = true)]
    token: String,
    #[command(subcommand)]
    command: ConflictsCmd,
}

#[derive(Subcommand)]
enum ConflictsCmd {
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
enum PricesCmd {
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
enum OutboxCmd {
    /// List the quarantined records (JSON lines, oldest first).
    Quarantine(OutboxArgs),
    /// Put quarantined records back at the end of the outbox (the bridge takes them within seconds).
    Redrive(OutboxArgs),
}

#[derive(clap::Args)]
struct OutboxArgs {
    /// The bridge's outbox folder (its `outbox.dir`).
    #[arg(
        long,
        env = "TILLSTREAM_STORE_BRIDGE__OUTBOX__DIR",
        default_value = "data/store-bridge"
    )]
    dir: PathBuf,
    /// Only records of this Kafka topic.
    #[arg(long)]
    topic: Option<String>,
    /// Only records set aside for this reason (topic_unknown, not_authorized, topic_invalid).
    #[arg(long)]
    reason: Option<String>,
}

#[derive(Subcommand)]
enum SchemasCmd {
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
enum TopologyCmd {
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
struct RenderArgs {
    #[arg(long, default_value = "topology/topology.toml")]
    file: PathBuf,
    #[arg(long, value_parser = ["strimzi"])]
    format: String,
    #[arg(long, default_value = "production")]
    profile: String,
    /// The namespace of the resources.
    #[arg(long, default_value = "tillstream")]
    namespace: String,
    /// The Strimzi Kafka cluster that owns them (their `strimzi.io/cluster` label).
    #[arg(long, default_value = "tillstream")]
    cluster: String,
}

#[derive(clap::Args)]
struct TopologyArgs {
    #[arg(long, default_value = "topology/topology.toml")]
    file: PathBuf,
    #[command(flatten)]
    brokers: BrokersArg,
    #[arg(long, env = "TILLSTREAM_TOPOLOGY_PROFILE", default_value = "local")]
    profile: String,
    #[arg(long)]
    allow_delete: bool,
    #[arg(long, default_value_t = 15_000)]
    timeout_ms: u64,
    /// With `plan`: exit 2 when the cluster differs from the file (for CI drift checks).
    #[arg(long)]
    detailed_exitcode: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // A CLI prints its results on stdout; only warnings belong on stderr.
    tillstream_runtime::telemetry::init_tracing_with_default("tillctl", "warn");
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(run(cli)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {}", format!("{e}").replace('\n', " "));
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Schemas {
            command:
                SchemasCmd::Check {
                    dir,
                    registry,
                    offline,
                },
        } => {
            let registry = if offline { None } else { registry };
            let reports = schemas::run_gate(&dir, registry.as_deref()).await?;
            let mut failed = 0;
            for r in &reports {
                let status = if r.problems.is_empty() { "ok" } else { "FAIL" };
                let ids = if r.ids.is_empty() {
                    String::new()
                } else {
                    format!(" ids={:?}", r.ids)
                };
                println!(
                    "{status:4} {:55} {:20} versions={}{ids}",
                    r.subject, r.level, r.versions
                );
                for p in &r.problems {
                    println!("     - {p}");
                }
                failed += usize::from(!r.problems.is_empty());
            }
            match (&registry, failed) {
                (_, 0) => println!(
                    "schema gate passed: {} subjects{}",
                    reports.len(),
                    registry
                        .map(|u| format!(", registered with {u}"))
                        .unwrap_or_default()
                ),
                _ => anyhow::bail!("schema gate failed: {failed} incompatible subject(s)"),
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Schemas {
            command: SchemasCmd::Show { subject, registry },
        } => {
            let client = Registry::new(registry.read_only())?;
            let latest = client.latest(&subject).await?;
            println!("{}", serde_json::to_string_pretty(&latest)?);
            Ok(ExitCode::SUCCESS)
        }
        Command::Topology { command } => {
            let (args, mode) = match command {
                TopologyCmd::Plan(a) => (a, "plan"),
                TopologyCmd::Apply(a) => (a, "apply"),
                TopologyCmd::Validate(a) => (a, "validate"),
                TopologyCmd::Render(r) => {
                    let file = topology::load(&r.file)?;
                    let target = strimzi::Target {
                        profile: &r.profile,
                        namespace: &r.namespace,
                        cluster: &r.cluster,
                    };
                    print!("{}", strimzi::render(&file, &target)?);
                    return Ok(ExitCode::SUCCESS);
                }
            };
            let file = topology::load(&args.file)?;
            let desired = topology::desired(&file, &args.profile)?;
            if mode == "validate" {
                println!(
                    "topology valid: {} topics, {} consumer groups",
                    desired.len(),
                    file.consumer_groups.len()
                );
                return Ok(ExitCode::SUCCESS);
            }
            let kafka = args.brokers.kafka_config();
            let timeout = Duration::from_millis(args.timeout_ms);
            let live = topology::live(&kafka, &topology::managed_keys(&desired), timeout).await?;
            let changes = topology::plan(&desired, &live, args.allow_delete);
            for c in &changes {
                println!("{c}");
            }
            let drift = changes.iter().filter(|c| c.is_drift()).count();
            if mode == "plan" {
                println!(
                    "plan: {} change(s) against {} ({} profile)",
                    drift, args.brokers.brokers, args.profile
                );
                if args.detailed_exitcode && drift > 0 {
                    return Ok(ExitCode::from(2));
                }
                return Ok(ExitCode::SUCCESS);
            }
            let actionable: Vec<_> = changes.into_iter().filter(|c| c.is_actionable()).collect();
            let done = topology::apply(&kafka, &actionable, timeout).await?;
            for d in &done {
                println!("{d}");
            }
            println!("apply: {} action(s)", done.len());
            Ok(ExitCode::SUCCESS)
        }
        Command::Tail {
            topic,
            brokers,
            registry,
            max,
            timeout_ms,
        } => {
            let kafka = brokers.kafka_config();
            let registry = Registry::new(registry.read_only())?;
            let records = inspect::read_topic(
                &kafka,
                &registry,
                &topic,
                max,
                Duration::from_millis(timeout_ms),
            )
            .await?;
            for r in records {
                println!("{r}");
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Conflicts(args) => {
            let api = conflicts::Api {
                url: args.api,
                token: args.token,
            };
            match args.command {
                ConflictsCmd::List {
                    store,
                    rule,
                    severity,
                    status,
                    older_than_min,
                    limit,
                    json,
                } => {
                    let filter = conflicts::ListFilter {
                        store,
                        rule,
                        severity,
                        status,
                        min_age_ms: older_than_min.map(|m| m * 60_000),
                        limit: Some(limit),
                    };
                    let rows = api.list(&filter).await?;
                    let now = tillstream_runtime::clock::now_ms();
                    for r in &rows {
                        if json {
                            println!("{r}");
                        } else {
                            println!("{}", conflicts::table_line(r, now));
                        }
                    }
                    println!("conflicts: {}", rows.len());
                }
                ConflictsCmd::Show { id } => {
                    println!("{}", serde_json::to_string_pretty(&api.show(&id).await?)?);
                }
                ConflictsCmd::Resolve {
                    id,
                    action,
                    who,
                    why,
                } => {
                    let r = api.resolve(&id, &action, &who, &why).await?;
                    println!(
                        "{}: {}",
                        r["outcome"].as_str().unwrap_or("?"),
                        r["message"].as_str().unwrap_or("")
                    );
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Top(args) => {
            use std::io::IsTerminal;
            let screen = if args.plain || !std::io::stdout().is_terminal() {
                top::Screen::Append
            } else {
                top::Screen::Redraw
            };
            let opts = top::Options {
                endpoints: args.metrics,
                every: Duration::from_millis(args.every_ms.max(100)),
                frames: args.frames,
                screen,
                status_file: args.status_file,
                store_rows: args.stores,
            };
            top::run(opts, &mut std::io::stdout().lock()).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::DeadLetters { command } => {
            let (args, reason, redrive) = match command {
                DeadLettersCmd::Summary { args, reason } => (args, reason, None),
                DeadLettersCmd::Redrive {
                    args,
                    reason,
                    dry_run,
                } => (args, Some(reason), Some(dry_run)),
            };
            let mut bridge: tillstream_store_bridge::Config = tillstream_runtime::config::load(
                tillstream_store_bridge::SERVICE,
                args.bridge_config.as_deref(),
            )?;
            // The connections are this command's (as for every tillctl command); the validation
            // is the bridge's.
            bridge.kafka.brokers = args.brokers.brokers.clone();
            bridge.registry = args.registry.read_only();
            if let Some(f) = args.fleet_file {
                bridge.fleet_file = f;
            }
            let kafka = args.brokers.kafka_config();
            let registry = Registry::new(args.registry.read_only())?;
            let timeout = Duration::from_millis(args.timeout_ms);
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)?
                .as_millis() as i64;
            let selection = dead_letters::Selection {
                reason,
                service: args.service,
                since_ms: args
                    .since
                    .map(|s| dead_letters::parse_since(&s, now))
                    .transpose()
                    .map_err(anyhow::Error::msg)?,
            };
            let stored =
                dead_letters::read(&kafka, &registry, &bridge.dead_letter.topic, timeout).await?;
            match redrive {
                None => {
                    let selected = stored
                        .iter()
                        .map(|s| &s.dead_letter)
                        .filter(|d| selection.selects(d));
                    println!(
                        "{:<22} {:<28} {:>8}  first failed (ms) / last failed (ms)",
                        "SERVICE", "REASON", "COUNT"
                    );
                    for ((service, reason), s) in dead_letters::summarize(selected) {
                        println!(
                            "{service:<22} {reason:<28} {:>8}  {} / {}",
                            s.count, s.first_failed_at, s.last_failed_at
                        );
                    }
                }
                Some(dry_run) => {
                    let revalidator = tillstream_store_bridge::redrive::Revalidator::new(
                        &bridge,
                        Registry::new(bridge.registry.clone())?,
                    )
                    .await?;
                    let report = dead_letters::redrive(
                        &kafka,
                        &registry,
                        &revalidator,
                        &stored,
                        &selection,
                        dry_run,
                        timeout,
                    )
                    .await?;
                    println!("{}", serde_json::to_string_pretty(&report)?);
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Finance(args) => {
            let src = finance::Source {
                config: args.config,
                db: args.db,
                stores: args.stores,
                chart: args.chart,
            };
            match args.command {
                FinanceCmd::Export {
                    from,
                    to,
                    store,
                    out,
                } => {
                    let done = finance::export(&src, &from, &to, store.as_deref(), &out).await?;
                    for e in &done {
                        let what = match e.delivery {
                            finance::Delivery::Written => "written",
                            finance::Delivery::AlreadyThere => "already there (same bytes)",
                        };
                        println!("{}: {what}", e.export_id);
                    }
                    println!("{} exports in {}", done.len(), out.display());
                }
                FinanceCmd::Ledger { store, date } => {
                    print!("{}", finance::ledger(&src, &store, &date).await?);
                }
                FinanceCmd::Reconciliation { store } => {
                    print!("{}", finance::reconciliation(&src, store.as_deref()).await?);
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Prices {
            command:
                PricesCmd::Approve {
                    file,
                    brokers,
                    registry,
                    downlink_topic,
                    history_topic,
                },
        } => {
            let kafka = brokers.kafka_config();
            // Registers the price-list schema if the registry lacks it (an approval is a write).
            let registry = Registry::new(RegistryConfig {
                url: registry.registry,
                ..RegistryConfig::default()
            })?;
            let list =
                prices::approve(&kafka, &registry, &file, &downlink_topic, &history_topic).await?;
            println!(
                "approved {} for {} ({} items, effective {}): on {history_topic} and {downlink_topic}",
                list.price_list_id,
                list.store_id,
                list.items.len(),
                list.effective_from
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Outbox { command } => {
            let (args, redrive) = match command {
                OutboxCmd::Quarantine(a) => (a, false),
                OutboxCmd::Redrive(a) => (a, true),
            };
            let filter = outbox::Filter {
                topic: args.topic,
                reason: args.reason,
            };
            if redrive {
                let n = outbox::redrive(&args.dir, &filter)?;
                println!("redrive: {n} record(s) marked; the bridge puts them back within seconds");
            } else {
                let rows = outbox::list(&args.dir, &filter)?;
                for r in &rows {
                    println!("{}", serde_json::to_string(r)?);
                }
                println!("quarantine: {} record(s)", rows.len());
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}
