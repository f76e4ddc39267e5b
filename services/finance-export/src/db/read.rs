//! What the exporter, reconciliation and `tillctl finance` read from the ledger: store-days and
//! who traded and closed on them, a device-day's booked figures, closes, seqs and notes, and the
//! lines of an export or a day. Read-only; no delivery guarantee of its own.

use std::collections::{BTreeMap, BTreeSet};

use sqlx::any::AnyRow;
use sqlx::{AssertSqlSafe, Row};

use super::rows::ph;
use super::{Db, DbError};
use crate::core::{CloseFigures, Figures, StoreDay, TENDER_METHODS, tender_name};

/// One ledger line with its event's coordinates, as the day files and `tillctl` show it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LedgerLine {
    pub business_date: i32,
    pub device_id: String,
    pub seq: i64,
    pub event_id: String,
    pub line_no: i64,
    pub source: String,
    pub reference: String,
    pub sku: String,
    pub tender: String,
    pub account_role: String,
    pub account_code: String,
    pub debit_minor: i64,
    pub credit_minor: i64,
    pub currency: String,
    pub topic: String,
    pub partition: i64,
    pub offset: i64,
    /// The store's export that delivered it (None: not yet).
    pub export_seq: Option<i64>,
}

/// The lines of one export.
pub type ExportLine = LedgerLine;

const LINE_COLUMNS: &str = "e.business_date, e.device_id, e.seq, l.event_id, l.line_no, l.source, \
     l.reference, l.sku, l.tender, l.account_role, l.account_code, l.debit_minor, l.credit_minor, \
     e.currency, e.topic, e.kafka_partition, e.kafka_offset, e.export_seq";
const LINE_ORDER: &str = "ORDER BY e.business_date, e.device_id, e.seq, l.event_id, l.line_no";

fn ledger_line(r: &AnyRow) -> Result<LedgerLine, DbError> {
    Ok(LedgerLine {
        business_date: r.try_get::<i64, _>(0)? as i32,
        device_id: r.try_get(1)?,
        seq: r.try_get(2)?,
        event_id: r.try_get(3)?,
        line_no: r.try_get(4)?,
        source: r.try_get(5)?,
        reference: r.try_get(6)?,
        sku: r.try_get(7)?,
        tender: r.try_get(8)?,
        account_role: r.try_get(9)?,
        account_code: r.try_get(10)?,
        debit_minor: r.try_get(11)?,
        credit_minor: r.try_get(12)?,
        currency: r.try_get(13)?,
        topic: r.try_get(14)?,
        partition: r.try_get(15)?,
        offset: r.try_get(16)?,
        export_seq: r.try_get(17)?,
    })
}

impl Db {
    /// The rows of `sql` over one device-day (`$1` store, `$2` business date, `$3` device).
    async fn device_day_rows(
        &self,
        sql: String,
        store: &str,
        date: i32,
        device: &str,
    ) -> Result<Vec<AnyRow>, DbError> {
        Ok(sqlx::query(AssertSqlSafe(sql))
            .bind(store.to_string())
            .bind(i64::from(date))
            .bind(device.to_string())
            .fetch_all(self.pool())
            .await?)
    }

    pub(crate) fn sql(&self, template: &str) -> String {
        // Templates number their placeholders $1..$n; SQLite takes them positionally as `?`.
        let mut s = template.to_string();
        for n in (1..=9).rev() {
            s = s.replace(&format!("${n}"), &ph(self.backend(), n));
        }
        s
    }

    /// The lines an export delivered, in file order.
    pub async fn export_lines(
        &self,
        store: &str,
        export_seq: i64,
    ) -> Result<Vec<LedgerLine>, DbError> {
        let sql = self.sql(&format!(
            "SELECT {LINE_COLUMNS} FROM fe_line l JOIN fe_event e ON e.event_id = l.event_id \
             WHERE e.store_id = $1 AND e.export_seq = $2 {LINE_ORDER}"
        ));
        let rows = sqlx::query(AssertSqlSafe(sql))
            .bind(store.to_string())
            .bind(export_seq)
            .fetch_all(self.pool())
            .await?;
        rows.iter().map(ledger_line).collect()
    }

