//! One batch transaction ([`Batch`]): the restore log, verdicts, compensations, outbox records,
//! price lists, a reviewer's decision and the next offsets, committed together or not at all.

use std::collections::BTreeMap;

use sqlx::{Any, AssertSqlSafe, Row, Transaction};
use tillstream_contracts::Compensation;
use tillstream_runtime::sql::{Backend, RowsStatement};

use super::log::{EventRow, LogChunk};
use super::queue::{CONFLICT_COLUMNS, ConflictDetail, Resolution, get_on, initial_status, status};
use super::{DbError, OFFSETS, OutboxRecord, PriceListRow};
use crate::core::Verdict;

/// One batch transaction (see the module doc).
pub struct Batch {
    /// The open transaction everything of the batch goes through.
    pub(super) tx: Transaction<'static, Any>,
    /// Rows per multi-row statement (`database.rows_per_statement`).
    pub(super) rows_per_statement: usize,
    /// Which server the transaction is on (placeholder style).
    pub(super) backend: Backend,
}

impl std::fmt::Debug for Batch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Batch").finish_non_exhaustive()
    }
}

impl Batch {
    /// Appends the batch's events to the restore log (one row per partition); returns how many
    /// events were stored (fewer: a row for that batch exists already).
    pub async fn log_chunks(&mut self, chunks: &BTreeMap<i32, LogChunk>) -> Result<usize, DbError> {
        let mut stored = 0;
        for (p, c) in chunks {
            if c.events == 0 {
                continue;
            }
            let n = sqlx::query(
                "INSERT INTO cd_event_log (kafka_partition, first_offset, last_offset, events, body) VALUES ($1, $2, $3, $4, $5) ON CONFLICT (kafka_partition, first_offset) DO NOTHING",
            )
            .bind(i64::from(*p))
            .bind(c.first_offset)
            .bind(c.last_offset)
            .bind(c.events as i64)
            .bind(c.body.as_slice())
            .execute(&mut *self.tx)
            .await?
            .rows_affected();
            if n == 1 {
                stored += c.events;
            }
        }
        Ok(stored)
    }

    /// [`log_chunks`](Self::log_chunks) of rows (in batch order).
    pub async fn log_events(&mut self, rows: &[EventRow]) -> Result<usize, DbError> {
        let mut chunks: BTreeMap<i32, LogChunk> = BTreeMap::new();
        for r in rows {
            chunks.entry(r.partition).or_default().push(
                r.offset,
                r.record_time,
                r.schema_id,
                &r.datum,
            );
        }
        self.log_chunks(&chunks).await
    }

    /// Records how many verdicts wait unwritten per partition (`cd_held`).
    pub async fn held(&mut self, counts: &BTreeMap<i32, i64>) -> Result<(), DbError> {
        for (p, n) in counts {
            sqlx::query(
                "INSERT INTO cd_held (kafka_partition, verdicts) VALUES ($1, $2) ON CONFLICT (kafka_partition) DO UPDATE SET verdicts = excluded.verdicts",
            )
            .bind(i64::from(*p))
            .bind(*n)
            .execute(&mut *self.tx)
            .await?;
        }
        Ok(())
    }

    /// Stores a new conflict and its compensations. False if its id is already stored.
    pub async fn raise(
        &mut self,
        partition: i32,
        v: &Verdict,
        detector: &str,
        queued_at: i64,
    ) -> Result<bool, DbError> {
        let sql = format!(
            "INSERT INTO cd_conflict ({CONFLICT_COLUMNS}, base_id, generation, verdict) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, NULL, NULL, NULL, NULL, $13, $14, $15) ON CONFLICT (conflict_id) DO NOTHING"
        );
        let n = sqlx::query(AssertSqlSafe(sql))
            .bind(v.conflict_id.as_str())
            .bind(v.store_id.as_str())
            .bind(i64::from(partition))
            .bind(v.rule.name())
            .bind(v.triage.name())
            .bind(v.owner.name())
            .bind(initial_status(v.triage))
            .bind(v.sku.as_deref())
            .bind(v.detected_at)
            .bind(queued_at)
            .bind(detector)
            .bind(v.explanation.as_str())
            .bind(v.base_id.as_str())
            .bind(i64::from(v.generation))
            .bind(serde_json::to_string(v)?)
            .execute(&mut *self.tx)
            .await?
            .rows_affected();
        if n == 0 {
            return Ok(false);
        }
        self.compensations(&v.compensations).await?;
        Ok(true)
    }

    /// Stores compensations (a reversal marks the one it undoes).
    pub async fn compensations(&mut self, comps: &[Compensation]) -> Result<(), DbError> {
        for c in comps {
            sqlx::query(
                "INSERT INTO cd_compensation (compensation_id, conflict_id, body, reverses, reversed_by) VALUES ($1, $2, $3, $4, NULL) ON CONFLICT (compensation_id) DO NOTHING",
            )
            .bind(c.compensation_id.as_str())
            .bind(c.conflict_id.as_str())
            .bind(serde_json::to_string(c)?)
            .bind(c.reverses.as_deref())
            .execute(&mut *self.tx)
            .await?;
            if let Some(target) = &c.reverses {
                sqlx::query(
                    "UPDATE cd_compensation SET reversed_by = $1 WHERE compensation_id = $2",
                )
                .bind(c.compensation_id.as_str())
                .bind(target.as_str())
                .execute(&mut *self.tx)
                .await?;
            }
        }
        Ok(())
    }

