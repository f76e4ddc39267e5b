//! `tillstream-finance-export`: parses flags, loads config, and runs the finance export until
//! SIGTERM. Owns nothing else; the guarantees are the library's.

use anyhow::Context;
use clap::Parser;
use tillstream_finance_export::Config;

/// Books the store-event stream into a double-entry ledger and exports immutable day files.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    /// Config file and printing; environment: TILLSTREAM_FINANCE_EXPORT__<SECTION>__<KEY>.
    #[command(flatten)]
    config: tillstream_runtime::config::ConfigArgs,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    tillstream_runtime::telemetry::init_tracing(tillstream_finance_export::SERVICE);
    let Some(config): Option<Config> = args
        .config
        .load(tillstream_finance_export::SERVICE)
        .context("loading configuration")?
    else {
        return Ok(());
    };
    let token = tillstream_runtime::shutdown::signal_token();
    tillstream_finance_export::run(config, token).await?;
    Ok(())
}
