//! `tillstream-schema-registry`: parses flags, loads config, and runs the registry until SIGTERM.
//! Owns nothing else; the guarantees are the library's.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;
use tillstream_schema_registry::Config;

/// A small Confluent-compatible schema registry (Avro) for development and tests.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    /// TOML config file (see `Config`); environment: TILLSTREAM_SCHEMA_REGISTRY__<KEY>.
    #[arg(long)]
    config: Option<PathBuf>,
    /// API listen address (overrides the config; default 127.0.0.1:18081).
    #[arg(long)]
    listen: Option<SocketAddr>,
    /// Data directory (overrides the config; default data/schema-registry).
    #[arg(long)]
    data_dir: Option<PathBuf>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    tillstream_runtime::telemetry::init_tracing("schema-registry");
    let mut config: Config =
        tillstream_runtime::config::load("schema-registry", args.config.as_deref())
            .context("loading configuration")?;
    if let Some(listen) = args.listen {
        config.listen = listen;
    }
    if let Some(dir) = args.data_dir {
        config.data_dir = dir;
    }
    let token = tillstream_runtime::shutdown::signal_token();
    tillstream_schema_registry::run(config, token).await?;
    Ok(())
}
