//! The ops HTTP surface every service exposes: `/metrics` (Prometheus text), `/healthz` (liveness:
//! the process runs and no component reported itself broken) and `/readyz` (every registered
//! readiness check passes). Owns no business data; no delivery guarantee.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use crate::config::OpsConfig;

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
struct Check {
    ready: bool,
    live: bool,
    detail: String,
}

/// Readiness and liveness state shared between a service's components and its ops endpoint.
#[derive(Clone, Default)]
pub struct Health {
    checks: Arc<Mutex<BTreeMap<String, Check>>>,
}

impl std::fmt::Debug for Health {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Health").finish_non_exhaustive()
    }
}

impl Health {
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers (or updates) a component: not ready until it says so.
    pub fn register(&self, name: &str) {
        self.set(name, false, true, "starting");
    }

    pub fn ready(&self, name: &str, detail: impl Into<String>) {
        self.set(name, true, true, detail);
    }

    pub fn not_ready(&self, name: &str, detail: impl Into<String>) {
        self.set(name, false, true, detail);
    }

    /// Marks a component broken: `/healthz` fails until it recovers (an orchestrator restarts us).
    pub fn broken(&self, name: &str, detail: impl Into<String>) {
        self.set(name, false, false, detail);
    }

    fn set(&self, name: &str, ready: bool, live: bool, detail: impl Into<String>) {
        let mut checks = self.checks.lock().unwrap_or_else(|p| p.into_inner());
        checks.insert(
            name.to_string(),
            Check {
                ready,
                live,
                detail: detail.into(),
            },
        );
    }

    pub fn is_ready(&self) -> bool {
        let checks = self.checks.lock().unwrap_or_else(|p| p.into_inner());
        !checks.is_empty() && checks.values().all(|c| c.ready)
    }

    pub fn is_live(&self) -> bool {
        let checks = self.checks.lock().unwrap_or_else(|p| p.into_inner());
        checks.values().all(|c| c.live)
    }

    /// The names of the registered checks.
    pub fn checks(&self) -> Vec<String> {
        let checks = self.checks.lock().unwrap_or_else(|p| p.into_inner());
        checks.keys().cloned().collect()
    }

    fn snapshot(&self) -> BTreeMap<String, Check> {
        self.checks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

#[derive(Clone)]
struct OpsState {
    health: Health,
    metrics: metrics_exporter_prometheus::PrometheusHandle,
}

/// Binds the ops listener and serves it until `token` is cancelled. Returns the bound address
/// (useful when the config asks for port 0).
pub async fn serve(
    config: &OpsConfig,
    health: Health,
    token: CancellationToken,
) -> std::io::Result<SocketAddr> {
    let state = OpsState {
        health,
        metrics: crate::telemetry::metrics_handle(),
    };
    let app = Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .with_state(state);
    let listener = tokio::net::TcpListener::bind(config.listen).await?;
    let addr = listener.local_addr()?;
    tracing::info!(%addr, "ops endpoint listening (/metrics /healthz /readyz)");
    tokio::spawn(async move {
        let res = axum::serve(listener, app)
            .with_graceful_shutdown(async move { token.cancelled().await })
            .await;
        if let Err(e) = res {
            tracing::error!(error = %e, "ops endpoint stopped");
        }
    });
    Ok(addr)
}

async fn metrics(State(state): State<OpsState>) -> impl IntoResponse {
    (
        [("content-type", "text/plain; version=0.0.4")],
        state.metrics.render(),
    )
}

async fn healthz(State(state): State<OpsState>) -> impl IntoResponse {
    let code = if state.health.is_live() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, axum::Json(state.health.snapshot()))
}

async fn readyz(State(state): State<OpsState>) -> impl IntoResponse {
    let code = if state.health.is_ready() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, axum::Json(state.health.snapshot()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readiness_needs_every_check() {
        let h = Health::new();
        assert!(!h.is_ready(), "no checks registered yet");
        h.register("kafka");
        h.register("mqtt");
        h.ready("kafka", "assigned");
        assert!(!h.is_ready());
        h.ready("mqtt", "connected");
        assert!(h.is_ready());
        assert!(h.is_live());
        h.broken("mqtt", "auth failed");
        assert!(!h.is_live());
        assert!(!h.is_ready());
    }

    #[tokio::test]
    async fn endpoints_answer() {
        let h = Health::new();
        h.register("c");
        let token = CancellationToken::new();
        let addr = serve(&OpsConfig::default(), h.clone(), token.clone())
            .await
            .unwrap();
        metrics::counter!("tillstream_runtime_test_total").increment(3);
        let base = format!("http://{addr}");
        let ready = reqwest::get(format!("{base}/readyz")).await.unwrap();
        assert_eq!(ready.status(), 503);
        h.ready("c", "ok");
        let ready = reqwest::get(format!("{base}/readyz")).await.unwrap();
        assert_eq!(ready.status(), 200);
        let live = reqwest::get(format!("{base}/healthz")).await.unwrap();
        assert_eq!(live.status(), 200);
        let text = reqwest::get(format!("{base}/metrics"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert!(text.contains("tillstream_runtime_test_total 3"), "{text}");
        token.cancel();
    }
}
