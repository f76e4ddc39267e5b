//! `tillstream-conflict-detector`: parses flags, loads config, and runs the conflict detector until
//! SIGTERM. Owns nothing else; the guarantees are the library's.

use anyhow::Context;
use clap::Parser;
use tillstream_conflict_detector::Config;

/// Evaluates the retail rules in event time, writes conflicts and compensations, serves the review
/// queue.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    /// Config file and printing; environment: TILLSTREAM_CONFLICT_DETECTOR__<SECTION>__<KEY>.
    #[command(flatten)]
    config: tillstream_runtime::config::ConfigArgs,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    tillstream_runtime::telemetry::init_tracing(tillstream_conflict_detector::SERVICE);
    let Some(config): Option<Config> = args
        .config
        .load(tillstream_conflict_detector::SERVICE)
        .context("loading configuration")?
    else {
        return Ok(());
    };
    let token = tillstream_runtime::shutdown::signal_token();
    tillstream_conflict_detector::run(config, token).await?;
    Ok(())
}
