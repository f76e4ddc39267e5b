//! Schema registry client used by every service: resolves (event kind, version) to a registry id for
//! producing and a registry id to a prepared writer schema for consuming, caching both for the life of
//! the process (ids are immutable). Registry I/O goes through `schema_registry_converter`; the calls it
//! lacks (PUT /config, compatibility with a version) through `reqwest`.
//! Delivery guarantee: none; failures are classified so callers retry or dead-letter correctly.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use schema_registry_converter::async_impl::schema_registry::{
    SrSettings, get_schema_by_id, perform_sr_call, post_schema,
};
use schema_registry_converter::error::SRCError;
use schema_registry_converter::schema_registry_common::{SchemaType, SrCall, SuppliedSchema};
use serde::{Deserialize, Serialize};

use crate::catalog::EventKind;
use crate::codec::{CodecError, WriterSchema};

#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("schema registry unreachable at {url}: {detail}")]
    Unreachable { url: String, detail: String },
    #[error("subject {0} is not registered")]
    NoSubject(String),
    #[error("schema registry refused: {0}")]
    Refused(String),
    #[error("schema id {0} is unknown to the registry")]
    UnknownId(u32),
    #[error("schema {id} from the registry is unusable: {source}")]
    Unusable {
        id: u32,
        #[source]
        source: CodecError,
    },
    #[error("subject {subject} has no version matching the shipped {kind} v{version}")]
    NotRegistered {
        subject: String,
        kind: EventKind,
        version: u32,
    },
    #[error("schema registry answered HTTP {status} (error_code {code}): {message}")]
    Http {
        status: u16,
        code: i64,
        message: String,
    },
}

/// How services find the registry.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct RegistryConfig {
    pub url: String,
    /// Register shipped schemas on first use (dev). In production schemas are registered by the CI
    /// schema gate and services only look them up: set this to false.
    pub auto_register: bool,
    pub timeout_ms: u64,
    /// HTTP basic auth user, when the registry requires it.
    pub basic_auth_user: Option<String>,
    /// HTTP basic auth password (printed as `<redacted>`).
    pub basic_auth_password: Option<crate::Secret>,
}

impl Default for RegistryConfig {
    fn default() -> Self {
        RegistryConfig {
            url: "http://127.0.0.1:18081".into(),
            auto_register: true,
            timeout_ms: 10_000,
            basic_auth_user: None,
            basic_auth_password: None,
        }
    }
}

/// Caching registry client. Cheap to clone.
#[derive(Clone)]
pub struct Registry {
    inner: Arc<Inner>,
}

struct Inner {
    config: RegistryConfig,
    settings: SrSettings,
    http: reqwest::Client,
    ids: RwLock<HashMap<(EventKind, u32), u32>>,
    writers: RwLock<HashMap<u32, Arc<WriterSchema>>>,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry")
            .field("url", &self.inner.config.url)
            .finish_non_exhaustive()
    }
}

impl Registry {
    pub fn new(config: RegistryConfig) -> Result<Registry, RegistryError> {
        let url = config.url.trim_end_matches('/').to_string();
        let mut builder = SrSettings::new_builder(url.clone());
        builder.set_timeout(Duration::from_millis(config.timeout_ms));
        if let Some(user) = &config.basic_auth_user {
            builder.set_basic_authorization(
                user,
                config
                    .basic_auth_password
                    .as_ref()
                    .map(crate::Secret::expose),
            );
        }
        let settings = builder.build().map_err(|e| RegistryError::Unreachable {
            url: url.clone(),
            detail: e.to_string(),
        })?;
        let http = reqwest::Client::builder()
            .timeout(Duration::from_millis(config.timeout_ms))
            .build()
            .map_err(|e| RegistryError::Unreachable {
                url: url.clone(),
                detail: e.to_string(),
            })?;
        Ok(Registry {
            inner: Arc::new(Inner {
                config: RegistryConfig { url, ..config },
                settings,
                http,
                ids: RwLock::default(),
                writers: RwLock::default(),
            }),
        })
    }

