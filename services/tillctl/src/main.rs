//! tillctl entry point: parses arguments (`args.rs`), runs one command, prints its result. Errors
//! are one line on stderr with a non-zero exit code, never a panic.

use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use tillctl::{
    conflicts, dead_letters, finance, fleet, inspect, outbox, prices, schemas, strimzi, top,
    topology,
};
use tillstream_contracts::{Registry, RegistryConfig};

mod args;

use args::*;

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

/// `tillctl fleet ...`: every command first revokes what is due, and the broker is reloaded when
/// the revocation list changed.
fn run_fleet(args: FleetArgs) -> anyhow::Result<ExitCode> {
    use fleet::{Pki, Validity};
    let validity = Validity {
        cert_days: args.days,
        ..Validity::default()
    };
    let print_issued = |name: &str, issued: &fleet::ca::Issued, out: Option<&std::path::Path>| {
        match out {
            Some(dir) => {
                fleet::write_credentials(&args.pki, dir, name, issued)?;
                println!(
                    "{name}: certificate {} (valid until {}) and key written to {}",
                    issued.serial,
                    issued.not_after,
                    dir.display()
                );
            }
            None => {
                // The one time this key is shown: it is stored nowhere.
                println!("# {name}: certificate serial {}", issued.serial);
                print!("{}{}", issued.cert_pem, issued.key_pem);
            }
        }
        anyhow::Ok(())
    };
    let acl_levels = if args.store_level_topics {
        fleet::acl::TopicLevels::DeviceAndStore
    } else {
        fleet::acl::TopicLevels::Device
    };
    if let FleetCmd::Acl { fleet } = &args.command {
        let acl_file = args.broker_acl.as_deref().ok_or_else(|| {
            anyhow::anyhow!("fleet acl needs --broker-acl (TILLSTREAM_MQTT_ACL_FILE)")
        })?;
        if fleet::write_acl(acl_file, &fleet.path, acl_levels)? {
            fleet::reload_broker(args.broker_pid_file.as_deref())?;
        }
        return Ok(ExitCode::SUCCESS);
    }
    // Where a new key is to be written must exist before it is issued: a key lost after its
    // certificate was registered would lock the till out when the old one's grace ends.
    if let FleetCmd::Add { out: Some(dir), .. } | FleetCmd::Rotate { out: Some(dir), .. } =
        &args.command
    {
        std::fs::create_dir_all(dir)
            .map_err(|e| anyhow::anyhow!("--out {}: {e}", dir.display()))?;
    }
    let mut pki = match &args.command {
        FleetCmd::Init { broker_names } => Pki::init(&args.pki, broker_names, validity)?,
        _ => Pki::open(&args.pki)?,
    };
    let due = pki.retire_due();
    if due > 0 {
        eprintln!("revoked {due} certificate(s) whose grace period ended");
    }
    // The fleet file the broker's ACL follows, when this command changed it (or syncs it).
    let mut acl_from: Option<std::path::PathBuf> = None;
    match &args.command {
        FleetCmd::Init { .. } => println!("PKI ready in {}", args.pki.display()),
        FleetCmd::Sync { fleet, services } => {
            let issued = pki.sync_kept(fleet.as_deref(), services, validity)?;
            println!(
                "issued {} certificate(s) kept in {}/clients",
                issued.len(),
                args.pki.display()
            );
        }
        FleetCmd::Add {
            device,
            store,
            fleet,
            out,
        } => {
            let issued = fleet::add(&mut pki, &fleet.path, device, store, validity.cert_days)?;
            acl_from = Some(fleet.path.clone());
            eprintln!("{device} added to {} (store {store})", fleet.path.display());
            print_issued(device, &issued, out.as_deref())?;
        }
        FleetCmd::Rotate { device, grace, out } => {
            let grace_s = dead_letters::parse_age_ms(grace)
                .map_err(|e| anyhow::anyhow!("--grace {grace:?}: {e}"))?
                / 1000;
            let issued = fleet::rotate(&mut pki, device, grace_s, validity.cert_days)?;
            eprintln!("{device}: the previous certificate(s) stay valid for {grace}");
            print_issued(device, &issued, out.as_deref())?;
        }
        FleetCmd::Revoke {
            device,
            serial,
            fleet,
        } => {
            let serial = serial
                .as_deref()
                .map(|s| {
                    fleet::ca::Serial::parse(s)
                        .ok_or_else(|| anyhow::anyhow!("--serial {s:?}: hex"))
                })
                .transpose()?;
            let r = fleet::revoke(&mut pki, Some(&fleet.path), device, serial)?;
            acl_from = Some(fleet.path.clone());
            println!(
                "{device}: {} certificate(s) revoked{}",
                r.certificates,
                if r.removed_from_fleet {
                    ", removed from the fleet file"
                } else {
                    ""
                }
            );
        }
        FleetCmd::Retire => println!("{due} certificate(s) revoked"),
        FleetCmd::Acl { .. } => unreachable!("handled before the PKI is opened"),
        FleetCmd::List => {
            println!(
                "{:<16} {:<24} {:<8} {:>12} {:>12}  STATE",
                "SERIAL", "NAME", "ROLE", "ISSUED", "NOT_AFTER"
            );
            for e in &pki.register().entries {
                println!(
                    "{:<16} {:<24} {:<8} {:>12} {:>12}  {:?}",
                    e.serial.to_string(),
                    e.name,
                    e.role.as_str(),
                    e.issued_at,
                    e.not_after,
                    e.state
                );
            }
        }
    }
    let mut changed = Vec::new();
    pki.save()?;
    if pki.crl_changed() {
        changed.push("revocation list");
    }
    if let (Some(acl_file), Some(fleet_file)) = (&args.broker_acl, &acl_from)
        && fleet::write_acl(acl_file, fleet_file, acl_levels)?
    {
        changed.push("ACL");
    }
    if !changed.is_empty() {
        let what = changed.join(" and ");
        match fleet::reload_broker(args.broker_pid_file.as_deref())? {
            Some(pid) => eprintln!("{what} updated; broker (pid {pid}) reloaded"),
            None => {
                eprintln!("{what} updated: reload the broker (SIGHUP) or pass --broker-pid-file")
            }
        }
    }
    Ok(ExitCode::SUCCESS)
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
            let now = tillstream_runtime::clock::now_ms();
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
                        registry.clone(),
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
        Command::Fleet(args) => run_fleet(args),
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
