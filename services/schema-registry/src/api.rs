//! The Confluent-compatible REST surface: routes, request parsing and response shapes. Owns no
//! state of its own; every decision is the store's.
//!
//! Guarantees: a mutation's response is sent only after the store has made it durable; every
//! error, including unknown routes, bad paths and malformed bodies, is answered with Confluent's
//! body `{"error_code": <int>, "message": "..."}` and the matching HTTP status; request input is
//! never trusted (no panics on bad input). Request bodies are parsed as JSON whatever their
//! content type (`application/vnd.schemaregistry.v1+json`, `application/json`, none...).

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use axum::Router;
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{MatchedPath, Path, Query, Request, State};
use axum::http::StatusCode;
use axum::http::header::CONTENT_TYPE;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use bytes::Bytes;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::compat::{Level, UnknownLevel};
use crate::error::RegistryError;
use crate::metrics;
use crate::schema::{Reference, SchemaInput, SchemaType};
use crate::store::{Registry, VersionSel};

/// The content type of every response.
pub const CONTENT_TYPE_V1: &str = "application/vnd.schemaregistry.v1+json";

/// Largest version number accepted in a reference.
const MAX_VERSION: i64 = i32::MAX as i64;

/// Shared handle on the registry used by every handler.
#[derive(Clone)]
pub struct AppState {
    registry: Arc<Mutex<Registry>>,
    /// Whether the DELETE routes are served (`allow_deletes`).
    allow_deletes: bool,
    /// The `Authorization` header value every request must carry (`Basic base64(user:password)`),
    /// when the registry is behind basic auth.
    authorization: Option<Arc<str>>,
}

impl std::fmt::Debug for AppState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppState").finish_non_exhaustive()
    }
}

impl AppState {
    pub fn new(registry: Registry, allow_deletes: bool) -> Self {
        metrics::set_sizes(registry.schema_count(), registry.subject_count());
        AppState {
            registry: Arc::new(Mutex::new(registry)),
            allow_deletes,
            authorization: None,
        }
    }

    /// Requires HTTP basic auth with `auth` on every request.
    pub fn with_basic_auth(mut self, auth: Option<&crate::config::BasicAuth>) -> Self {
        use base64::Engine;
        self.authorization = auth.map(|a| {
            let pair = format!("{}:{}", a.username, a.password.expose());
            format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(pair)
            )
            .into()
        });
        self
    }

    /// Runs a read-only query (in memory, never blocks on I/O).
    fn read<T>(
        &self,
        f: impl FnOnce(&Registry) -> Result<T, RegistryError>,
    ) -> Result<T, RegistryError> {
        let guard = self.registry.lock().unwrap_or_else(PoisonError::into_inner);
        f(&guard)
    }

    /// Runs a mutation on a blocking thread (it fsyncs) and refreshes the size gauges.
    async fn write<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Registry) -> Result<T, RegistryError> + Send + 'static,
    ) -> Result<T, RegistryError> {
        let registry = Arc::clone(&self.registry);
        tokio::task::spawn_blocking(move || {
            let mut guard = registry.lock().unwrap_or_else(PoisonError::into_inner);
            let out = f(&mut guard);
            metrics::set_sizes(guard.schema_count(), guard.subject_count());
            out
        })
        .await
        .map_err(|e| RegistryError::Internal(format!("registry worker failed: {e}")))?
    }
}

