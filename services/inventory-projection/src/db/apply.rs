//! The batch transaction ([`Db::apply`]): the gate, then one upsert per projected table (one small
//! function each, its SQL in `sql/<table>.sql`), then the offsets, then COMMIT.
//!
//! Delivery guarantee: exactly-once effects. One batch = one transaction that inserts the batch's
//! event ids into the gate (`ON CONFLICT DO NOTHING RETURNING`), applies only the events the gate
//! admitted, and upserts the next offset per partition. Either all of it commits or none of it does;
//! a redelivered event is refused by the gate and changes nothing.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use rustc_hash::FxHashSet as HashSet;
use sqlx::any::AnyRow;
use sqlx::{AnyConnection, Row};
use tillstream_runtime::fault::Hold;
use tillstream_runtime::sql::AnyQuery;

use super::multirow::upsert;
use super::offsets::offset_table;
use super::sets::Color;
use super::{Db, DbError};
use crate::config::FaultConfig;
use crate::model::{
    self, DayRow, Delta, Envelope, GateRow, MovementRow, ProjectionParams, ReservationRow,
    SalesRow, StockDelta, SyncRow,
};

/// Where a batch goes: the live table set (locks the state row, so never during a switch) or a
/// given colour (the rebuild's inactive set).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    Live,
    Set(Color),
}

/// What one batch transaction did.
#[derive(Debug, Clone, Default)]
pub struct Applied {
    /// The set the batch wrote.
    pub color: Option<Color>,
    /// Events the gate admitted (not seen before).
    pub new_events: usize,
    /// Events in the batch the gate refused (already applied).
    pub duplicates: usize,
    /// Rows written (gate rows and every table's delta rows).
    pub rows: usize,
    /// Stock rows this batch left below zero.
    pub negative_rows: usize,
    /// BEGIN to COMMIT.
    pub db_time: Duration,
    /// Admitted events per event type.
    pub by_kind: Vec<(&'static str, u64)>,
}

impl Db {
    /// Applies a batch (events in stream order) and records `next_offsets` in one transaction.
    pub async fn apply(
        &self,
        target: Target,
        topic: &str,
        batch: &[Envelope],
        next_offsets: &BTreeMap<i32, i64>,
        params: &ProjectionParams,
        fault: &FaultConfig,
    ) -> Result<Applied, DbError> {
        let t0 = Instant::now();
        let mut tx = self.pool().begin().await?;
        let color = match target {
            Target::Live => Self::lock_state(&mut tx).await?,
            Target::Set(c) => c,
        };
        let mut gate = model::gate_rows(batch);
        // Key order: the B-tree inserts walk the index left to right instead of at random.
        gate.sort_unstable_by(|a, b| a.event_id.cmp(b.event_id));
        let admitted = self.insert_gate(&mut tx, color, &gate).await?;
        let fresh: Vec<&Envelope> = batch
            .iter()
            .filter(|e| admitted.contains(&(i64::from(e.partition), e.offset)))
            .collect();
        let mut delta =
            model::project(&fresh, params).map_err(|e| DbError::Rejected(e.to_string()))?;
        delta
            .movements
            .sort_unstable_by(|a, b| (a.event_id, a.line_no).cmp(&(b.event_id, b.line_no)));
        let negative_rows = self.write_delta(&mut tx, color, &delta).await?;
        offset_table(color)
            .advance(&mut tx, self.backend(), topic, next_offsets)
            .await?;
        if fault.hold_batch_open_ms > 0 && !fresh.is_empty() {
            hold_open(fault).await;
        }
        tx.commit().await?;
        Ok(Applied {
            by_kind: count_by_kind(&fresh),
            color: Some(color),
            new_events: fresh.len(),
            duplicates: batch.len() - fresh.len(),
            rows: delta.rows() + gate.len(),
            negative_rows,
            db_time: t0.elapsed(),
        })
    }