    /// The compensations of a conflict that nothing has reversed yet.
    pub async fn unreversed(&mut self, conflict_id: &str) -> Result<Vec<Compensation>, DbError> {
        let rows = sqlx::query(
            "SELECT body FROM cd_compensation WHERE conflict_id = $1 AND reverses IS NULL AND reversed_by IS NULL ORDER BY compensation_id",
        )
        .bind(conflict_id)
        .fetch_all(&mut *self.tx)
        .await?;
        rows.iter()
            .map(|r| Ok(serde_json::from_str(&r.try_get::<String, _>(0)?)?))
            .collect()
    }

    /// Marks a conflict superseded by `by` at `at`.
    pub async fn supersede(&mut self, conflict_id: &str, by: &str, at: i64) -> Result<(), DbError> {
        sqlx::query(
            "UPDATE cd_conflict SET status = $1, superseded_by = $2, resolution = $3, resolved_by = $4, resolved_at = $5 WHERE conflict_id = $6",
        )
        .bind(status::SUPERSEDED)
        .bind(by)
        .bind(format!("auto: superseded by {by}"))
        .bind(crate::core::DETECTOR)
        .bind(at)
        .bind(conflict_id)
        .execute(&mut *self.tx)
        .await?;
        Ok(())
    }

    /// Adds records to the outbox.
    pub async fn outbox(&mut self, records: &[OutboxRecord]) -> Result<(), DbError> {
        let stmt = RowsStatement::new(
            "INSERT INTO cd_outbox (kafka_partition, topic, record_key, record_id, event_type, payload)",
            6,
            "",
        );
        stmt.run(
            &mut self.tx,
            self.backend,
            self.rows_per_statement,
            records,
            |q, r| {
                q.bind(i64::from(r.partition))
                    .bind(r.topic.clone())
                    .bind(r.key.clone())
                    .bind(r.record_id.clone())
                    .bind(r.event_type)
                    .bind(r.payload.clone())
            },
        )
        .await?;
        Ok(())
    }

    /// Records the next offset per partition of `topic` (an offset only moves forward).
    pub async fn offsets(&mut self, topic: &str, next: &BTreeMap<i32, i64>) -> Result<(), DbError> {
        OFFSETS
            .advance(&mut self.tx, self.backend, topic, next)
            .await?;
        Ok(())
    }

    /// Stores price lists (known ones ignored).
    pub async fn price_lists(&mut self, lists: &[PriceListRow]) -> Result<(), DbError> {
        for (event_id, store, list_id, effective, body) in lists {
            sqlx::query(
                "INSERT INTO cd_price_list (event_id, store_id, price_list_id, effective_from, body) VALUES ($1, $2, $3, $4, $5) ON CONFLICT (event_id) DO NOTHING",
            )
            .bind(event_id)
            .bind(store)
            .bind(list_id)
            .bind(*effective)
            .bind(body)
            .execute(&mut *self.tx)
            .await?;
        }
        Ok(())
    }

    /// Locks a conflict for a reviewer's decision and returns it.
    pub async fn lock_conflict(&mut self, id: &str) -> Result<Option<ConflictDetail>, DbError> {
        let n = sqlx::query("UPDATE cd_conflict SET status = status WHERE conflict_id = $1")
            .bind(id)
            .execute(&mut *self.tx)
            .await?
            .rows_affected();
        if n == 0 {
            return Ok(None);
        }
        get_on(&mut self.tx, id).await
    }

    /// Stores a reviewer's decision: status, audit row, compensations.
    pub async fn resolve(&mut self, r: &Resolution) -> Result<(), DbError> {
        sqlx::query(
            "UPDATE cd_conflict SET status = $1, resolution = $2, resolved_by = $3, resolved_at = $4 WHERE conflict_id = $5",
        )
        .bind(status::RESOLVED)
        .bind(r.resolution.as_str())
        .bind(r.who.as_str())
        .bind(r.at)
        .bind(r.conflict_id.as_str())
        .execute(&mut *self.tx)
        .await?;
        sqlx::query(
            "INSERT INTO cd_audit (audit_id, conflict_id, action, who, why, at, outcome) VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(r.audit_id.as_str())
        .bind(r.conflict_id.as_str())
        .bind(r.action.as_str())
        .bind(r.who.as_str())
        .bind(r.why.as_str())
        .bind(r.at)
        .bind(r.resolution.as_str())
        .execute(&mut *self.tx)
        .await?;
        self.compensations(&r.compensations).await
    }

    pub async fn commit(self) -> Result<(), DbError> {
        self.tx.commit().await?;
        Ok(())
    }
}
