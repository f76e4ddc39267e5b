//! The consumer offsets the database holds: the next offset per (topic, partition) of each table
//! set, written by every batch ([`Db::upsert_offsets`], inside the batch's transaction) and read on
//! partition assignment ([`Db::live_offsets`]).
//!
//! Delivery guarantee: the database, not Kafka, is the source of truth for progress: effects and
//! offsets commit together, and offsets only move forward.

use std::collections::BTreeMap;

use sqlx::{AnyConnection, AssertSqlSafe, Row};

use super::multirow::Upsert;
use super::sets::Color;
use super::{Db, DbError};

impl Db {
    /// Next offset per partition stored in `color` for `topic`.
    pub async fn offsets(&self, color: Color, topic: &str) -> Result<BTreeMap<i32, i64>, DbError> {
        let mut conn = self.pool.acquire().await?;
        offsets_on(&mut conn, color, topic).await
    }

    /// Offsets of the active set (read by the partition hook on assignment).
    pub async fn live_offsets(&self, topic: &str) -> Result<BTreeMap<i32, i64>, DbError> {
        let color = self.active_color().await?;
        self.offsets(color, topic).await
    }

    /// Forgets the stored offsets of a set (test and drill helper: the next run re-reads the topic
    /// from the beginning, and the gate must refuse every event).
    pub async fn reset_offsets(&self, color: Color) -> Result<(), DbError> {
        sqlx::query(AssertSqlSafe(format!(
            "DELETE FROM {color}_consumer_offset"
        )))
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Records the next offset per partition in the batch's transaction.
    pub(crate) async fn upsert_offsets(
        &self,
        conn: &mut AnyConnection,
        color: Color,
        topic: &str,
        next: &BTreeMap<i32, i64>,
    ) -> Result<(), DbError> {
        let stmt = Upsert::new(include_str!("sql/consumer_offset.sql"), Some(color));
        let rows: Vec<(i64, i64)> = next.iter().map(|(p, o)| (i64::from(*p), *o)).collect();
        self.exec_rows(conn, &stmt, &rows, |q, (p, o)| {
            q.bind(topic.to_string()).bind(*p).bind(*o)
        })
        .await?;
        Ok(())
    }
}

/// [`Db::offsets`] on a given connection (inside a transaction).
pub(crate) async fn offsets_on(
    conn: &mut AnyConnection,
    color: Color,
    topic: &str,
) -> Result<BTreeMap<i32, i64>, DbError> {
    let sql = format!(
        "SELECT kafka_partition, next_offset FROM {color}_consumer_offset WHERE topic = $1"
    );
    let rows = sqlx::query(AssertSqlSafe(sql))
        .bind(topic)
        .fetch_all(&mut *conn)
        .await?;
    rows.iter()
        .map(|r| {
            let p: i64 = r.try_get(0)?;
            let o: i64 = r.try_get(1)?;
            Ok((p as i32, o))
        })
        .collect()
}
