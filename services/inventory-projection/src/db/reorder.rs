//! Writing reorder points (parsed by `crate::reorder_points`) into `reorder_point`, which belongs to
//! no table set: people maintain it, the stream never does.
//!
//! Delivery guarantee: one transaction per file: every row is written or none is.

use super::multirow::upsert;
use super::{Db, DbError};
use crate::reorder_points::ReorderPoint;

impl Db {
    /// Upserts `rows` (the file's values replace what was there). Returns the rows written.
    pub async fn upsert_reorder_points(&self, rows: &[ReorderPoint]) -> Result<usize, DbError> {
        let stmt = upsert(include_str!("sql/reorder_point.sql"), None);
        let mut tx = self.pool().begin().await?;
        self.exec_rows(&mut tx, &stmt, rows, |q, r| {
            q.bind(r.store_id.clone())
                .bind(r.sku.clone())
                .bind(r.reorder_point)
                .bind(r.reorder_qty)
        })
        .await?;
        tx.commit().await?;
        Ok(rows.len())
    }
}
