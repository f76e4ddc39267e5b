//! The review queue as reviewers and the API see it: conflict rows, the filter `list` takes, one
//! conflict with its evidence, compensations and audit trail, and a reviewer's decision.
//! Reads only, on the pool or on a batch's transaction ([`get_on`]); the writes are the batch's.

use serde::{Deserialize, Serialize};
use sqlx::any::AnyRow;
use sqlx::{AnyConnection, AssertSqlSafe, Row};
use tillstream_contracts::Compensation;

use super::{Db, DbError};
use crate::core::{Triage, Verdict};

/// A conflict as the queue shows it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ConflictRow {
    pub conflict_id: String,
    pub store_id: String,
    pub kafka_partition: i32,
    pub rule: String,
    pub triage: String,
    pub owner: String,
    pub status: String,
    pub sku: Option<String>,
    pub detected_at: i64,
    pub queued_at: i64,
    pub detector: String,
    pub explanation: String,
    pub resolution: Option<String>,
    pub resolved_by: Option<String>,
    pub resolved_at: Option<i64>,
    pub superseded_by: Option<String>,
}

pub(super) const CONFLICT_COLUMNS: &str = "conflict_id, store_id, kafka_partition, rule, triage, owner, status, sku, detected_at, queued_at, detector, explanation, resolution, resolved_by, resolved_at, superseded_by";

impl ConflictRow {
    fn from_row(r: &AnyRow) -> Result<ConflictRow, sqlx::Error> {
        Ok(ConflictRow {
            conflict_id: r.try_get(0)?,
            store_id: r.try_get(1)?,
            kafka_partition: r.try_get::<i64, _>(2)? as i32,
            rule: r.try_get(3)?,
            triage: r.try_get(4)?,
            owner: r.try_get(5)?,
            status: r.try_get(6)?,
            sku: r.try_get(7)?,
            detected_at: r.try_get(8)?,
            queued_at: r.try_get(9)?,
            detector: r.try_get(10)?,
            explanation: r.try_get(11)?,
            resolution: r.try_get(12)?,
            resolved_by: r.try_get(13)?,
            resolved_at: r.try_get(14)?,
            superseded_by: r.try_get(15)?,
        })
    }
}

/// Queue statuses.
pub mod status {
    pub const OPEN: &str = "open";
    pub const CLOSED: &str = "closed";
    pub const RESOLVED: &str = "resolved";
    pub const SUPERSEDED: &str = "superseded";
}

/// The queue status a fresh verdict starts in.
pub fn initial_status(triage: Triage) -> &'static str {
    match triage {
        Triage::NeedsReview => status::OPEN,
        Triage::Info | Triage::AutoResolved => status::CLOSED,
    }
}

/// What `list` selects: the review API's query (one type for the detector and `tillctl`).
pub use tillstream_contracts::review::ConflictFilter as Filter;

/// A reviewer's decision on one conflict, ready to store.
#[derive(Debug, Clone)]
pub struct Resolution {
    pub conflict_id: String,
    pub resolution: String,
    pub who: String,
    pub why: String,
    pub action: String,
    pub at: i64,
    pub audit_id: String,
    pub compensations: Vec<Compensation>,
}

impl Db {
    /// The queue, filtered, oldest first.
    pub async fn list(&self, f: &Filter, now_ms: i64) -> Result<Vec<ConflictRow>, DbError> {
        let mut clauses: Vec<String> = Vec::new();
        let mut binds: Vec<String> = Vec::new();
        let want = f.status.clone().unwrap_or_else(|| status::OPEN.into());
        if want != "all" {
            binds.push(want);
            clauses.push(format!("status = ${}", binds.len()));
        }
        for (col, v) in [
            ("store_id", &f.store),
            ("rule", &f.rule),
            ("triage", &f.severity),
        ] {
            if let Some(v) = v {
                binds.push(v.clone());
                clauses.push(format!("{col} = ${}", binds.len()));
            }
        }
        if let Some(age) = f.min_age_ms {
            clauses.push(format!("queued_at <= {}", now_ms.saturating_sub(age)));
        }
        let sql = format!(
            "SELECT {CONFLICT_COLUMNS} FROM cd_conflict{} ORDER BY queued_at, conflict_id LIMIT {}",
            if clauses.is_empty() {
                String::new()
            } else {
                format!(" WHERE {}", clauses.join(" AND "))
            },
            f.limit.unwrap_or(100).clamp(1, 10_000)
        );
        let mut q = sqlx::query(AssertSqlSafe(sql));
        for b in &binds {
            q = q.bind(b.as_str());
        }
        let rows = q.fetch_all(self.pool()).await?;
        Ok(rows
            .iter()
            .map(ConflictRow::from_row)
            .collect::<Result<_, _>>()?)
    }

