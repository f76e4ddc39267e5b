//! The batch transaction: the events the gate admits (`fe_event`), their ledger lines, their day
//! closes, the store-days they touch (a day already exported makes its store wait for a delivery of
//! late lines), and the next offset per input partition.
//!
//! Delivery guarantee: exactly-once effects: all of it commits or none of it does; an event already
//! in the gate is never booked twice (the caller pre-filters with [`Db::known`], the insert ignores
//! what is there).

use std::collections::{BTreeMap, BTreeSet, HashSet};

use sqlx::{Acquire, AssertSqlSafe, Row};

use super::rows::{V, in_list, insert_rows, ph};
use super::{Db, DbError, OFFSETS};
use crate::core::{CloseFigures, Line};

/// One admitted event as the ledger stores it.
#[derive(Debug, Clone)]
pub struct Booked {
    pub event_id: String,
    pub store_id: String,
    pub device_id: String,
    pub seq: i64,
    /// -1 for events without a business date (stock, reservations).
    pub business_date: i32,
    /// sale, refund, loyalty, day_close, compensation, other.
    pub kind: &'static str,
    pub order_ref: String,
    pub currency: String,
    /// The dead-letter reason of an event that could not be booked.
    pub refused: Option<&'static str>,
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    pub lines: Vec<Line>,
    pub close: Option<CloseFigures>,
}

impl Booked {
    /// Whether the event belongs to a store-day (money moved, or a till closed its day).
    fn touches_store_day(&self) -> bool {
        self.business_date >= 0 && (!self.lines.is_empty() || self.close.is_some())
    }
}

/// What a batch transaction did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Applied {
    pub events: usize,
    pub lines: usize,
    /// Lines booked for store-days already exported (adjustments of a later export).
    pub late_lines: usize,
}

impl Db {
    /// The ids among `ids` the gate already holds.
    pub async fn known(&self, ids: &[&str]) -> Result<HashSet<String>, DbError> {
        let mut out = HashSet::new();
        let mut conn = self.pool().acquire().await?;
        for chunk in ids.chunks(500) {
            let sql = format!(
                "SELECT event_id FROM fe_event WHERE event_id IN {}",
                in_list(self.backend(), 1, chunk.len())
            );
            let mut q = sqlx::query(AssertSqlSafe(sql));
            for id in chunk {
                q = q.bind(id.to_string());
            }
            for row in q.fetch_all(&mut *conn).await? {
                out.insert(row.try_get::<String, _>(0)?);
            }
        }
        Ok(out)
    }

    /// Applies one batch: `events` (already filtered by [`Db::known`]) and the next offset per
    /// (topic, partition). `now_ms` stamps when late lines started waiting.
    pub async fn apply(
        &self,
        events: &[Booked],
        next: &BTreeMap<(String, i32), i64>,
        now_ms: i64,
    ) -> Result<Applied, DbError> {
        let b = self.backend();
        let mut conn = self.pool().acquire().await?;
        let mut tx = conn.begin().await?;
        let mut applied = Applied {
            events: events.len(),
            ..Applied::default()
        };
        let event_rows = event_rows(events);
        insert_rows(
            &mut tx,
            b,
            self.rows_per_statement,
            "INSERT INTO fe_event (event_id, store_id, device_id, seq, business_date, kind, \
             order_ref, currency, n_lines, refused, topic, kafka_partition, kafka_offset)",
            "ON CONFLICT (event_id) DO NOTHING",
            13,
            &event_rows,
        )
        .await?;
        let line_rows = line_rows(events);
        applied.lines = line_rows.len();
        insert_rows(
            &mut tx,
            b,
            self.rows_per_statement,
            "INSERT INTO fe_line (event_id, line_no, source, reference, sku, tender, account_role, \
             account_code, debit_minor, credit_minor)",
            "ON CONFLICT (event_id, line_no) DO NOTHING",
            10,
            &line_rows,
        )
        .await?;
        let close_rows: Vec<Vec<V>> = events
            .iter()
            .filter_map(|e| e.close.as_ref().map(|c| (e, c)))
            .map(|(e, c)| {
                Ok(vec![
                    e.event_id.as_str().into(),
                    e.store_id.as_str().into(),
                    e.business_date.into(),
                    e.device_id.as_str().into(),
                    c.seq.into(),
                    c.first_seq.into(),
                    c.last_seq.into(),
                    serde_json::to_string(&c.figures)?.into(),
                ])
            })
            .collect::<Result<_, DbError>>()?;
        insert_rows(
            &mut tx,
            b,
            self.rows_per_statement,
            "INSERT INTO fe_day_close (event_id, store_id, business_date, device_id, seq, first_seq, \
             last_seq, figures)",
            "ON CONFLICT (event_id) DO NOTHING",
            8,
            &close_rows,
        )
        .await?;

        // Store-days touched; those already exported make the store wait for a late delivery.
        let mut days: BTreeMap<(String, i32), usize> = BTreeMap::new();
        for e in events.iter().filter(|e| e.touches_store_day()) {
            *days
                .entry((e.store_id.clone(), e.business_date))
                .or_default() += e.lines.len();
        }
        let day_rows: Vec<Vec<V>> = days
            .keys()
            .map(|(s, d)| vec![s.as_str().into(), (*d).into(), 0i64.into()])
            .collect();
        insert_rows(
            &mut tx,
            b,
            self.rows_per_statement,
            "INSERT INTO fe_store_day (store_id, business_date, exported)",
            "ON CONFLICT (store_id, business_date) DO NOTHING",
            3,
            &day_rows,
        )
        .await?;
        let mut late_stores = BTreeSet::new();
        for ((store, date), lines) in &days {
            let sql = format!(
                "SELECT exported FROM fe_store_day WHERE store_id = {} AND business_date = {}",
                ph(b, 1),
                ph(b, 2)
            );
            let exported: i64 = sqlx::query(AssertSqlSafe(sql))
                .bind(store.clone())
                .bind(i64::from(*date))
                .fetch_one(&mut *tx)
                .await?
                .try_get(0)?;
            if exported != 0 {
                applied.late_lines += lines;
                late_stores.insert(store.clone());
            }
        }
        for store in late_stores {
            let sql = format!(
                "INSERT INTO fe_store (store_id, pending_since_ms) VALUES ({}, {}) \
                 ON CONFLICT (store_id) DO UPDATE SET pending_since_ms = \
                 COALESCE(fe_store.pending_since_ms, excluded.pending_since_ms)",
                ph(b, 1),
                ph(b, 2)
            );
            sqlx::query(AssertSqlSafe(sql))
                .bind(store)
                .bind(now_ms)
                .execute(&mut *tx)
                .await?;
        }

        let mut by_topic: BTreeMap<&str, BTreeMap<i32, i64>> = BTreeMap::new();
        for ((t, p), o) in next {
            by_topic.entry(t.as_str()).or_default().insert(*p, *o);
        }
        for (topic, next) in &by_topic {
            OFFSETS.advance(&mut tx, b, topic, next).await?;
        }
        tx.commit().await?;
        Ok(applied)
    }

