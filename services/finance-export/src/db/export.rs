//! Exports on the ledger side: numbering a store's exports, assigning the lines an export
//! delivers, and recording what it reported (the reconciliation records), so the files can be
//! rendered again byte for byte at any time.
//!
//! Delivery guarantee: an event's lines belong to exactly one export (assigned once, in one
//! transaction with the export's row); `delivered` is set only after the files are in place.

use sqlx::{Acquire, AssertSqlSafe, Row};

use super::rows::{V, insert_rows};
use super::{Db, DbError};
use crate::core::ReconRecord;

/// An export to assign.
#[derive(Debug, Clone)]
pub struct NewExport {
    pub store_id: String,
    /// The day it closes (a supplement: the store's latest exported day).
    pub business_date: i32,
    /// `day` or `supplement`.
    pub kind: &'static str,
    /// The export's folder name (`2026-11-02`, `2026-11-02.s3`).
    pub name: String,
    /// `all_devices_closed`, `cutoff`, `late_events`.
    pub reason: &'static str,
    /// Devices that traded and never closed (cut-off).
    pub missing_close: Vec<String>,
    /// The reconciliation records it reports, with whether each revises an earlier report.
    pub recon: Vec<(ReconRecord, bool)>,
}

/// An export as recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportMeta {
    pub store_id: String,
    pub export_seq: i64,
    pub business_date: i32,
    pub kind: String,
    pub name: String,
    pub reason: String,
    pub missing_close: Vec<String>,
    pub delivered: bool,
}

impl Db {
    /// Numbers the store's next export, assigns it every undelivered line of the store up to its
    /// day, marks the day exported (a day export) and records the reconciliation it reports.
    pub async fn assign_export(&self, e: &NewExport) -> Result<i64, DbError> {
        let mut conn = self.pool().acquire().await?;
        let mut tx = conn.begin().await?;
        let next: i64 = sqlx::query(AssertSqlSafe(
            self.sql("SELECT COALESCE(MAX(export_seq), 0) + 1 FROM fe_export WHERE store_id = $1"),
        ))
        .bind(e.store_id.clone())
        .fetch_one(&mut *tx)
        .await?
        .try_get(0)?;
        sqlx::query(AssertSqlSafe(self.sql(
            "INSERT INTO fe_export (store_id, export_seq, business_date, kind, name, reason, \
             missing_close, delivered) VALUES ($1, $2, $3, $4, $5, $6, $7, 0)",
        )))
        .bind(e.store_id.clone())
        .bind(next)
        .bind(i64::from(e.business_date))
        .bind(e.kind.to_string())
        .bind(e.name.clone())
        .bind(e.reason.to_string())
        .bind(e.missing_close.join(" "))
        .execute(&mut *tx)
        .await?;
        sqlx::query(AssertSqlSafe(self.sql(
            "UPDATE fe_event SET export_seq = $1 WHERE store_id = $2 AND export_seq IS NULL \
             AND n_lines > 0 AND business_date >= 0 AND business_date <= $3",
        )))
        .bind(next)
        .bind(e.store_id.clone())
        .bind(i64::from(e.business_date))
        .execute(&mut *tx)
        .await?;
        sqlx::query(AssertSqlSafe(self.sql(
            "UPDATE fe_store_day SET exported = 1 WHERE store_id = $1 AND business_date <= $2",
        )))
        .bind(e.store_id.clone())
        .bind(i64::from(e.business_date))
        .execute(&mut *tx)
        .await?;
        sqlx::query(AssertSqlSafe(self.sql(
            "UPDATE fe_store SET pending_since_ms = NULL WHERE store_id = $1",
        )))
        .bind(e.store_id.clone())
        .execute(&mut *tx)
        .await?;
        let rows: Vec<Vec<V>> = e
            .recon
            .iter()
            .map(|(r, revised)| {
                Ok(vec![
                    e.store_id.as_str().into(),
                    next.into(),
                    r.business_date.into(),
                    r.device_id.as_str().into(),
                    r.status.name().into(),
                    i64::from(*revised).into(),
                    serde_json::to_string(r)?.into(),
                ])
            })
            .collect::<Result<_, DbError>>()?;
        insert_rows(
            &mut tx,
            self.backend(),
            self.rows_per_statement,
            "INSERT INTO fe_export_recon (store_id, export_seq, business_date, device_id, status, \
             revised, record)",
            "",
            7,
            &rows,
        )
        .await?;
        tx.commit().await?;
        Ok(next)
    }