/// The API router (without the ops endpoints, which the runtime serves separately).
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/", get(root))
        .route("/schemas/types", get(schema_types))
        .route("/schemas/ids/{id}", get(schema_by_id))
        .route("/schemas/ids/{id}/schema", get(raw_schema_by_id))
        .route("/schemas/ids/{id}/versions", get(id_versions))
        .route("/schemas/ids/{id}/subjects", get(id_subjects))
        .route("/subjects", get(list_subjects))
        .route("/subjects/{subject}", post(lookup).delete(delete_subject))
        .route(
            "/subjects/{subject}/versions",
            get(list_versions).post(register),
        )
        .route(
            "/subjects/{subject}/versions/{version}",
            get(get_version).delete(delete_version),
        )
        .route(
            "/subjects/{subject}/versions/{version}/schema",
            get(get_version_schema),
        )
        .route(
            "/subjects/{subject}/versions/{version}/referencedby",
            get(referenced_by),
        )
        .route(
            "/compatibility/subjects/{subject}/versions",
            post(compatibility_by_level),
        )
        .route(
            "/compatibility/subjects/{subject}/versions/{version}",
            post(compatibility_with_version),
        )
        .route(
            "/config",
            get(get_global_config)
                .put(put_global_config)
                .delete(delete_global_config),
        )
        .route(
            "/config/{subject}",
            get(get_subject_config)
                .put(put_subject_config)
                .delete(delete_subject_config),
        )
        .fallback(route_not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::from_fn_with_state(
            state.clone(),
            refuse_deletes,
        ))
        .layer(middleware::from_fn_with_state(state.clone(), require_auth))
        .layer(middleware::from_fn(track))
        .with_state(state)
}

// ----- plumbing -----

type ApiResult = Result<Response, RegistryError>;

fn json_response(value: &impl serde::Serialize) -> Response {
    match serde_json::to_vec(value) {
        Ok(body) => ([(CONTENT_TYPE, CONTENT_TYPE_V1)], body).into_response(),
        Err(e) => RegistryError::Internal(format!("cannot encode response: {e}")).into_response(),
    }
}

fn raw_response(body: String) -> Response {
    ([(CONTENT_TYPE, CONTENT_TYPE_V1)], body).into_response()
}

impl IntoResponse for RegistryError {
    fn into_response(self) -> Response {
        let status =
            StatusCode::from_u16(self.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        if status.is_server_error() {
            tracing::error!(error = %self, "request failed");
        } else {
            tracing::debug!(error = %self, code = self.code(), "request rejected");
        }
        let body = json!({ "error_code": self.code(), "message": self.to_string() });
        (status, [(CONTENT_TYPE, CONTENT_TYPE_V1)], body.to_string()).into_response()
    }
}

async fn track(req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_string(), |m| m.as_str().to_string());
    let start = Instant::now();
    let response = next.run(req).await;
    metrics::record_request(route, response.status().as_u16(), start.elapsed());
    response
}

async fn route_not_found() -> RegistryError {
    RegistryError::RouteNotFound
}

/// Answers 401 to a request without the configured credentials (compared in constant time).
async fn require_auth(State(state): State<AppState>, req: Request, next: Next) -> Response {
    if let Some(expected) = &state.authorization {
        let given = req
            .headers()
            .get(axum::http::header::AUTHORIZATION)
            .map(|v| v.as_bytes())
            .unwrap_or_default();
        let same = given.len() == expected.len()
            && given
                .iter()
                .zip(expected.as_bytes())
                .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                == 0;
        if !same {
            let mut refused = RegistryError::Unauthorized.into_response();
            refused.headers_mut().insert(
                axum::http::header::WWW_AUTHENTICATE,
                axum::http::HeaderValue::from_static("Basic realm=\"tillstream-registry\""),
            );
            return refused;
        }
    }
    next.run(req).await
}

/// Answers every DELETE with 405 `DeletesDisabled` unless the registry allows deletes.
async fn refuse_deletes(State(state): State<AppState>, req: Request, next: Next) -> Response {
    if req.method() == axum::http::Method::DELETE && !state.allow_deletes {
        return RegistryError::DeletesDisabled.into_response();
    }
    next.run(req).await
}

async fn method_not_allowed() -> RegistryError {
    RegistryError::MethodNotAllowed
}

fn path<T>(p: Result<Path<T>, PathRejection>) -> Result<T, RegistryError> {
    p.map(|Path(v)| v)
        .map_err(|e| RegistryError::BadRequest(format!("Invalid path: {e}")))
}

/// Query-string flags (`deleted`, `permanent`, `verbose`, `defaultToGlobal`).
struct Flags(HashMap<String, String>);

