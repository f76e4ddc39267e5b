//! `tillstream-store-bridge`: parses flags, loads config, and runs the bridge until SIGTERM.
//! Owns nothing else; the guarantees are the library's.

use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;
use tillstream_store_bridge::Config;

/// Store bridge: MQTT (store devices) to Kafka through a durable outbox, and the catalog downlink.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    /// TOML config file (see `Config`); environment: TILLSTREAM_STORE_BRIDGE__<SECTION>__<KEY>.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Print the effective configuration as TOML and exit.
    #[arg(long)]
    print_config: bool,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    tillstream_runtime::telemetry::init_tracing("store-bridge");
    let config: Config = tillstream_runtime::config::load("store-bridge", args.config.as_deref())
        .context("loading configuration")?;
    if args.print_config {
        println!("{}", toml::to_string_pretty(&config)?);
        return Ok(());
    }
    let token = tillstream_runtime::shutdown::signal_token();
    tillstream_store_bridge::run(config, token).await?;
    Ok(())
}