    pub fn url(&self) -> &str {
        &self.inner.config.url
    }

    /// Registry id of the shipped schema `kind` v`version`: registered on first use when
    /// `auto_register`, otherwise looked up (it must have been registered by the schema gate).
    pub async fn schema_id(&self, kind: EventKind, version: u32) -> Result<u32, RegistryError> {
        if let Some(id) = self.cached_id(kind, version) {
            return Ok(id);
        }
        let text = kind.schema_text(version).ok_or(RegistryError::Unusable {
            id: 0,
            source: CodecError::UnknownVersion { kind, version },
        })?;
        let subject = kind.subject().to_string();
        let id = if self.inner.config.auto_register {
            let supplied = SuppliedSchema::new(
                Some(kind.full_name().to_string()),
                SchemaType::Avro,
                text.to_string(),
            );
            post_schema(&self.inner.settings, subject, supplied)
                .await
                .map_err(|e| self.map_err(e, None))?
                .id
        } else {
            let body = serde_json::json!({ "schema": text }).to_string();
            let raw = perform_sr_call(
                &self.inner.settings,
                SrCall::PostForVersion(&subject, &body),
            )
            .await
            .map_err(|e| match self.map_err(e, None) {
                RegistryError::Http { status: 404, .. } => RegistryError::NotRegistered {
                    subject: subject.clone(),
                    kind,
                    version,
                },
                other => other,
            })?;
            raw.id
                .ok_or_else(|| RegistryError::Refused("lookup returned no id".into()))?
        };
        self.inner
            .ids
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert((kind, version), id);
        Ok(id)
    }

    /// Cached id without I/O (hot path of producers, after warm-up).
    pub fn cached_id(&self, kind: EventKind, version: u32) -> Option<u32> {
        self.inner
            .ids
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(&(kind, version))
            .copied()
    }

    /// Resolves every shipped version of `kinds` up front, so the hot path never waits on HTTP.
    pub async fn warm_up(&self, kinds: &[EventKind]) -> Result<(), RegistryError> {
        for kind in kinds {
            for version in kind.versions() {
                let id = self.schema_id(*kind, version).await?;
                self.writer_schema(id).await?;
            }
        }
        Ok(())
    }

