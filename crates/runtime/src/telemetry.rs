//! Logging (tracing) and the process-wide Prometheus recorder. Owns no data; no delivery guarantee.
//!
//! `TILLSTREAM_LOG` sets the filter (default `info`), `TILLSTREAM_LOG_FORMAT=json` switches to JSON
//! lines for log shippers.

use std::sync::OnceLock;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tracing_subscriber::EnvFilter;

/// Latency buckets (seconds) used for every `*_seconds` histogram.
const SECONDS_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    60.0, 300.0, 900.0, 3600.0, 21600.0, 86400.0,
];
/// Size buckets used for every `*_events` / `*_bytes` histogram (batch sizes, payload sizes).
const SIZE_BUCKETS: &[f64] = &[
    1.0, 10.0, 50.0, 100.0, 500.0, 1000.0, 5000.0, 10000.0, 50000.0, 100000.0, 1e6,
];

/// Installs the tracing subscriber once; later calls are no-ops (tests call `run` many times).
pub fn init_tracing(service: &str) {
    init_tracing_with_default(service, "info,rdkafka=warn,rumqttc=warn,sqlx=warn");
}

/// Like [`init_tracing`], with the filter used when `TILLSTREAM_LOG` is unset (CLIs use `warn`).
pub fn init_tracing_with_default(service: &str, default_filter: &str) {
    static ONCE: OnceLock<()> = OnceLock::new();
    ONCE.get_or_init(|| {
        let filter = EnvFilter::try_from_env("TILLSTREAM_LOG")
            .unwrap_or_else(|_| EnvFilter::new(default_filter));
        let json = std::env::var("TILLSTREAM_LOG_FORMAT").is_ok_and(|v| v == "json");
        let builder = tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(std::io::stderr);
        let res = if json {
            builder.json().flatten_event(true).try_init()
        } else {
            builder.compact().try_init()
        };
        if res.is_ok() {
            tracing::info!(service, "telemetry started");
        }
    });
}

/// The process-wide Prometheus handle; installs the recorder on first use.
pub fn metrics_handle() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let builder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), SECONDS_BUCKETS)
                .and_then(|b| {
                    b.set_buckets_for_metric(Matcher::Suffix("_events".into()), SIZE_BUCKETS)
                })
                .and_then(|b| {
                    b.set_buckets_for_metric(Matcher::Suffix("_bytes".into()), SIZE_BUCKETS)
                })
                .expect("static bucket lists are non-empty");
            let recorder = builder.build_recorder();
            let handle = recorder.handle();
            // Another recorder may already be installed (e.g. by a test harness): keep ours usable.
            let _ = metrics::set_global_recorder(recorder);
            handle
        })
        .clone()
}
