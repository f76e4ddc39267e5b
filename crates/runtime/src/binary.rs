//! The `main` of a service binary, written once: every long-running service starts the same way
//! (flags, tracing, config from file + environment or `--print-config`, SIGTERM as a cancellation
//! token, the library's `run`), so its `main.rs` is one [`service_main!`] call and the
//! guarantees stay in the library.

/// Writes a service binary's `Args` (the runtime's [`ConfigArgs`](crate::config::ConfigArgs):
/// `--config`, `--print-config`, `--config-format`) and its `main`.
///
/// `$lib` is the service's library crate; it must export `SERVICE` (the name config, metrics and
/// tracing use), `Config` and `run(Config, CancellationToken)`. The doc comment given before it
/// becomes the binary's `--help` text. The calling crate depends on `anyhow`, `clap` and `tokio`.
///
/// ```ignore
/// tillstream_runtime::service_main! {
///     /// Deduplicates raw store events and accounts for per-device sequence gaps.
///     tillstream_dedup
/// }
/// ```
#[macro_export]
macro_rules! service_main {
    ($(#[doc = $doc:literal])* $lib:ident) => {
        $(#[doc = $doc])*
        #[derive(Debug, ::clap::Parser)]
        #[command(version, about)]
        struct Args {
            /// Config file and printing; environment: TILLSTREAM_<SERVICE>__<SECTION>__<KEY> (the
            /// service's README lists them).
            #[command(flatten)]
            config: $crate::config::ConfigArgs,
        }

        #[::tokio::main]
        async fn main() -> ::std::process::ExitCode {
            // One line an operator reads (a bad config value, say), not a backtrace.
            match service_main().await {
                Ok(()) => ::std::process::ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("error: {e:#}");
                    ::std::process::ExitCode::FAILURE
                }
            }
        }

        async fn service_main() -> ::anyhow::Result<()> {
            use ::anyhow::Context as _;
            let args = <Args as ::clap::Parser>::parse();
            $crate::telemetry::init_tracing($lib::SERVICE);
            let Some(config): Option<$lib::Config> = args
                .config
                .load($lib::SERVICE)
                .context("loading configuration")?
            else {
                return Ok(());
            };
            let token = $crate::shutdown::signal_token();
            $lib::run(config, token).await?;
            Ok(())
        }
    };
}