impl Flags {
    fn parse(
        q: Result<Query<HashMap<String, String>>, QueryRejection>,
    ) -> Result<Self, RegistryError> {
        q.map(|Query(m)| Flags(m))
            .map_err(|e| RegistryError::BadRequest(format!("Invalid query string: {e}")))
    }

    fn get(&self, name: &str) -> bool {
        self.0
            .get(name)
            .is_some_and(|v| v.trim().eq_ignore_ascii_case("true"))
    }
}

fn schema_id(raw: &str) -> Result<u32, RegistryError> {
    raw.trim()
        .parse::<u32>()
        .map_err(|_| RegistryError::SchemaIdNotFound(raw.to_string()))
}

#[derive(Deserialize)]
struct SchemaRequest {
    schema: Option<Value>,
    #[serde(rename = "schemaType")]
    schema_type: Option<Value>,
    references: Option<Vec<ReferenceRequest>>,
}

#[derive(Deserialize)]
struct ReferenceRequest {
    name: String,
    subject: String,
    version: i64,
}

/// Parses `{"schema": "...", "schemaType"?: "AVRO", "references"?: [...]}`. Malformed JSON is 400;
/// well-formed JSON of the wrong shape is 42201.
fn schema_body(body: &Bytes) -> Result<SchemaInput, RegistryError> {
    let value: Value = serde_json::from_slice(body)
        .map_err(|e| RegistryError::BadRequest(format!("Malformed JSON request body: {e}")))?;
    let req: SchemaRequest = serde_json::from_value(value)
        .map_err(|e| RegistryError::InvalidSchema(format!("Invalid schema request: {e}")))?;
    let schema = match req.schema {
        Some(Value::String(s)) => s,
        None | Some(Value::Null) => {
            return Err(RegistryError::InvalidSchema("Empty schema".to_string()));
        }
        Some(_) => {
            return Err(RegistryError::InvalidSchema(
                "Invalid schema: `schema` must be a string holding the schema's JSON".to_string(),
            ));
        }
    };
    let schema_type = match req.schema_type {
        None | Some(Value::Null) => SchemaType::parse(None)?,
        Some(Value::String(t)) => SchemaType::parse(Some(&t))?,
        Some(other) => SchemaType::parse(Some(&other.to_string()))?,
    };
    let references = req
        .references
        .unwrap_or_default()
        .into_iter()
        .map(|r| {
            if !(1..=MAX_VERSION).contains(&r.version) {
                return Err(RegistryError::InvalidSchema(format!(
                    "Invalid schema: reference '{}' has invalid version {}",
                    r.name, r.version
                )));
            }
            Ok(Reference {
                name: r.name,
                subject: r.subject,
                // In range by the check above.
                version: u32::try_from(r.version).unwrap_or(u32::MAX),
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(SchemaInput {
        schema,
        schema_type,
        references,
    })
}

/// Parses `{"compatibility": "..."}` (also accepting `compatibilityLevel`).
fn level_body(body: &Bytes) -> Result<Level, RegistryError> {
    let value: Value = serde_json::from_slice(body)
        .map_err(|e| RegistryError::BadRequest(format!("Malformed JSON request body: {e}")))?;
    let level = value
        .get("compatibility")
        .or_else(|| value.get("compatibilityLevel"))
        .and_then(Value::as_str)
        .ok_or_else(|| RegistryError::InvalidCompatibilityLevel(String::new()))?;
    level
        .parse()
        .map_err(|e: UnknownLevel| RegistryError::InvalidCompatibilityLevel(e.0))
}

// ----- handlers -----

async fn root() -> Response {
    json_response(&json!({}))
}

async fn schema_types() -> Response {
    json_response(&[SchemaType::Avro.as_str()])
}

async fn schema_by_id(
    State(app): State<AppState>,
    id: Result<Path<String>, PathRejection>,
) -> ApiResult {
    let id = schema_id(&path(id)?)?;
    let view = app.read(|r| r.schema_by_id(id))?;
    Ok(json_response(&view))
}

async fn raw_schema_by_id(
    State(app): State<AppState>,
    id: Result<Path<String>, PathRejection>,
) -> ApiResult {
    let id = schema_id(&path(id)?)?;
    let view = app.read(|r| r.schema_by_id(id))?;
    Ok(raw_response(view.schema))
}

async fn id_versions(
    State(app): State<AppState>,
    id: Result<Path<String>, PathRejection>,
    q: Result<Query<HashMap<String, String>>, QueryRejection>,
) -> ApiResult {
    let id = schema_id(&path(id)?)?;
    let deleted = Flags::parse(q)?.get("deleted");
    let list = app.read(|r| r.id_versions(id, deleted))?;
    Ok(json_response(&list))
}

async fn id_subjects(
    State(app): State<AppState>,
    id: Result<Path<String>, PathRejection>,
    q: Result<Query<HashMap<String, String>>, QueryRejection>,
) -> ApiResult {
    let id = schema_id(&path(id)?)?;
    let deleted = Flags::parse(q)?.get("deleted");
    let list = app.read(|r| r.id_versions(id, deleted))?;
    let subjects: BTreeSet<String> = list.into_iter().map(|v| v.subject).collect();
    Ok(json_response(&subjects))
}

async fn list_subjects(
    State(app): State<AppState>,
    q: Result<Query<HashMap<String, String>>, QueryRejection>,
) -> ApiResult {
    let deleted = Flags::parse(q)?.get("deleted");
    let list = app.read(|r| Ok(r.subjects(deleted)))?;
    Ok(json_response(&list))
}

async fn list_versions(
    State(app): State<AppState>,
    subject: Result<Path<String>, PathRejection>,
    q: Result<Query<HashMap<String, String>>, QueryRejection>,
) -> ApiResult {
    let subject = path(subject)?;
    let deleted = Flags::parse(q)?.get("deleted");
    let list = app.read(|r| r.versions(&subject, deleted))?;
    Ok(json_response(&list))
}

async fn register(
    State(app): State<AppState>,
    subject: Result<Path<String>, PathRejection>,
    body: Bytes,
) -> ApiResult {
    let subject = path(subject)?;
    let input = schema_body(&body)?;
    let id = app.write(move |r| r.register(&subject, &input)).await?;
    Ok(json_response(&json!({ "id": id })))
}

async fn lookup(
    State(app): State<AppState>,
    subject: Result<Path<String>, PathRejection>,
    q: Result<Query<HashMap<String, String>>, QueryRejection>,
    body: Bytes,
) -> ApiResult {
    let subject = path(subject)?;
    let deleted = Flags::parse(q)?.get("deleted");
    let input = schema_body(&body)?;
    let found = app.read(|r| r.lookup(&subject, &input, deleted))?;
    Ok(json_response(&found))
}

async fn get_version(
    State(app): State<AppState>,
    p: Result<Path<(String, String)>, PathRejection>,
    q: Result<Query<HashMap<String, String>>, QueryRejection>,
) -> ApiResult {
    let (subject, version) = path(p)?;
    let sel: VersionSel = version.parse()?;
    let deleted = Flags::parse(q)?.get("deleted");
    let view = app.read(|r| r.version(&subject, sel, deleted))?;
    Ok(json_response(&view))
}

async fn get_version_schema(
    State(app): State<AppState>,
    p: Result<Path<(String, String)>, PathRejection>,
    q: Result<Query<HashMap<String, String>>, QueryRejection>,
) -> ApiResult {
    let (subject, version) = path(p)?;
    let sel: VersionSel = version.parse()?;
    let deleted = Flags::parse(q)?.get("deleted");
    let view = app.read(|r| r.version(&subject, sel, deleted))?;
    Ok(raw_response(view.schema))
}

async fn referenced_by(
    State(app): State<AppState>,
    p: Result<Path<(String, String)>, PathRejection>,
) -> ApiResult {
    let (subject, version) = path(p)?;
    let sel: VersionSel = version.parse()?;
    let ids = app.read(|r| r.referenced_by(&subject, sel))?;
    Ok(json_response(&ids))
}

async fn delete_subject(
    State(app): State<AppState>,
    subject: Result<Path<String>, PathRejection>,
    q: Result<Query<HashMap<String, String>>, QueryRejection>,
) -> ApiResult {
    let subject = path(subject)?;
    let permanent = Flags::parse(q)?.get("permanent");
    let versions = app
        .write(move |r| r.delete_subject(&subject, permanent))
        .await?;
    Ok(json_response(&versions))
}

async fn delete_version(
    State(app): State<AppState>,
    p: Result<Path<(String, String)>, PathRejection>,
    q: Result<Query<HashMap<String, String>>, QueryRejection>,
) -> ApiResult {
    let (subject, version) = path(p)?;
    let sel: VersionSel = version.parse()?;
    let permanent = Flags::parse(q)?.get("permanent");
    let version = app
        .write(move |r| r.delete_version(&subject, sel, permanent))
        .await?;
    Ok(json_response(&version))
}

fn compatibility_response(result: crate::store::CompatibilityResult, verbose: bool) -> Response {
    if verbose {
        json_response(&json!({
            "is_compatible": result.is_compatible,
            "messages": result.messages,
        }))
    } else {
        json_response(&json!({ "is_compatible": result.is_compatible }))
    }
}

async fn compatibility_by_level(
    State(app): State<AppState>,
    subject: Result<Path<String>, PathRejection>,
    q: Result<Query<HashMap<String, String>>, QueryRejection>,
    body: Bytes,
) -> ApiResult {
    let subject = path(subject)?;
    let verbose = Flags::parse(q)?.get("verbose");
    let input = schema_body(&body)?;
    let result = app.read(|r| r.check_compatibility(&subject, &input, None))?;
    Ok(compatibility_response(result, verbose))
}

async fn compatibility_with_version(
    State(app): State<AppState>,
    p: Result<Path<(String, String)>, PathRejection>,
    q: Result<Query<HashMap<String, String>>, QueryRejection>,
    body: Bytes,
) -> ApiResult {
    let (subject, version) = path(p)?;
    let sel: VersionSel = version.parse()?;
    let verbose = Flags::parse(q)?.get("verbose");
    let input = schema_body(&body)?;
    let result = app.read(|r| r.check_compatibility(&subject, &input, Some(sel)))?;
    Ok(compatibility_response(result, verbose))
}

async fn get_global_config(State(app): State<AppState>) -> ApiResult {
    let level = app.read(|r| Ok(r.global_level()))?;
    Ok(json_response(&json!({ "compatibilityLevel": level })))
}

async fn put_global_config(State(app): State<AppState>, body: Bytes) -> ApiResult {
    let level = level_body(&body)?;
    let level = app.write(move |r| r.set_global_level(level)).await?;
    Ok(json_response(&json!({ "compatibility": level })))
}

async fn delete_global_config(State(app): State<AppState>) -> ApiResult {
    let before = app.write(|r| r.reset_global_level()).await?;
    Ok(json_response(&json!({ "compatibilityLevel": before })))
}

async fn get_subject_config(
    State(app): State<AppState>,
    subject: Result<Path<String>, PathRejection>,
    q: Result<Query<HashMap<String, String>>, QueryRejection>,
) -> ApiResult {
    let subject = path(subject)?;
    let default_to_global = Flags::parse(q)?.get("defaultToGlobal");
    let level = app.read(|r| r.subject_config(&subject, default_to_global))?;
    Ok(json_response(&json!({ "compatibilityLevel": level })))
}

async fn put_subject_config(
    State(app): State<AppState>,
    subject: Result<Path<String>, PathRejection>,
    body: Bytes,
) -> ApiResult {
    let subject = path(subject)?;
    let level = level_body(&body)?;
    let level = app
        .write(move |r| r.set_subject_level(&subject, level))
        .await?;
    Ok(json_response(&json!({ "compatibility": level })))
}

async fn delete_subject_config(
    State(app): State<AppState>,
    subject: Result<Path<String>, PathRejection>,
) -> ApiResult {
    let subject = path(subject)?;
    let before = app.write(move |r| r.delete_subject_level(&subject)).await?;
    Ok(json_response(&json!({ "compatibilityLevel": before })))
}
