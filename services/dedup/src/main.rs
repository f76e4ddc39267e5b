//! `tillstream-dedup`: parses flags, loads config, and runs the dedup service until SIGTERM.
//! Owns nothing else; the guarantees are the library's.

use anyhow::Context;
use clap::Parser;
use tillstream_dedup::Config;

/// Deduplicates raw store events and accounts for per-device sequence gaps.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    /// Config file and printing; environment: TILLSTREAM_DEDUP__<SECTION>__<KEY>.
    #[command(flatten)]
    config: tillstream_runtime::config::ConfigArgs,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    tillstream_runtime::telemetry::init_tracing(tillstream_dedup::SERVICE);
    let Some(config): Option<Config> = args
        .config
        .load(tillstream_dedup::SERVICE)
        .context("loading configuration")?
    else {
        return Ok(());
    };
    let token = tillstream_runtime::shutdown::signal_token();
    tillstream_dedup::run(config, token).await?;
    Ok(())
}
