//! The consumer offsets a service's database holds: a table of the next offset per
//! (topic, partition) ([`OffsetTable`]), advanced by every batch inside the batch's transaction and
//! read when partitions are assigned. The service's migration creates the table with this shape:
//!
//! ```sql
//! CREATE TABLE <name> (
//!     topic           TEXT   NOT NULL,
//!     kafka_partition BIGINT NOT NULL,
//!     next_offset     BIGINT NOT NULL,
//!     PRIMARY KEY (topic, kafka_partition)
//! );
//! ```
//!
//! Delivery guarantee: the database, not Kafka, is the source of truth for progress: effects and
//! offsets commit together, and offsets only move forward (a late batch from a partition's previous
//! owner cannot move them back).

use std::collections::BTreeMap;

use sqlx::{AnyConnection, AssertSqlSafe, Row};

use super::{Backend, RowsStatement, SqlError};

/// One table of next offsets per (topic, partition), by name (e.g. `cd_offset`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OffsetTable {
    /// The table's name, as the service's migration created it.
    name: String,
}

impl OffsetTable {
    pub fn new(name: impl Into<String>) -> Self {
        OffsetTable { name: name.into() }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Next offset per partition stored for `topic`.
    pub async fn read(
        &self,
        conn: &mut AnyConnection,
        topic: &str,
    ) -> Result<BTreeMap<i32, i64>, SqlError> {
        let sql = format!(
            "SELECT kafka_partition, next_offset FROM {} WHERE topic = $1",
            self.name
        );
        let rows = sqlx::query(AssertSqlSafe(sql))
            .bind(topic)
            .fetch_all(&mut *conn)
            .await?;
        let offsets = rows
            .iter()
            .map(|r| {
                let partition: i64 = r.try_get(0)?;
                let next: i64 = r.try_get(1)?;
                Ok((partition as i32, next))
            })
            .collect::<Result<_, sqlx::Error>>()?;
        Ok(offsets)
    }

    /// Records `next` (next offset per partition of `topic`), on the batch's transaction. A stored
    /// offset already further along is kept.
    pub async fn advance(
        &self,
        conn: &mut AnyConnection,
        backend: Backend,
        topic: &str,
        next: &BTreeMap<i32, i64>,
    ) -> Result<(), SqlError> {
        let stmt = RowsStatement::new(
            format!(
                "INSERT INTO {} AS t (topic, kafka_partition, next_offset)",
                self.name
            ),
            3,
            "ON CONFLICT (topic, kafka_partition) DO UPDATE SET \
             next_offset = CASE WHEN excluded.next_offset > t.next_offset \
             THEN excluded.next_offset ELSE t.next_offset END",
        );
        let rows: Vec<(i64, i64)> = next.iter().map(|(p, o)| (i64::from(*p), *o)).collect();
        stmt.run(conn, backend, usize::MAX, &rows, |q, (p, o)| {
            q.bind(topic.to_string()).bind(*p).bind(*o)
        })
        .await?;
        Ok(())
    }

    /// Forgets every stored offset (a test or drill: the next run reads its topics from the
    /// beginning, and the service's gate must refuse every event already applied).
    pub async fn clear(&self, conn: &mut AnyConnection) -> Result<(), SqlError> {
        sqlx::query(AssertSqlSafe(format!("DELETE FROM {}", self.name)))
            .execute(&mut *conn)
            .await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sql::{DatabaseConfig, connect};

    /// Offsets are stored per (topic, partition), only move forward, and commit with the batch.
    #[tokio::test]
    async fn offsets_only_move_forward_and_commit_with_the_batch() {
        let dir = tempfile::tempdir().unwrap();
        let db = connect(&DatabaseConfig {
            url: dir.path().join("o.db").display().to_string(),
            ..DatabaseConfig::default()
        })
        .await
        .unwrap();
        sqlx::query(
            "CREATE TABLE svc_offset (topic TEXT NOT NULL, kafka_partition BIGINT NOT NULL, \
             next_offset BIGINT NOT NULL, PRIMARY KEY (topic, kafka_partition))",
        )
        .execute(db.pool())
        .await
        .unwrap();
        let table = OffsetTable::new("svc_offset");
        // One batch transaction advancing `offsets` of `topic`, committed or rolled back.
        let batch = async |topic: &str, offsets: &[(i32, i64)], commit: bool| {
            let mut tx = db.pool().begin().await.unwrap();
            let next = offsets.iter().copied().collect();
            table
                .advance(&mut tx, db.backend(), topic, &next)
                .await
                .unwrap();
            if commit {
                tx.commit().await.unwrap();
            } else {
                tx.rollback().await.unwrap();
            }
        };
        batch("a", &[(0, 10), (1, 5)], true).await;
        batch("b", &[(0, 7)], true).await;
        batch("a", &[(0, 3), (1, 6)], true).await;
        batch("a", &[(0, 99)], false).await;

        let mut conn = db.pool().acquire().await.unwrap();
        assert_eq!(
            table.read(&mut conn, "a").await.unwrap(),
            BTreeMap::from([(0, 10), (1, 6)])
        );
        assert_eq!(
            table.read(&mut conn, "b").await.unwrap(),
            BTreeMap::from([(0, 7)])
        );
        table.clear(&mut conn).await.unwrap();
        assert!(table.read(&mut conn, "a").await.unwrap().is_empty());
    }
}
