//! `tillstream-store-bridge`: parses flags, loads config, and runs the bridge until SIGTERM.
//! Owns nothing else; the guarantees are the library's.

use anyhow::Context;
use clap::Parser;
use tillstream_store_bridge::Config;

/// Store bridge: MQTT (store devices) to Kafka through a durable outbox, and the catalog downlink.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    /// Config file and printing; environment: TILLSTREAM_STORE_BRIDGE__<SECTION>__<KEY>.
    #[command(flatten)]
    config: tillstream_runtime::config::ConfigArgs,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    tillstream_runtime::telemetry::init_tracing("store-bridge");
    let Some(config): Option<Config> = args
        .config
        .load("store-bridge")
        .context("loading configuration")?
    else {
        return Ok(());
    };
    let token = tillstream_runtime::shutdown::signal_token();
    tillstream_store_bridge::run(config, token).await?;
    Ok(())
}