    /// Inserts the gate rows; returns the (partition, offset) of the events admitted.
    async fn insert_gate(
        &self,
        conn: &mut AnyConnection,
        color: Color,
        gate: &[GateRow<'_>],
    ) -> Result<HashSet<(i64, i64)>, DbError> {
        let stmt = upsert(include_str!("sql/applied_event.sql"), Some(color));
        let applied_at_ms = tillstream_runtime::clock::now_ms();
        let rows = self
            .exec_rows(conn, &stmt, gate, |q, r| {
                q.bind(r.event_id)
                    .bind(r.store_id)
                    .bind(r.event_type)
                    .bind(r.partition)
                    .bind(r.offset)
                    .bind(applied_at_ms)
            })
            .await?;
        rows.iter()
            .map(|r| Ok((r.try_get::<i64, _>(0)?, r.try_get::<i64, _>(1)?)))
            .collect()
    }

    /// Writes a batch's deltas, table by table; returns how many stock rows it left below zero.
    async fn write_delta(
        &self,
        conn: &mut AnyConnection,
        color: Color,
        d: &Delta<'_>,
    ) -> Result<usize, DbError> {
        self.write_movements(conn, color, &d.movements).await?;
        let below = self.write_stock(conn, color, &d.stock).await?;
        self.write_sales(conn, color, &d.sales).await?;
        self.write_reservations(conn, color, &d.reservations)
            .await?;
        self.write_sync(conn, color, &d.sync).await?;
        self.write_days(conn, color, &d.days).await?;
        Ok(below)
    }

    async fn write_movements(
        &self,
        conn: &mut AnyConnection,
        color: Color,
        rows: &[MovementRow<'_>],
    ) -> Result<(), DbError> {
        let stmt = upsert(include_str!("sql/stock_movement.sql"), Some(color));
        self.exec_rows(conn, &stmt, rows, |q, m| {
            q.bind(m.event_id)
                .bind(m.line_no)
                .bind(m.store_id)
                .bind(m.sku)
                .bind(m.movement)
                .bind(m.qty_delta)
                .bind(m.counted_qty)
                .bind(m.occurred_at)
                .bind(m.partition)
                .bind(m.offset)
        })
        .await?;
        Ok(())
    }

    /// Stock: rows that only add, then rows a blind count overwrote (a different conflict rule).
    /// Returns the rows left below zero.
    async fn write_stock(
        &self,
        conn: &mut AnyConnection,
        color: Color,
        rows: &[StockDelta<'_>],
    ) -> Result<usize, DbError> {
        fn bind<'q>(q: AnyQuery<'q>, s: &&StockDelta<'_>) -> AnyQuery<'q> {
            let on_hand = s.set.unwrap_or(0).saturating_add(s.add);
            q.bind(s.store_id)
                .bind(s.sku)
                .bind(on_hand)
                .bind(s.moves)
                .bind(s.last_event_id)
                .bind(s.last_occurred_at)
                .bind(i64::from(on_hand < 0))
        }
        let (adds, sets): (Vec<_>, Vec<_>) = rows.iter().partition(|s| s.set.is_none());
        let add = upsert(include_str!("sql/stock_add.sql"), Some(color));
        let set = upsert(include_str!("sql/stock_set.sql"), Some(color));
        let mut below = count_flagged(&self.exec_rows(conn, &add, &adds, bind).await?)?;
        below += count_flagged(&self.exec_rows(conn, &set, &sets, bind).await?)?;
        Ok(below)
    }

    async fn write_sales(
        &self,
        conn: &mut AnyConnection,
        color: Color,
        rows: &[SalesRow<'_>],
    ) -> Result<(), DbError> {
        let stmt = upsert(include_str!("sql/sales_hourly.sql"), Some(color));
        self.exec_rows(conn, &stmt, rows, |q, s| {
            q.bind(s.store_id)
                .bind(s.sku)
                .bind(s.hour_start)
                .bind(s.currency)
                .bind(s.d.qty_sold)
                .bind(s.d.gross)
                .bind(s.d.discounts)
                .bind(s.d.tax)
                .bind(s.d.net)
                .bind(s.d.qty_returned)
                .bind(s.d.refunded)
                .bind(s.d.refunded_tax)
                .bind(s.d.sale_lines)
                .bind(s.d.refund_lines)
        })
        .await?;
        Ok(())
    }

    async fn write_reservations(
        &self,
        conn: &mut AnyConnection,
        color: Color,
        rows: &[ReservationRow<'_>],
    ) -> Result<(), DbError> {
        let stmt = upsert(include_str!("sql/reservation.sql"), Some(color));
        self.exec_rows(conn, &stmt, rows, |q, r| {
            q.bind(r.store_id)
                .bind(r.reservation_id)
                .bind(r.sku)
                .bind(r.status())
                .bind(r.requested_qty)
                .bind(r.granted_qty)
                .bind(r.released_qty)
                .bind(r.requested_at)
                .bind(r.granted_at)
                .bind(r.granted_by)
                .bind(r.expires_at)
                .bind(r.released_at)
                .bind(r.release_reason)
                .bind(r.order_ref)
        })
        .await?;
        Ok(())
    }

    async fn write_sync(
        &self,
        conn: &mut AnyConnection,
        color: Color,
        rows: &[SyncRow<'_>],
    ) -> Result<(), DbError> {
        let stmt = upsert(include_str!("sql/store_sync.sql"), Some(color));
        self.exec_rows(conn, &stmt, rows, |q, s| {
            q.bind(s.store_id)
                .bind(s.last_event_at)
                .bind(s.last_seen_at)
                .bind(s.last_lag_ms)
                .bind(s.max_lag_ms)
                .bind(s.last_business_date)
                .bind(s.events)
                .bind(s.offline_events)
                .bind(s.last_event_id)
        })
        .await?;
        Ok(())
    }

    async fn write_days(
        &self,
        conn: &mut AnyConnection,
        color: Color,
        rows: &[DayRow<'_>],
    ) -> Result<(), DbError> {
        let stmt = upsert(include_str!("sql/store_day.sql"), Some(color));
        self.exec_rows(conn, &stmt, rows, |q, r| {
            q.bind(r.store_id)
                .bind(r.business_date)
                .bind(r.d.events)
                .bind(r.d.offline_events)
                .bind(r.d.orders)
                .bind(r.d.refunds)
                .bind(r.d.adjustments)
        })
        .await?;
        Ok(())
    }
}

/// Fault injection: keeps the batch transaction open (every row written, before COMMIT).
async fn hold_open(fault: &FaultConfig) {
    Hold::new(fault.hold_batch_open_ms, fault.marker_file.as_ref())
        .hold("holding the batch transaction open")
        .await;
}

/// Admitted events per event type, in first-seen order.
fn count_by_kind(fresh: &[&Envelope]) -> Vec<(&'static str, u64)> {
    let mut by_kind: Vec<(&'static str, u64)> = Vec::new();
    for e in fresh {
        let k = e.event.kind().name();
        match by_kind.iter_mut().find(|(n, _)| *n == k) {
            Some((_, c)) => *c += 1,
            None => by_kind.push((k, 1)),
        }
    }
    by_kind
}

/// Rows whose first column (a 0/1 flag) is set.
fn count_flagged(rows: &[AnyRow]) -> Result<usize, DbError> {
    let mut n = 0;
    for r in rows {
        if r.try_get::<i64, _>(0)? != 0 {
            n += 1;
        }
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every upsert template splits into head, rows and tail, and names as many columns as its
    /// table has (the binds above follow the same column order).
    #[test]
    fn every_upsert_template_names_its_table_columns() {
        use crate::db::sets::TABLES;
        let columns = |table: &str| {
            TABLES
                .iter()
                .find(|t| t.name == table)
                .map(|t| t.columns.len())
                .unwrap_or_else(|| panic!("{table} is not a projected table"))
                // The gate's applied_at_ms is written but not dumped (a replay writes other times).
                + usize::from(table == "applied_event")
        };
        for (template, table) in [
            (include_str!("sql/applied_event.sql"), "applied_event"),
            (include_str!("sql/stock_movement.sql"), "stock_movement"),
            (include_str!("sql/stock_add.sql"), "stock"),
            (include_str!("sql/stock_set.sql"), "stock"),
            (include_str!("sql/sales_hourly.sql"), "sales_hourly"),
            (include_str!("sql/reservation.sql"), "reservation"),
            (include_str!("sql/store_sync.sql"), "store_sync"),
            (include_str!("sql/store_day.sql"), "store_day"),
        ] {
            let stmt = upsert(template, Some(Color::Blue));
            assert!(!format!("{stmt:?}").contains("{color}"), "{stmt:?}");
            assert!(format!("{stmt:?}").contains(&format!("blue_{table}")));
            assert_eq!(stmt.ncols(), columns(table), "{table}");
        }
    }
}
