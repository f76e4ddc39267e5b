//! `tillstream-dedup`: parses flags, loads config, and runs the dedup service until SIGTERM.
//! Owns nothing else; the guarantees are the library's.

use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;
use tillstream_dedup::Config;

/// Deduplicates raw store events and accounts for per-device sequence gaps.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    /// TOML config file (see `Config`); environment: TILLSTREAM_DEDUP__<SECTION>__<KEY>.
    #[arg(long)]
    config: Option<PathBuf>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    tillstream_runtime::telemetry::init_tracing(tillstream_dedup::SERVICE);
    let config: Config =
        tillstream_runtime::config::load(tillstream_dedup::SERVICE, args.config.as_deref())
            .context("loading configuration")?;
    let token = tillstream_runtime::shutdown::signal_token();
    tillstream_dedup::run(config, token).await?;
    Ok(())
}
