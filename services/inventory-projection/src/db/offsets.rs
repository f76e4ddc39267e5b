//! The consumer offsets the database holds: the next offset per (topic, partition) of each table
//! set (`<color>_consumer_offset`, the runtime's `OffsetTable` shape), advanced by every batch
//! inside the batch's transaction (`apply`) and read on partition assignment ([`Db::live_offsets`]).
//!
//! Delivery guarantee: the database, not Kafka, is the source of truth for progress: effects and
//! offsets commit together, and offsets only move forward.

use std::collections::BTreeMap;

use sqlx::AnyConnection;
use tillstream_runtime::sql::OffsetTable;

use super::sets::Color;
use super::{Db, DbError};

/// The offsets table of table set `color`.
pub(crate) fn offset_table(color: Color) -> OffsetTable {
    OffsetTable::new(format!("{color}_consumer_offset"))
}

impl Db {
    /// Next offset per partition stored in `color` for `topic`.
    pub async fn offsets(&self, color: Color, topic: &str) -> Result<BTreeMap<i32, i64>, DbError> {
        let mut conn = self.pool().acquire().await?;
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
        let mut conn = self.pool().acquire().await?;
        Ok(offset_table(color).clear(&mut conn).await?)
    }
}

/// [`Db::offsets`] on a given connection (inside a transaction).
pub(crate) async fn offsets_on(
    conn: &mut AnyConnection,
    color: Color,
    topic: &str,
) -> Result<BTreeMap<i32, i64>, DbError> {
    Ok(offset_table(color).read(conn, topic).await?)
}