    /// Every line booked for a store-day (delivered or not), in file order.
    pub async fn day_lines(&self, store: &str, date: i32) -> Result<Vec<LedgerLine>, DbError> {
        let sql = self.sql(&format!(
            "SELECT {LINE_COLUMNS} FROM fe_line l JOIN fe_event e ON e.event_id = l.event_id \
             WHERE e.store_id = $1 AND e.business_date = $2 {LINE_ORDER}"
        ));
        let rows = sqlx::query(AssertSqlSafe(sql))
            .bind(store.to_string())
            .bind(i64::from(date))
            .fetch_all(self.pool())
            .await?;
        rows.iter().map(ledger_line).collect()
    }

    /// Store-days not exported yet, by store then date.
    pub async fn open_days(&self) -> Result<Vec<(String, i32)>, DbError> {
        let rows = sqlx::query(
            "SELECT store_id, business_date FROM fe_store_day WHERE exported = 0 \
             ORDER BY store_id, business_date",
        )
        .fetch_all(self.pool())
        .await?;
        rows.iter()
            .map(|r| Ok((r.try_get(0)?, r.try_get::<i64, _>(1)? as i32)))
            .collect()
    }

    /// The latest exported business date of a store.
    pub async fn last_exported_day(&self, store: &str) -> Result<Option<i32>, DbError> {
        let sql = self.sql(
            "SELECT MAX(business_date) FROM fe_store_day WHERE store_id = $1 AND exported = 1",
        );
        let v: Option<i64> = sqlx::query(AssertSqlSafe(sql))
            .bind(store.to_string())
            .fetch_one(self.pool())
            .await?
            .try_get(0)?;
        Ok(v.map(|d| d as i32))
    }

    /// Who traded (sale, refund, redemption) and who closed on a store-day.
    pub async fn store_day(&self, store: &str, date: i32) -> Result<StoreDay, DbError> {
        let traded = self.sql(
            "SELECT DISTINCT device_id FROM fe_event WHERE store_id = $1 AND business_date = $2 \
             AND kind IN ('sale', 'refund', 'loyalty')",
        );
        let closed = self.sql(
            "SELECT DISTINCT device_id FROM fe_day_close WHERE store_id = $1 AND business_date = $2",
        );
        let mut day = StoreDay {
            store_id: store.to_string(),
            business_date: date,
            ..StoreDay::default()
        };
        for (sql, set) in [(traded, &mut day.traded), (closed, &mut day.closed)] {
            for r in sqlx::query(AssertSqlSafe(sql))
                .bind(store.to_string())
                .bind(i64::from(date))
                .fetch_all(self.pool())
                .await?
            {
                set.insert(r.try_get(0)?);
            }
        }
        Ok(day)
    }

    /// Stores with lines or closes for exported days waiting, and since when (ms). A store whose
    /// wait was not flagged (a batch that raced an export) is flagged now.
    pub async fn pending_stores(&self, now_ms: i64) -> Result<Vec<(String, i64)>, DbError> {
        // Driven from the exported days, each probing `fe_event_pending` for an unexported line:
        // driven from the events, it read every event of every day each `close.check_every_ms`
        // (issue 16).
        let unflagged = sqlx::query(
            "SELECT d.store_id FROM fe_store_day d WHERE d.exported = 1 AND EXISTS \
             (SELECT 1 FROM fe_event e WHERE e.store_id = d.store_id \
             AND e.business_date = d.business_date AND e.export_seq IS NULL AND e.n_lines > 0) \
             GROUP BY d.store_id",
        )
        .fetch_all(self.pool())
        .await?;
        for r in unflagged {
            let store: String = r.try_get(0)?;
            let sql = self.sql(
                "INSERT INTO fe_store (store_id, pending_since_ms) VALUES ($1, $2) \
                 ON CONFLICT (store_id) DO UPDATE SET pending_since_ms = \
                 COALESCE(fe_store.pending_since_ms, excluded.pending_since_ms)",
            );
            sqlx::query(AssertSqlSafe(sql))
                .bind(store)
                .bind(now_ms)
                .execute(self.pool())
                .await?;
        }
        let rows = sqlx::query(
            "SELECT store_id, pending_since_ms FROM fe_store WHERE pending_since_ms IS NOT NULL \
             ORDER BY store_id",
        )
        .fetch_all(self.pool())
        .await?;
        rows.iter()
            .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
            .collect()
    }