    /// One conflict with its verdict (evidence, figures), compensations and audit trail.
    pub async fn get(&self, id: &str) -> Result<Option<ConflictDetail>, DbError> {
        let mut conn = self.pool().acquire().await?;
        get_on(&mut conn, id).await
    }

    /// Every row of a table, as text lines in key order (tests compare database states).
    pub async fn dump(
        &self,
        table: &str,
        columns: &str,
        order: &str,
    ) -> Result<Vec<String>, DbError> {
        let sql = format!("SELECT {columns} FROM {table} ORDER BY {order}");
        let rows = sqlx::query(AssertSqlSafe(sql))
            .fetch_all(self.pool())
            .await?;
        Ok(rows
            .iter()
            .map(|r| {
                (0..r.len())
                    .map(|i| {
                        r.try_get::<Option<String>, _>(i)
                            .map(|v| v.unwrap_or_else(|| "NULL".into()))
                            .or_else(|_| {
                                r.try_get::<Option<i64>, _>(i)
                                    .map(|v| v.map_or("NULL".into(), |v| v.to_string()))
                            })
                            .unwrap_or_else(|_| "?".into())
                    })
                    .collect::<Vec<_>>()
                    .join("|")
            })
            .collect())
    }
}

/// A conflict with everything `show` prints.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ConflictDetail {
    #[serde(flatten)]
    pub row: ConflictRow,
    pub verdict: Verdict,
    pub compensations: Vec<Compensation>,
    pub audit: Vec<AuditRow>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct AuditRow {
    pub action: String,
    pub who: String,
    pub why: String,
    pub at: i64,
    pub outcome: String,
}

pub(super) async fn get_on(
    conn: &mut AnyConnection,
    id: &str,
) -> Result<Option<ConflictDetail>, DbError> {
    let sql = format!("SELECT {CONFLICT_COLUMNS}, verdict FROM cd_conflict WHERE conflict_id = $1");
    let Some(r) = sqlx::query(AssertSqlSafe(sql))
        .bind(id)
        .fetch_optional(&mut *conn)
        .await?
    else {
        return Ok(None);
    };
    let row = ConflictRow::from_row(&r)?;
    let verdict: Verdict = serde_json::from_str(&r.try_get::<String, _>(16)?)?;
    let comps = sqlx::query(
        "SELECT body FROM cd_compensation WHERE conflict_id = $1 ORDER BY compensation_id",
    )
    .bind(id)
    .fetch_all(&mut *conn)
    .await?;
    let compensations = comps
        .iter()
        .map(|c| Ok(serde_json::from_str(&c.try_get::<String, _>(0)?)?))
        .collect::<Result<Vec<Compensation>, DbError>>()?;
    let audit = sqlx::query("SELECT action, who, why, at, outcome FROM cd_audit WHERE conflict_id = $1 ORDER BY at, audit_id")
        .bind(id)
        .fetch_all(&mut *conn)
        .await?
        .iter()
        .map(|a| {
            Ok(AuditRow {
                action: a.try_get(0)?,
                who: a.try_get(1)?,
                why: a.try_get(2)?,
                at: a.try_get(3)?,
                outcome: a.try_get(4)?,
            })
        })
        .collect::<Result<Vec<_>, DbError>>()?;
    Ok(Some(ConflictDetail {
        row,
        verdict,
        compensations,
        audit,
    }))
}