    /// The bench's baseline: the same event and line rows as [`Db::apply`] writes, inserted in one
    /// transaction with plain multi-row INSERTs (no gate, no store-days, no offsets).
    pub async fn insert_plain(&self, events: &[Booked]) -> Result<(), DbError> {
        let mut conn = self.pool().acquire().await?;
        let mut tx = conn.begin().await?;
        let event_rows = event_rows(events);
        insert_rows(
            &mut tx,
            self.backend(),
            self.rows_per_statement,
            "INSERT INTO bench_event (event_id, store_id, device_id, seq, business_date, kind, \
             order_ref, currency, n_lines, refused, topic, kafka_partition, kafka_offset)",
            "",
            13,
            &event_rows,
        )
        .await?;
        let line_rows = line_rows(events);
        insert_rows(
            &mut tx,
            self.backend(),
            self.rows_per_statement,
            "INSERT INTO bench_line (event_id, line_no, source, reference, sku, tender, \
             account_role, account_code, debit_minor, credit_minor)",
            "",
            10,
            &line_rows,
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// The next offset per partition of `topic` the database holds.
    pub async fn offsets(&self, topic: &str) -> Result<BTreeMap<i32, i64>, DbError> {
        let mut conn = self.pool().acquire().await?;
        Ok(OFFSETS.read(&mut conn, topic).await?)
    }
}

/// `fe_event` rows (the gate's columns) of `events`, in column order.
fn event_rows(events: &[Booked]) -> Vec<Vec<V>> {
    // In key order: SQLite appends to the key's B-tree instead of seeking a random page per row.
    let mut sorted: Vec<&Booked> = events.iter().collect();
    sorted.sort_unstable_by(|a, b| a.event_id.cmp(&b.event_id));
    sorted
        .into_iter()
        .map(|e| {
            vec![
                e.event_id.as_str().into(),
                e.store_id.as_str().into(),
                e.device_id.as_str().into(),
                e.seq.into(),
                e.business_date.into(),
                e.kind.into(),
                e.order_ref.as_str().into(),
                e.currency.as_str().into(),
                (e.lines.len() as i64).into(),
                e.refused.unwrap_or("").into(),
                e.topic.as_str().into(),
                e.partition.into(),
                e.offset.into(),
            ]
        })
        .collect()
}

/// `fe_line` rows (the double-entry lines) of `events`, in column order.
fn line_rows(events: &[Booked]) -> Vec<Vec<V>> {
    // In key order (event_id, line_no), like the events.
    let mut sorted: Vec<&Line> = events.iter().flat_map(|e| e.lines.iter()).collect();
    sorted.sort_unstable_by(|a, b| (&a.event_id, a.line_no).cmp(&(&b.event_id, b.line_no)));
    sorted
        .into_iter()
        .map(|l| {
            vec![
                l.event_id.as_str().into(),
                i64::from(l.line_no).into(),
                l.source.name().into(),
                l.reference.as_str().into(),
                l.sku.as_str().into(),
                l.tender.as_str().into(),
                l.role.name().into(),
                l.account_code.as_str().into(),
                l.debit_minor.into(),
                l.credit_minor.into(),
            ]
        })
        .collect()
}
