//! `tillctl conflicts list|show|resolve`: the conflict detector's review queue, through its HTTP
//! API (`Authorization: Bearer <token>`). Reads and one write (a resolution); no delivery guarantee
//! of its own: the detector stores a resolution in one transaction, and resolving twice is a no-op.

use std::time::Duration;

use serde_json::Value;

#[derive(Debug, thiserror::Error)]
pub enum ConflictsError {
    #[error("cannot reach the conflict detector at {url}: {detail}")]
    Unreachable { url: String, detail: String },
    #[error("the conflict detector refused: HTTP {status}: {message}")]
    Refused { status: u16, message: String },
    #[error("unreadable answer from the conflict detector: {0}")]
    Answer(String),
}

/// Where the API is and the token it wants.
#[derive(Debug, Clone)]
pub struct Api {
    pub url: String,
    pub token: String,
}

/// What `list` selects (the API's query parameters).
pub use tillstream_contracts::review::ConflictFilter as ListFilter;

impl Api {
    fn client() -> Result<reqwest::Client, ConflictsError> {
        reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .map_err(|e| ConflictsError::Unreachable {
                url: String::new(),
                detail: e.to_string(),
            })
    }

    async fn answer(&self, rb: reqwest::RequestBuilder) -> Result<Value, ConflictsError> {
        let url = self.url.clone();
        let res =
            rb.bearer_auth(&self.token)
                .send()
                .await
                .map_err(|e| ConflictsError::Unreachable {
                    url,
                    detail: e.to_string(),
                })?;
        let status = res.status();
        let body: Value = res
            .json()
            .await
            .map_err(|e| ConflictsError::Answer(e.to_string()))?;
        if !status.is_success() {
            let message = body["error"]
                .as_str()
                .unwrap_or("no reason given")
                .to_string();
            return Err(ConflictsError::Refused {
                status: status.as_u16(),
                message,
            });
        }
        Ok(body)
    }

    /// The queue, oldest first.
    pub async fn list(&self, f: &ListFilter) -> Result<Vec<Value>, ConflictsError> {
        let q = f.query_pairs();
        let query: Vec<String> = q
            .iter()
            .map(|(k, v)| format!("{k}={}", encode(v)))
            .collect();
        let rb = Self::client()?.get(format!(
            "{}/conflicts?{}",
            self.url.trim_end_matches('/'),
            query.join("&")
        ));
        match self.answer(rb).await? {
            Value::Array(rows) => Ok(rows),
            other => Err(ConflictsError::Answer(format!(
                "expected a list, got {other}"
            ))),
        }
    }

    /// One conflict with its evidence, compensations and audit trail.
    pub async fn show(&self, id: &str) -> Result<Value, ConflictsError> {
        let rb = Self::client()?.get(format!("{}/conflicts/{id}", self.url.trim_end_matches('/')));
        self.answer(rb).await
    }

    /// Resolves a conflict: `accept` (the rule's outcome stands) or `reject` (its compensations
    /// are reversed). Returns the detector's answer (`outcome`: resolved | already-resolved).
    pub async fn resolve(
        &self,
        id: &str,
        action: &str,
        who: &str,
        why: &str,
    ) -> Result<Value, ConflictsError> {
        let rb = Self::client()?
            .post(format!(
                "{}/conflicts/{id}/resolve",
                self.url.trim_end_matches('/')
            ))
            .json(&serde_json::json!({"action": action, "who": who, "why": why}));
        self.answer(rb).await
    }
}

/// Percent-encodes a query value (everything but unreserved characters).
fn encode(v: &str) -> String {
    v.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// One line per conflict: id, store, rule, severity, status, waiting time, sku.
pub fn table_line(c: &Value, now_ms: i64) -> String {
    let age_min = c["queued_at"]
        .as_i64()
        .map_or(0, |q| (now_ms - q).max(0) / 60_000);
    format!(
        "{}  {:<8} {:<26} {:<13} {:<10} {:>6} min  {}",
        c["conflict_id"].as_str().unwrap_or("?"),
        c["store_id"].as_str().unwrap_or("?"),
        c["rule"].as_str().unwrap_or("?"),
        c["triage"].as_str().unwrap_or("?"),
        c["status"].as_str().unwrap_or("?"),
        age_min,
        c["sku"].as_str().unwrap_or("-"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_values_are_encoded() {
        assert_eq!(encode("s001"), "s001");
        assert_eq!(encode("a b&c=d/é"), "a%20b%26c%3Dd%2F%C3%A9");
    }
}
