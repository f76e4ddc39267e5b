//! tillstream-sim entry point: `plan` (generate and write the ground truth, the fleet registry and
//! the store master data), `run` (generate, write them, publish the approved price lists to the
//! downlink topic and the fleet's events over MQTT; the late tills once their store-days were
//! exported when the finance export's folder is given), `check` (the oracle). Errors are one line
//! and a non-zero exit.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use tillstream_contracts::{Registry, RegistryConfig};
use tillstream_runtime::cli::{BrokersArg, RegistryArg};
use tillstream_runtime::kafka::KafkaConfig;
use tillstream_sim::plan::{FleetSpec, Plan, generate};
use tillstream_sim::pricing::{PriceListTopic, publish_price_lists};
use tillstream_sim::truth::Truth;
use tillstream_sim::{late, oracle, publish};

#[derive(Parser)]
#[command(
    name = "tillstream-sim",
    version,
    about = "POS fleet simulator and correctness oracle"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Args, Clone)]
struct SpecArgs {
    /// Fleet spec (TOML, fields of FleetSpec); flags override it.
    #[arg(long)]
    spec: Option<PathBuf>,
    #[arg(long)]
    seed: Option<u64>,
    #[arg(long)]
    stores: Option<u32>,
    #[arg(long)]
    devices_per_store: Option<u32>,
    #[arg(long)]
    events: Option<u64>,
    /// Start of the first trading day (UTC ms). Default for `run`: 06:00 UTC, `days` days ago, so the
    /// events are recent; for `plan`: the spec's value.
    #[arg(long)]
    start_ms: Option<i64>,
    /// Where truth.json, devices.csv and stores.csv are written.
    #[arg(long, default_value = ".stack/sim")]
    out_dir: PathBuf,
}

#[derive(Subcommand)]
enum Command {
    /// Generate the plan and write its ground truth and fleet CSV (nothing is published).
    Plan(SpecArgs),
    /// Generate, write the truth, and publish the fleet's events over MQTT.
    Run {
        #[command(flatten)]
        spec: SpecArgs,
        #[arg(long, default_value = "127.0.0.1")]
        mqtt_host: String,
        #[arg(long, env = "TILLSTREAM_MQTT_PORT", default_value_t = 11883)]
        mqtt_port: u16,
        #[arg(
            long,
            env = "TILLSTREAM_MQTT_DEVICE_PASSWORD",
            default_value = "device-dev"
        )]
        device_password: String,
        /// The stack's PKI folder: TLS, each device with its own certificate (empty: plaintext).
        #[arg(long, env = "TILLSTREAM_MQTT_TLS_DIR")]
        mqtt_tls_dir: Option<PathBuf>,
        /// Fleet-wide publish rate (events/s); 0 = as fast as possible.
        #[arg(long, default_value_t = 0)]
        rate: u64,
        /// Real-time length of each offline period.
        #[arg(long, default_value_t = 500)]
        offline_ms: u64,
        #[command(flatten)]
        cloud: CloudArgs,
        /// Do not publish the plan's price lists (the cloud side) to the downlink topic.
        #[arg(long)]
        no_price_lists: bool,
        /// Stop each device at its last PUBACK instead of waiting for sync receipts to cover every
        /// event it recorded (for a broker without the pipeline behind it).
        #[arg(long)]
        no_receipts: bool,
        /// A device re-sends what no receipt covers after this long without a receipt.
        #[arg(long, default_value_t = 5_000)]
        resend_after_ms: u64,
        /// Give up publishing after this long.
        #[arg(long, default_value_t = 600)]
        timeout_secs: u64,
        /// The finance export's folder: hold the late tills back until their store-days are
        /// exported there, then publish them (their events become adjustment lines). Omit when
        /// the run has no finance export (the late tills publish with the others).
        #[arg(long)]
        finance_exports: Option<PathBuf>,
    },
    /// Compare the pipeline's outputs with a run's ground truth; prints a pass/fail table.
    Check {
        #[arg(long, default_value = ".stack/sim/truth.json")]
        truth: PathBuf,
        #[command(flatten)]
        brokers: BrokersArg,
        #[command(flatten)]
        registry: RegistryArg,
        /// Projection database (sqlite://... or postgres://...); omit to skip the DB checks.
        #[arg(long)]
        db: Option<String>,
        /// Skip the Kafka checks.
        #[arg(long)]
        no_kafka: bool,
        /// The conflict detector's database (sqlite://... or postgres://...): check its verdicts
        /// per rule (after waiting for it to catch up when --wait-secs is set); omit when the run
        /// has no detector (its rows are n/a).
        #[arg(long)]
        conflicts_db: Option<String>,
        #[command(flatten)]
        mqtt: MqttArgs,
        /// The finance export's folder: read its files back with the independent reader (pyarrow)
        /// and check them (after waiting for every store-day's export when --wait-secs is set);
        /// omit when the run has no finance export (its rows are n/a).
        #[arg(long)]
        finance_exports: Option<PathBuf>,
        /// Skip the check of the price lists retained on the stores' MQTT catalog topics.
        #[arg(long)]
        no_mqtt: bool,
        #[arg(long, default_value_t = 20)]
        max_listed: usize,
        /// First wait for the pipeline to drain, for as long as it keeps moving but at most this
        /// many seconds (0 = check at once); a progress line every 10 s says which stage is behind.
        #[arg(long, default_value_t = 0)]
        wait_secs: u64,
        /// Stop waiting when no stage moved for this many seconds (the pipeline is stalled).
        #[arg(long, default_value_t = 120)]
        stall_secs: u64,
    },
}