    /// The devices of a store-day: those that traded or closed.
    pub async fn day_devices(&self, store: &str, date: i32) -> Result<BTreeSet<String>, DbError> {
        let day = self.store_day(store, date).await?;
        Ok(day.traded.union(&day.closed).cloned().collect())
    }

    /// The figures the ledger booked for a device-day (None: no sale or refund booked). Sums are
    /// checked: a total beyond 64 bits is an error, never a wrapped number.
    pub async fn booked_figures(
        &self,
        store: &str,
        date: i32,
        device: &str,
    ) -> Result<Option<Figures>, DbError> {
        let counts = self.sql(
            "SELECT kind, COUNT(*) FROM fe_event WHERE store_id = $1 AND business_date = $2 \
             AND device_id = $3 AND kind IN ('sale', 'refund') AND refused = '' GROUP BY kind",
        );
        let mut f = Figures::default();
        let mut any = false;
        for r in self.device_day_rows(counts, store, date, device).await? {
            any = true;
            let kind: String = r.try_get(0)?;
            let n: i64 = r.try_get(1)?;
            match kind.as_str() {
                "sale" => f.order_count = n,
                _ => f.refund_count = n,
            }
        }
        if !any {
            return Ok(None);
        }
        let lines = self.sql(
            "SELECT l.source, l.account_role, l.tender, l.debit_minor, l.credit_minor \
             FROM fe_line l JOIN fe_event e ON e.event_id = l.event_id \
             WHERE e.store_id = $1 AND e.business_date = $2 AND e.device_id = $3 \
             AND e.kind IN ('sale', 'refund')",
        );
        let overflow =
            || DbError::Invalid(format!("{store}/{date}/{device}: a day total overflows"));
        for r in self.device_day_rows(lines, store, date, device).await? {
            let source: String = r.try_get(0)?;
            let role: String = r.try_get(1)?;
            let tender: String = r.try_get(2)?;
            let debit: i64 = r.try_get(3)?;
            let credit: i64 = r.try_get(4)?;
            let add = |slot: &mut i64, v: i64| -> Result<(), DbError> {
                *slot = slot.checked_add(v).ok_or_else(overflow)?;
                Ok(())
            };
            let credit_net = credit.checked_sub(debit).ok_or_else(overflow)?;
            match (source.as_str(), role.as_str()) {
                ("sale", "revenue") => add(&mut f.gross, credit_net)?,
                ("sale", "discounts") => add(&mut f.discounts, -credit_net)?,
                ("sale", "tax_payable") => add(&mut f.tax, credit_net)?,
                ("sale", "tender_clearing") => {
                    add(&mut f.net, -credit_net)?;
                    let i = TENDER_METHODS
                        .iter()
                        .position(|m| tender_name(*m) == tender)
                        .ok_or_else(|| DbError::Invalid(format!("unknown tender {tender}")))?;
                    add(&mut f.tenders[i], -credit_net)?;
                }
                ("refund", "tender_clearing") => add(&mut f.refunds, credit_net)?,
                _ => {}
            }
        }
        Ok(Some(f))
    }

    /// A device-day's closes, in seq order.
    pub async fn closes(
        &self,
        store: &str,
        date: i32,
        device: &str,
    ) -> Result<Vec<CloseFigures>, DbError> {
        let sql = self.sql(
            "SELECT event_id, seq, first_seq, last_seq, figures FROM fe_day_close \
             WHERE store_id = $1 AND business_date = $2 AND device_id = $3 ORDER BY seq, event_id",
        );
        let rows = self.device_day_rows(sql, store, date, device).await?;
        rows.iter()
            .map(|r| {
                Ok(CloseFigures {
                    event_id: r.try_get(0)?,
                    seq: r.try_get(1)?,
                    first_seq: r.try_get(2)?,
                    last_seq: r.try_get(3)?,
                    figures: serde_json::from_str(&r.try_get::<String, _>(4)?)?,
                })
            })
            .collect()
    }

