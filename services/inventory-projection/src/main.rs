//! `tillstream-inventory-projection`: the live projection (default), `rebuild`, `dump`,
//! `reorder-points` and `migrate`. Parses flags, loads config, starts telemetry; the guarantees are
//! the library's.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use tillstream_inventory_projection::rebuild::{RebuildOptions, Verdict};
use tillstream_inventory_projection::{Color, Config, Db, SERVICE, reorder_points};

/// Projects the deduplicated store-event stream into SQL, exactly once.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    /// Config file and printing; environment: TILLSTREAM_INVENTORY_PROJECTION__<SECTION>__<KEY>,
    /// TILLSTREAM_PG_URL sets database.url.
    #[command(flatten)]
    config: tillstream_runtime::config::ConfigArgs,
    #[command(subcommand)]
    command: Option<Cmd>,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Run the live projection (the default).
    Run,
    /// Replay the topic from offset 0 into the inactive table set, prove it equals the live set,
    /// and switch the analyst views to it.
    Rebuild {
        /// Build and compare only; leave the views on the live set.
        #[arg(long)]
        no_switch: bool,
        /// Switch even if the rebuilt set differs (after changing the projection function).
        #[arg(long)]
        force: bool,
        /// Continue an interrupted rebuild instead of starting the inactive set afresh.
        #[arg(long)]
        resume: bool,
        /// No progress bar.
        #[arg(long)]
        quiet: bool,
    },
    /// Print the canonical dump of a table set (default: the active one).
    Dump {
        #[arg(long)]
        color: Option<String>,
        /// Print only an xxh3-128 hash of the dump.
        #[arg(long)]
        hash: bool,
    },
    /// Upsert reorder points from a CSV file: store_id,sku,reorder_point[,reorder_qty]
    /// (store_id '*' = default for every store).
    ReorderPoints { file: PathBuf },
    /// Create or upgrade the schema and the views, then exit.
    Migrate,
}

#[tokio::main(flavor = "multi_thread")]
async fn main() -> ExitCode {
    match real_main().await {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn real_main() -> anyhow::Result<ExitCode> {
    let args = Args::parse();
    let cmd = args.command.unwrap_or(Cmd::Run);
    if matches!(cmd, Cmd::Run) {
        tillstream_runtime::telemetry::init_tracing(SERVICE);
    } else {
        tillstream_runtime::telemetry::init_tracing_with_default(SERVICE, "warn");
    }
    let Some(cfg): Option<Config> = args.config.load(SERVICE).context("loading configuration")?
    else {
        return Ok(ExitCode::SUCCESS);
    };
    let token = tillstream_runtime::shutdown::signal_token();
    match cmd {
        Cmd::Run => {
            tillstream_inventory_projection::run(cfg, token).await?;
        }
        Cmd::Rebuild {
            no_switch,
            force,
            resume,
            quiet,
        } => {
            let opts = RebuildOptions {
                switch: !no_switch,
                force,
                resume,
                progress: !quiet,
                ..RebuildOptions::default()
            };
            let r = tillstream_inventory_projection::rebuild::rebuild(&cfg, &opts, &token).await?;
            let verdict = match &r.verdict {
                Verdict::Equal => "equal to the live set (canonical dumps byte-identical)".into(),
                Verdict::NoLiveSet => "no live set to compare with".into(),
                Verdict::Forced => "not compared (--force)".into(),
                Verdict::Differs { live, rebuilt } => {
                    format!("DIFFERS from the live set:\n  live:    {live}\n  rebuilt: {rebuilt}")
                }
            };
            println!(
                "rebuilt {} from {} records ({} events) in {:.1}s: {verdict}; {}",
                r.color,
                r.records,
                r.events,
                r.elapsed.as_secs_f64(),
                if r.switched {
                    format!("views now read {}", r.color)
                } else {
                    "views unchanged".into()
                }
            );
            if matches!(r.verdict, Verdict::Differs { .. }) {
                return Ok(ExitCode::from(2));
            }
        }
        Cmd::Dump { color, hash } => {
            let db = Db::connect_retrying(&cfg.database, &token)
                .await?
                .context("cancelled")?;
            let color = match color {
                Some(c) => Color::parse(&c).context("--color is blue or green")?,
                None => db.active_color().await?,
            };
            let dump = db.dump(color).await?;
            if hash {
                println!("{:032x}", xxhash_rust::xxh3::xxh3_128(dump.as_bytes()));
            } else {
                print!("{dump}");
            }
        }
        Cmd::ReorderPoints { file } => {
            let db = Db::connect_retrying(&cfg.database, &token)
                .await?
                .context("cancelled")?;
            let text = std::fs::read_to_string(&file)
                .with_context(|| format!("reading {}", file.display()))?;
            let rows = reorder_points::parse(&text)
                .with_context(|| format!("reading {}", file.display()))?;
            let n = db.upsert_reorder_points(&rows).await?;
            println!("{n} reorder points upserted");
        }
        Cmd::Migrate => {
            let db = Db::connect_retrying(&cfg.database, &token)
                .await?
                .context("cancelled")?;
            let color = db.ensure_views().await?;
            println!("schema up to date; views read {color}");
        }
    }
    Ok(ExitCode::SUCCESS)
}
