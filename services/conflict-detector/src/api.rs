//! The review queue's HTTP API (JSON): list open conflicts by store / rule / severity / age, show
//! one with its evidence, compensations and audit trail, resolve one. Every request must carry
//! `Authorization: Bearer <api.token>`; without a configured token the API is not served.
//!
//! Delivery guarantee: a resolution is one database transaction (status, audit row, compensations,
//! outbox records); the publisher sends its `ConflictResolved` and compensations afterwards.
//! Resolving twice is a no-op (the first resolution is returned); resolving a superseded conflict
//! is refused (409) with the reason.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::{Path, Query, Request, State};
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::{Deserialize, Serialize};
use tillstream_runtime::CancellationToken;
use tokio::sync::Notify;

use crate::config::ApiConfig;
use crate::core::records::{self, ReviewAction};
use crate::db::{ConflictDetail, Db, Filter, Resolution, status};
use crate::metrics as m;
use crate::output::Encoder;

#[derive(Clone)]
struct ApiState {
    db: Db,
    encoder: Encoder,
    token: Arc<str>,
    publish: Arc<Notify>,
}

/// What `POST /conflicts/{id}/resolve` takes.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ResolveRequest {
    /// accept (the rule's outcome stands) or reject (its compensations are reversed).
    pub action: String,
    pub who: String,
    pub why: String,
}

/// What a resolve answers.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ResolveResponse {
    /// resolved | already-resolved
    pub outcome: String,
    pub message: String,
    pub conflict: ConflictDetail,
}

fn error(code: StatusCode, message: impl Into<String>) -> Response {
    (
        code,
        axum::Json(serde_json::json!({"error": message.into()})),
    )
        .into_response()
}

/// Constant-time comparison of the presented token.
fn token_matches(presented: &str, expected: &str) -> bool {
    let (a, b) = (presented.as_bytes(), expected.as_bytes());
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

async fn auth(State(st): State<ApiState>, req: Request, next: Next) -> Response {
    let presented = req
        .headers()
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    match presented {
        Some(t) if token_matches(t, &st.token) => next.run(req).await,
        Some(_) => error(StatusCode::UNAUTHORIZED, "wrong token"),
        None => error(StatusCode::UNAUTHORIZED, "missing bearer token"),
    }
}

async fn list(State(st): State<ApiState>, Query(f): Query<Filter>) -> Response {
    match st.db.list(&f, tillstream_runtime::clock::now_ms()).await {
        Ok(rows) => axum::Json(rows).into_response(),
        Err(e) => error(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
    }
}

async fn show(State(st): State<ApiState>, Path(id): Path<String>) -> Response {
    match st.db.get(&id).await {
        Ok(Some(d)) => axum::Json(d).into_response(),
        Ok(None) => error(StatusCode::NOT_FOUND, format!("no conflict {id}")),
        Err(e) => error(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
    }
}

async fn resolve(
    State(st): State<ApiState>,
    Path(id): Path<String>,
    axum::Json(req): axum::Json<ResolveRequest>,
) -> Response {
    let Some(action) = ReviewAction::parse(&req.action) else {
        return error(
            StatusCode::BAD_REQUEST,
            format!("action {:?}: use accept or reject", req.action),
        );
    };
    if req.who.trim().is_empty() || req.why.trim().is_empty() {
        return error(StatusCode::BAD_REQUEST, "who and why are required");
    }
    match resolve_in_tx(&st, &id, action, &req).await {
        Ok(r) => r,
        Err(e) => error(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
    }
}

async fn resolve_in_tx(
    st: &ApiState,
    id: &str,
    action: ReviewAction,
    req: &ResolveRequest,
) -> Result<Response, crate::error::DetectorError> {
    let mut tx = st.db.begin().await?;
    let Some(detail) = tx.lock_conflict(id).await? else {
        return Ok(error(StatusCode::NOT_FOUND, format!("no conflict {id}")));
    };
    let row = &detail.row;
    if row.status == status::SUPERSEDED {
        m::resolution(action.name(), "refused");
        return Ok(error(
            StatusCode::CONFLICT,
            format!(
                "conflict {id} cannot be resolved: it was superseded by {} (a later event changed the verdict, which no longer holds); nothing is left to decide",
                row.superseded_by.as_deref().unwrap_or("a later input")
            ),
        ));
    }
    if row.status == status::RESOLVED {
        m::resolution(action.name(), "noop");
        let message = format!(
            "already resolved by {} ({}): nothing changed",
            row.resolved_by.as_deref().unwrap_or("?"),
            row.resolution.as_deref().unwrap_or("?")
        );
        return Ok(axum::Json(ResolveResponse {
            outcome: "already-resolved".into(),
            message,
            conflict: detail,
        })
        .into_response());
    }
    let at = tillstream_runtime::clock::now_ms();
    let issued = tx.unreversed(id).await?;
    let (resolved, comps) = records::reviewed(
        id,
        &row.store_id,
        &row.rule,
        action,
        req.who.trim(),
        req.why.trim(),
        at,
        &issued,
    )?;
    let audit_id = tillstream_runtime::ids::uuid_v5(&format!("{id}|audit|{at}|{}", req.who));
    tx.resolve(&Resolution {
        conflict_id: id.to_string(),
        resolution: resolved.resolution.clone(),
        who: req.who.trim().to_string(),
        why: req.why.trim().to_string(),
        action: action.name().to_string(),
        at,
        audit_id,
        compensations: comps.clone(),
    })
    .await?;
    tx.outbox(
        &st.encoder
            .resolution(row.kafka_partition, &resolved, &comps)?,
    )
    .await?;
    let after = tx.lock_conflict(id).await?;
    tx.commit().await?;
    st.publish.notify_one();
    m::resolution(action.name(), "resolved");
    for c in &comps {
        m::compensation(c.kind);
    }
    let Some(conflict) = after else {
        return Ok(error(StatusCode::NOT_FOUND, format!("no conflict {id}")));
    };
    Ok(axum::Json(ResolveResponse {
        outcome: "resolved".into(),
        message: resolved.resolution,
        conflict,
    })
    .into_response())
}

/// Serves the API until `stop`; `None` when no token is configured (not served).
pub async fn serve(
    cfg: &ApiConfig,
    db: Db,
    encoder: Encoder,
    publish: Arc<Notify>,
    stop: CancellationToken,
) -> std::io::Result<Option<SocketAddr>> {
    if cfg.token.is_empty() {
        tracing::warn!("api.token is not set: the review queue API is not served");
        return Ok(None);
    }
    let state = ApiState {
        db,
        encoder,
        token: Arc::from(cfg.token.expose()),
        publish,
    };
    let app = Router::new()
        .route("/conflicts", get(list))
        .route("/conflicts/{id}", get(show))
        .route("/conflicts/{id}/resolve", post(resolve))
        .layer(middleware::from_fn_with_state(state.clone(), auth))
        .with_state(state);
    let listener = tokio::net::TcpListener::bind(cfg.listen).await?;
    let addr = listener.local_addr()?;
    tracing::info!(%addr, "review queue API listening");
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app)
            .with_graceful_shutdown(async move { stop.cancelled().await })
            .await
        {
            tracing::error!(error = %e, "review queue API stopped");
        }
    });
    Ok(Some(addr))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_compare_whole() {
        assert!(token_matches("abc", "abc"));
        assert!(!token_matches("abd", "abc"));
        assert!(!token_matches("ab", "abc"));
        assert!(!token_matches("", "abc"));
    }
}