/// Where the simulated cloud pricing service publishes (the downlink topic on Kafka).
#[derive(Args, Clone)]
struct CloudArgs {
    #[arg(
        long = "cloud-brokers",
        env = "TILLSTREAM_KAFKA_BROKERS",
        default_value = "127.0.0.1:19092"
    )]
    brokers: String,
    #[arg(
        long = "cloud-registry",
        env = "TILLSTREAM_REGISTRY_URL",
        default_value = "http://127.0.0.1:18081"
    )]
    registry: String,
    #[arg(long, default_value = "tillstream.catalog.downlink")]
    downlink_topic: String,
    /// Append-only history of every approved list (the conflict detector replays it); "" = none.
    #[arg(long, default_value = "tillstream.price-lists.history")]
    history_topic: String,
    /// Kafka idempotent producer (off for tansu, whose idempotence bookkeeping breaks on restart).
    #[arg(long, env = "TILLSTREAM_KAFKA_IDEMPOTENCE", default_value_t = false)]
    idempotence: bool,
}

/// The oracle's MQTT account (reads every store's catalog topic).
#[derive(Args, Clone)]
struct MqttArgs {
    #[arg(long = "mqtt-host", default_value = "127.0.0.1")]
    host: String,
    #[arg(
        long = "mqtt-port",
        env = "TILLSTREAM_MQTT_PORT",
        default_value_t = 11883
    )]
    port: u16,
    #[arg(
        long = "mqtt-user",
        env = "TILLSTREAM_MQTT_ADMIN_USER",
        default_value = "admin"
    )]
    user: String,
    #[arg(
        long = "mqtt-password",
        env = "TILLSTREAM_MQTT_ADMIN_PASSWORD",
        default_value = "admin-dev"
    )]
    password: String,
    /// The stack's PKI folder: TLS with `clients/<user>.crt|key` (empty: plaintext).
    #[arg(long = "mqtt-tls-dir", env = "TILLSTREAM_MQTT_TLS_DIR")]
    tls_dir: Option<PathBuf>,
}

/// An empty `TILLSTREAM_MQTT_TLS_DIR` (`scripts/stack env` without TLS) means none.
fn non_empty(p: Option<PathBuf>) -> Option<PathBuf> {
    p.filter(|p| !p.as_os_str().is_empty())
}

fn load_spec(a: &SpecArgs) -> anyhow::Result<FleetSpec> {
    let mut spec: FleetSpec = match &a.spec {
        Some(p) => toml::from_str(
            &std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?,
        )
        .with_context(|| format!("parsing {}", p.display()))?,
        None => FleetSpec::default(),
    };
    if let Some(v) = a.seed {
        spec.seed = v;
    }
    if let Some(v) = a.stores {
        spec.stores = v;
    }
    if let Some(v) = a.devices_per_store {
        spec.devices_per_store = v;
    }
    if let Some(v) = a.events {
        spec.events = v;
    }
    if let Some(v) = a.start_ms {
        spec.start_ms = Some(v);
    }
    Ok(spec)
}

fn write_plan(plan: &Plan, dir: &std::path::Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    std::fs::write(dir.join("truth.json"), serde_json::to_vec(&plan.truth)?)?;
    std::fs::write(dir.join("devices.csv"), plan.fleet_csv())?;
    std::fs::write(dir.join("stores.csv"), plan.stores_csv())?;
    Ok(())
}