    /// The prepared writer schema for a registry id (fetched once, then cached).
    pub async fn writer_schema(&self, id: u32) -> Result<Arc<WriterSchema>, RegistryError> {
        if let Some(w) = self
            .inner
            .writers
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(&id)
        {
            return Ok(w.clone());
        }
        let registered = get_schema_by_id(id, &self.inner.settings)
            .await
            .map_err(|e| self.map_err(e, Some(id)))?;
        let schema = apache_avro::Schema::parse_str(&registered.schema).map_err(|e| {
            RegistryError::Unusable {
                id,
                source: CodecError::UnknownRecord(format!("schema does not parse: {e}")),
            }
        })?;
        let writer = Arc::new(
            WriterSchema::new(id, schema)
                .map_err(|source| RegistryError::Unusable { id, source })?,
        );
        self.inner
            .writers
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id, writer.clone());
        Ok(writer)
    }

    fn map_err(&self, e: SRCError, id: Option<u32>) -> RegistryError {
        let cause = e.cause.clone().unwrap_or_default();
        let text = format!("{} {}", e.error, cause);
        if let Some(id) = id
            && (text.contains("40403") || text.contains("status 404"))
        {
            return RegistryError::UnknownId(id);
        }
        if text.contains("error sending request")
            || text.contains("connect")
            || text.contains("timed out")
            || e.retriable
        {
            return RegistryError::Unreachable {
                url: self.inner.config.url.clone(),
                detail: text,
            };
        }
        if let Some(status) = text
            .split("status ")
            .nth(1)
            .and_then(|s| s.get(..3))
            .and_then(|s| s.parse::<u16>().ok())
        {
            return RegistryError::Http {
                status,
                code: 0,
                message: text,
            };
        }
        RegistryError::Refused(text)
    }

    // ------------------------------------------------------------------------------------------
    // Admin calls used by `tillctl schemas` (not in schema_registry_converter).
    // ------------------------------------------------------------------------------------------

    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> Result<serde_json::Value, RegistryError> {
        let url = format!("{}{}", self.inner.config.url, path);
        let mut req = self
            .inner
            .http
            .request(method, &url)
            .header("accept", "application/vnd.schemaregistry.v1+json");
        if let Some(user) = &self.inner.config.basic_auth_user {
            req = req.basic_auth(
                user,
                self.inner
                    .config
                    .basic_auth_password
                    .as_ref()
                    .map(crate::Secret::expose),
            );
        }
        if let Some(body) = body {
            req = req
                .header("content-type", "application/vnd.schemaregistry.v1+json")
                .body(body.to_string());
        }
        let resp = req.send().await.map_err(|e| RegistryError::Unreachable {
            url: self.inner.config.url.clone(),
            detail: e.to_string(),
        })?;
        let status = resp.status().as_u16();
        let json: serde_json::Value = resp.json().await.unwrap_or(serde_json::Value::Null);
        if (200..300).contains(&status) {
            Ok(json)
        } else {
            Err(RegistryError::Http {
                status,
                code: json["error_code"].as_i64().unwrap_or(0),
                message: json["message"].as_str().unwrap_or("").to_string(),
            })
        }
    }

    /// `PUT /config/{subject}`.
    pub async fn set_compatibility(&self, subject: &str, level: &str) -> Result<(), RegistryError> {
        self.call(
            reqwest::Method::PUT,
            &format!("/config/{}", enc(subject)),
            Some(serde_json::json!({ "compatibility": level })),
        )
        .await
        .map(|_| ())
    }

    /// `POST /compatibility/subjects/{subject}/versions` (against what the subject's level requires).
    pub async fn is_compatible(&self, subject: &str, schema: &str) -> Result<bool, RegistryError> {
        match self
            .call(
                reqwest::Method::POST,
                &format!("/compatibility/subjects/{}/versions", enc(subject)),
                Some(serde_json::json!({ "schema": schema })),
            )
            .await
        {
            Ok(v) => Ok(v["is_compatible"].as_bool().unwrap_or(false)),
            // Real Confluent answers 404 for an unknown subject here; nothing to be incompatible with.
            Err(RegistryError::Http { code: 40401, .. }) => Ok(true),
            Err(e) => Err(e),
        }
    }

    /// `POST /subjects/{subject}/versions`; returns the id. 409 = incompatible.
    pub async fn register(&self, subject: &str, schema: &str) -> Result<u32, RegistryError> {
        let v = self
            .call(
                reqwest::Method::POST,
                &format!("/subjects/{}/versions", enc(subject)),
                Some(serde_json::json!({ "schema": schema, "schemaType": "AVRO" })),
            )
            .await?;
        v["id"]
            .as_u64()
            .and_then(|id| u32::try_from(id).ok())
            .ok_or_else(|| RegistryError::Refused(format!("no integer id in {v}")))
    }

    /// `GET /subjects/{subject}/versions/latest`; an unknown subject is `NoSubject`.
    pub async fn latest(&self, subject: &str) -> Result<serde_json::Value, RegistryError> {
        self.call(
            reqwest::Method::GET,
            &format!("/subjects/{}/versions/latest", enc(subject)),
            None,
        )
        .await
        .map_err(|e| match e {
            RegistryError::Http { code: 40401, .. } => {
                RegistryError::NoSubject(subject.to_string())
            }
            other => other,
        })
    }

    /// `GET /subjects`.
    pub async fn subjects(&self) -> Result<Vec<String>, RegistryError> {
        let v = self.call(reqwest::Method::GET, "/subjects", None).await?;
        Ok(serde_json::from_value(v).unwrap_or_default())
    }
}

fn enc(subject: &str) -> String {
    subject.replace('/', "%2F")
}