    /// (seq, event id) of a device-day's booked sales and refunds.
    pub async fn day_events(
        &self,
        store: &str,
        date: i32,
        device: &str,
    ) -> Result<Vec<(i64, String)>, DbError> {
        let sql = self.sql(
            "SELECT seq, event_id FROM fe_event WHERE store_id = $1 AND business_date = $2 \
             AND device_id = $3 AND kind IN ('sale', 'refund') AND refused = '' ORDER BY seq",
        );
        let rows = self.device_day_rows(sql, store, date, device).await?;
        rows.iter()
            .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
            .collect()
    }

    /// Every seq of `device` the ledger received in `[from, to]`.
    pub async fn seqs_seen(
        &self,
        device: &str,
        from: i64,
        to: i64,
    ) -> Result<BTreeSet<i64>, DbError> {
        let sql =
            self.sql("SELECT seq FROM fe_event WHERE device_id = $1 AND seq >= $2 AND seq <= $3");
        let rows = sqlx::query(AssertSqlSafe(sql))
            .bind(device.to_string())
            .bind(from)
            .bind(to)
            .fetch_all(self.pool())
            .await?;
        rows.iter().map(|r| Ok(r.try_get(0)?)).collect()
    }

    /// Facts about a device-day reconciliation must mention: events that could not be booked, and
    /// refunds of orders the ledger never received.
    pub async fn day_notes(
        &self,
        store: &str,
        date: i32,
        device: &str,
    ) -> Result<Vec<String>, DbError> {
        let refused = self.sql(
            "SELECT event_id, seq, kind, refused FROM fe_event WHERE store_id = $1 \
             AND business_date = $2 AND device_id = $3 AND refused <> '' ORDER BY seq",
        );
        let mut notes = Vec::new();
        for r in self.device_day_rows(refused, store, date, device).await? {
            let (id, seq, kind, reason): (String, i64, String, String) =
                (r.try_get(0)?, r.try_get(1)?, r.try_get(2)?, r.try_get(3)?);
            notes.push(format!("{kind} {id} (seq {seq}) not booked: {reason}"));
        }
        let unknown = self.sql(
            "SELECT r.event_id, r.seq, r.order_ref FROM fe_event r WHERE r.store_id = $1 \
             AND r.business_date = $2 AND r.device_id = $3 AND r.kind = 'refund' \
             AND NOT EXISTS (SELECT 1 FROM fe_event o WHERE o.store_id = r.store_id \
             AND o.order_ref = r.order_ref AND o.kind = 'sale') ORDER BY r.seq",
        );
        for r in self.device_day_rows(unknown, store, date, device).await? {
            let (id, seq, order): (String, i64, String) =
                (r.try_get(0)?, r.try_get(1)?, r.try_get(2)?);
            notes.push(format!(
                "refund {id} (seq {seq}) refers to order {order}, which the ledger never received"
            ));
        }
        Ok(notes)
    }

    /// Counts of ledger rows (tests and `tillctl`): (events, lines).
    pub async fn counts(&self) -> Result<(i64, i64), DbError> {
        let e: i64 = sqlx::query("SELECT COUNT(*) FROM fe_event")
            .fetch_one(self.pool())
            .await?
            .try_get(0)?;
        let l: i64 = sqlx::query("SELECT COUNT(*) FROM fe_line")
            .fetch_one(self.pool())
            .await?
            .try_get(0)?;
        Ok((e, l))
    }

    /// The stores of the ledger's store-days.
    pub async fn stores(&self) -> Result<Vec<String>, DbError> {
        let rows = sqlx::query("SELECT DISTINCT store_id FROM fe_store_day ORDER BY store_id")
            .fetch_all(self.pool())
            .await?;
        rows.iter().map(|r| Ok(r.try_get(0)?)).collect()
    }

    /// Per store, store-days that are still open (not exported).
    pub async fn open_day_counts(&self) -> Result<BTreeMap<String, i64>, DbError> {
        let rows = sqlx::query(
            "SELECT store_id, COUNT(*) FROM fe_store_day WHERE exported = 0 GROUP BY store_id",
        )
        .fetch_all(self.pool())
        .await?;
        rows.iter()
            .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
            .collect()
    }
}