fn summary(plan: &Plan) -> String {
    let t = &plan.truth;
    format!(
        "devices={} store_events={} health={} publishes={} (duplicates={} collisions={} poison={}) gaps={} oversold={} conflicts={}",
        plan.devices.len(),
        t.store_event_ids.len(),
        t.health_events,
        plan.publishes(),
        t.published.get("duplicate").copied().unwrap_or(0),
        t.published.get("collision").copied().unwrap_or(0),
        t.published.get("poison").copied().unwrap_or(0),
        t.gaps.len(),
        t.oversold.len(),
        t.conflicts.values().map(|m| m.len()).sum::<usize>()
    )
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tillstream_runtime::telemetry::init_tracing_with_default("sim", "warn");
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(run(cli)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {}", format!("{e:#}").replace('\n', " "));
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Plan(a) => {
            let plan = generate(&load_spec(&a)?);
            write_plan(&plan, &a.out_dir)?;
            println!("plan: {}", summary(&plan));
            println!(
                "wrote {}/truth.json, devices.csv and stores.csv",
                a.out_dir.display()
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Run {
            spec,
            mqtt_host,
            mqtt_port,
            device_password,
            mqtt_tls_dir,
            rate,
            offline_ms,
            cloud,
            no_price_lists,
            no_receipts,
            resend_after_ms,
            timeout_secs,
            finance_exports,
        } => {
            let mut fleet = load_spec(&spec)?;
            if fleet.start_ms.is_none() {
                fleet.start_ms = Some(tillstream_sim::plan::recent_start(
                    tillstream_runtime::clock::now_ms(),
                    fleet.days,
                ));
            }
            let mut plan = generate(&fleet);
            plan.truth.late_held_back = finance_exports.is_some();
            write_plan(&plan, &spec.out_dir)?;
            println!("plan: {}", summary(&plan));
            if !no_price_lists && !plan.price_lists.is_empty() {
                let registry = Registry::new(RegistryConfig {
                    url: cloud.registry,
                    auto_register: false,
                    ..Default::default()
                })?;
                let kafka = KafkaConfig {
                    brokers: cloud.brokers,
                    idempotence: cloud.idempotence,
                    ..Default::default()
                };
                if !cloud.history_topic.is_empty() {
                    publish_price_lists(
                        &plan,
                        &kafka,
                        &registry,
                        &cloud.history_topic,
                        PriceListTopic::History,
                    )
                    .await?;
                }
                let n = publish_price_lists(
                    &plan,
                    &kafka,
                    &registry,
                    &cloud.downlink_topic,
                    PriceListTopic::Downlink,
                )
                .await?;
                println!(
                    "cloud: {n} approved price lists for {} stores produced to {}",
                    plan.truth.price_lists.len(),
                    cloud.downlink_topic
                );
            }
            let cfg = publish::PublishConfig {
                host: mqtt_host,
                port: mqtt_port,
                tls_dir: non_empty(mqtt_tls_dir),
                device_password,
                rate,
                offline_for: Duration::from_millis(offline_ms),
                await_receipts: !no_receipts,
                resend_after: Duration::from_millis(resend_after_ms),
                timeout: Duration::from_secs(timeout_secs),
                ..Default::default()
            };
            let ticker = progress_ticker(cfg.acked_progress.clone(), plan.publishes() as u64);
            let r = match &finance_exports {
                None => publish::publish(&plan, &cfg).await?,
                Some(dir) => {
                    println!(
                        "holding the late till(s) back until {} store-day(s) are exported to {}",
                        plan.late_store_days().len(),
                        dir.display()
                    );
                    let wait = Duration::from_secs(timeout_secs);
                    late::publish_late_after_export(&plan, &cfg, dir, wait).await?
                }
            };
            ticker.abort();
            println!(
                "published {} messages ({} acknowledged, {} re-sent after {} reconnects) in {:.1}s = {:.0} msg/s",
                r.publishes,
                r.acked,
                r.resent,
                r.reconnects,
                r.elapsed.as_secs_f64(),
                r.rate()
            );
            if !no_receipts {
                println!(
                    "receipts: {} applied; {} events re-sent as listed missing, {} re-sent uncovered; every recorded event covered",
                    r.receipts, r.resent_missing, r.resent_overdue
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Check {
            truth,
            brokers,
            registry,
            db,
            no_kafka,
            conflicts_db,
            finance_exports,
            mqtt,
            no_mqtt,
            max_listed,
            wait_secs,
            stall_secs,
        } => {
            let truth: Truth = serde_json::from_slice(
                &std::fs::read(&truth).with_context(|| format!("reading {}", truth.display()))?,
            )?;
            if wait_secs > 0 && !no_kafka {
                let cfg = brokers.kafka_config();
                let waited = std::time::Instant::now();
                match oracle::wait_drained(
                    &cfg,
                    &oracle::Topics::default(),
                    db.as_deref(),
                    &truth,
                    oracle::DrainWait::WhileMoving {
                        stall: Duration::from_secs(stall_secs),
                        cap: Duration::from_secs(wait_secs),
                        report_every: Duration::from_secs(10),
                    },
                    Duration::from_secs(3),
                )
                .await
                {
                    Ok(p) => println!(
                        "pipeline drained in {:.0} s: {} raw records, {} deduplicated, {} projected, {} dead letters",
                        waited.elapsed().as_secs_f64(),
                        p.raw,
                        p.deduped,
                        p.projected,
                        p.dead_letters
                    ),
                    Err(p) => println!(
                        "pipeline not drained after {:.0} s (at most {wait_secs} s, or {stall_secs} s without progress); behind: {}; checking anyway",
                        waited.elapsed().as_secs_f64(),
                        p.behind(&truth)
                    ),
                }
            }
            let (kafka, conflicts) = if no_kafka {
                (None, None)
            } else {
                let registry = Registry::new(registry.read_only())?;
                let cfg = brokers.kafka_config();
                let topics = oracle::Topics::default();
                let conflicts = match &conflicts_db {
                    Some(url) => {
                        if wait_secs > 0 {
                            let wait = Duration::from_secs(wait_secs);
                            let settle = Duration::from_secs(3);
                            match oracle::wait_conflicts_drained(&cfg, &topics, url, wait, settle)
                                .await
                            {
                                Ok(p) => println!("conflict detector caught up: {p:?}"),
                                Err(p) => println!(
                                    "conflict detector still busy after {wait_secs}s: {p:?}; checking anyway"
                                ),
                            }
                        }
                        let mut c = oracle::observe_conflicts(&cfg, &registry, &topics).await?;
                        c.queued_collisions = Some(oracle::observe_conflict_queue(url).await?);
                        Some(c)
                    }
                    None => None,
                };
                (
                    Some(oracle::observe_kafka(&cfg, &registry, &topics).await?),
                    conflicts,
                )
            };
            let db = match db {
                Some(url) => Some(oracle::observe_db(&url, &oracle::DbQueries::default()).await?),
                None => None,
            };
            let catalog = if no_mqtt {
                None
            } else {
                let access = oracle::MqttAccess {
                    host: mqtt.host,
                    port: mqtt.port,
                    user: mqtt.user,
                    password: mqtt.password,
                    tls_dir: non_empty(mqtt.tls_dir),
                };
                let wait = Duration::from_secs(wait_secs.clamp(10, 120));
                Some(oracle::observe_catalog(&access, &truth.price_lists, wait).await?)
            };
            let finance = match &finance_exports {
                Some(dir) => {
                    if wait_secs > 0 {
                        let wait = Duration::from_secs(wait_secs);
                        let settle = Duration::from_secs(5);
                        match oracle::wait_finance_exported(dir, &truth, wait, settle).await {
                            Ok(p) => println!("finance export caught up: {p}"),
                            Err(p) => println!(
                                "finance export still busy after {wait_secs}s: {p}; checking anyway"
                            ),
                        }
                    }
                    let repo = std::env::current_dir()?;
                    let access = oracle::FinanceAccess::new(dir, &repo);
                    Some(oracle::observe_finance(&access).await?)
                }
                None => None,
            };
            let observed = oracle::Observed {
                kafka: kafka.as_ref(),
                db: db.as_ref(),
                catalog: catalog.as_ref(),
                conflicts: conflicts.as_ref(),
                finance: finance.as_ref(),
            };
            let report = oracle::compare(&truth, observed);
            print!("{}", report.render(max_listed));
            Ok(if report.passed() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(3)
            })
        }
    }
}

/// Prints how far the fleet's publishing has come every 10 s while it runs (a large run would
/// otherwise be minutes of silence): PUBACKs of planned publishes so far, of how many, and the rate
/// since the previous line. Publishing ends when receipts cover every event, so the count stops
/// at the total while the pipeline catches up.
fn progress_ticker(
    acked: std::sync::Arc<std::sync::atomic::AtomicU64>,
    planned: u64,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let every = Duration::from_secs(10);
        let mut before = 0u64;
        loop {
            tokio::time::sleep(every).await;
            let now = acked.load(std::sync::atomic::Ordering::Relaxed);
            println!(
                "  publishing: {now}/{planned} acknowledged by the broker ({:.0}/s){}",
                (now - before.min(now)) as f64 / every.as_secs_f64(),
                if now >= planned {
                    "; waiting for sync receipts to cover every event"
                } else {
                    ""
                }
            );
            before = now;
        }
    })
}