    fn meta(r: &sqlx::any::AnyRow) -> Result<ExportMeta, DbError> {
        let missing: String = r.try_get(6)?;
        Ok(ExportMeta {
            store_id: r.try_get(0)?,
            export_seq: r.try_get(1)?,
            business_date: r.try_get::<i64, _>(2)? as i32,
            kind: r.try_get(3)?,
            name: r.try_get(4)?,
            reason: r.try_get(5)?,
            missing_close: missing.split_whitespace().map(str::to_string).collect(),
            delivered: r.try_get::<i64, _>(7)? != 0,
        })
    }

    /// Exports, optionally of one store and within `[from, to]` (business dates), in store and
    /// export order.
    pub async fn exports(
        &self,
        store: Option<&str>,
        from: i32,
        to: i32,
    ) -> Result<Vec<ExportMeta>, DbError> {
        let sql = self.sql(
            "SELECT store_id, export_seq, business_date, kind, name, reason, missing_close, \
             delivered FROM fe_export WHERE business_date >= $1 AND business_date <= $2 \
             AND ($3 = '' OR store_id = $4) ORDER BY store_id, export_seq",
        );
        let rows = sqlx::query(AssertSqlSafe(sql))
            .bind(i64::from(from))
            .bind(i64::from(to))
            .bind(store.unwrap_or("").to_string())
            .bind(store.unwrap_or("").to_string())
            .fetch_all(self.pool())
            .await?;
        rows.iter().map(Db::meta).collect()
    }

    /// Exports assigned but not yet delivered (a crash between the two).
    pub async fn undelivered(&self) -> Result<Vec<ExportMeta>, DbError> {
        let rows = sqlx::query(
            "SELECT store_id, export_seq, business_date, kind, name, reason, missing_close, \
             delivered FROM fe_export WHERE delivered = 0 ORDER BY store_id, export_seq",
        )
        .fetch_all(self.pool())
        .await?;
        rows.iter().map(Db::meta).collect()
    }

    pub async fn mark_delivered(&self, store: &str, export_seq: i64) -> Result<(), DbError> {
        sqlx::query(AssertSqlSafe(self.sql(
            "UPDATE fe_export SET delivered = 1 WHERE store_id = $1 AND export_seq = $2",
        )))
        .bind(store.to_string())
        .bind(export_seq)
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// The reconciliation records an export reported, with their `revised` flag.
    pub async fn export_recon(
        &self,
        store: &str,
        export_seq: i64,
    ) -> Result<Vec<(ReconRecord, bool)>, DbError> {
        let rows = sqlx::query(AssertSqlSafe(self.sql(
            "SELECT record, revised FROM fe_export_recon WHERE store_id = $1 AND export_seq = $2 \
             ORDER BY business_date, device_id",
        )))
        .bind(store.to_string())
        .bind(export_seq)
        .fetch_all(self.pool())
        .await?;
        rows.iter()
            .map(|r| {
                let record: String = r.try_get(0)?;
                Ok((serde_json::from_str(&record)?, r.try_get::<i64, _>(1)? != 0))
            })
            .collect()
    }

    /// The latest reported record of every device-day of a store (what a later export revises).
    pub async fn latest_reported(&self, store: Option<&str>) -> Result<Vec<ReconRecord>, DbError> {
        let rows = sqlx::query(AssertSqlSafe(self.sql(
            "SELECT r.record FROM fe_export_recon r WHERE ($1 = '' OR r.store_id = $2) \
             AND r.export_seq = (SELECT MAX(x.export_seq) FROM fe_export_recon x \
             WHERE x.store_id = r.store_id AND x.business_date = r.business_date \
             AND x.device_id = r.device_id) ORDER BY r.store_id, r.business_date, r.device_id",
        )))
        .bind(store.unwrap_or("").to_string())
        .bind(store.unwrap_or("").to_string())
        .fetch_all(self.pool())
        .await?;
        rows.iter()
            .map(|r| Ok(serde_json::from_str(&r.try_get::<String, _>(0)?)?))
            .collect()
    }
}
