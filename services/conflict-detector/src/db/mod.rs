//! The detector's SQL state on PostgreSQL or SQLite (sqlx `Any` through the runtime's shared
//! plumbing, `tillstream_runtime::sql`; `migrations/` holds the schema): the event gate and restore
//! log, input offsets, price lists, the conflict queue, compensations, the reviewers' audit and the
//! outbox. Its own namespace: tables prefixed `cd_`, migrations recorded in
//! `_conflict_detector_migrations`.
//!
//! Delivery guarantee: exactly-once effects. A batch is one transaction ([`Batch`]): the events the
//! gate admits (`ON CONFLICT DO NOTHING`), the verdicts, compensations and outbox records they
//! produced, and the next offset per partition; all of it commits or none of it does. The outbox is
//! published after the commit and deleted once the broker acknowledged it.
//!
//! # Layout
//! - this file: [`Db`] (connect + migrate, the reads the batch loop and the publisher make), the
//!   outbox rows, [`DbError`];
//! - `log`: the restore log's row format ([`EventRow`], [`LogChunk`]);
//! - `queue`: the review queue's reads ([`ConflictRow`], [`Filter`], [`ConflictDetail`]);
//! - `batch`: the batch transaction's writes ([`Batch`]).

mod batch;
mod log;
mod queue;

use std::collections::BTreeMap;
use std::sync::LazyLock;

use rustc_hash::FxHashMap as HashMap;
use sqlx::migrate::{Migration, MigrationType};
use sqlx::{AssertSqlSafe, Row, SqlSafeStr};
use tillstream_runtime::sql::{self, Database, OffsetTable};

pub use self::batch::Batch;
pub use self::log::{EventRow, LogChunk, decode_log, encode_log};
pub use self::queue::{
    AuditRow, ConflictDetail, ConflictRow, Filter, Resolution, initial_status, status,
};
pub use tillstream_runtime::sql::{Backend, DatabaseConfig, resolve_url};

use crate::core::{Rule, Verdict};

/// The schema (with `{BLOB}` / `{AUTO_ID}` for the backend).
const MIGRATION_0001: &str = include_str!("../../migrations/0001_conflict_detector.sql");
/// The held-verdict counts (`cd_held`).
const MIGRATION_0002: &str = include_str!("../../migrations/0002_held_verdicts.sql");
/// Where sqlx records this service's migrations (not the default `_sqlx_migrations`, which another
/// service on the same database may own).
pub const MIGRATIONS_TABLE: &str = "_conflict_detector_migrations";
/// The next input offset per (topic, partition), advanced inside every batch transaction.
static OFFSETS: LazyLock<OffsetTable> = LazyLock::new(|| OffsetTable::new("cd_offset"));

/// The schema for `backend`.
fn migration_sql(backend: Backend) -> String {
    let (blob, auto) = match backend {
        Backend::Sqlite => ("BLOB", "INTEGER PRIMARY KEY AUTOINCREMENT"),
        Backend::Postgres => ("BYTEA", "BIGSERIAL PRIMARY KEY"),
    };
    MIGRATION_0001
        .replace("{BLOB}", blob)
        .replace("{AUTO_ID}", auto)
}

/// The database error of every SQL service (the runtime's): the plumbing's, stored JSON, invalid
/// stored rows.
pub use tillstream_runtime::sql::DbError;

/// A price list as stored: (event id, store id, list id, effective_from, JSON body).
pub type PriceListRow = (String, String, String, i64, String);

/// A record waiting in the outbox.
#[derive(Debug, Clone)]
pub struct OutboxRow {
    pub id: i64,
    pub partition: i32,
    pub topic: String,
    pub key: String,
    pub record_id: String,
    pub event_type: String,
    pub payload: Vec<u8>,
}

/// A record to put in the outbox.
#[derive(Debug, Clone)]
pub struct OutboxRecord {
    pub partition: i32,
    pub topic: String,
    pub key: String,
    pub record_id: String,
    pub event_type: &'static str,
    pub payload: Vec<u8>,
}

/// Pooled database handle. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Db {
    /// The pool and which server it talks to.
    database: Database,
    /// Rows per multi-row statement (`database.rows_per_statement`).
    rows_per_statement: usize,
}

impl Db {
    /// Connects (creating a SQLite file and its folder if needed) and runs the migrations. One
    /// attempt: a database that is down fails as retryable.
    pub async fn connect(cfg: &DatabaseConfig) -> Result<Db, DbError> {
        let database = sql::connect(cfg).await?;
        let migrator = sql::migrator(
            MIGRATIONS_TABLE,
            vec![
                Migration::new(
                    1,
                    "conflict detector".into(),
                    MigrationType::Simple,
                    AssertSqlSafe(migration_sql(database.backend())).into_sql_str(),
                    false,
                ),
                Migration::new(
                    2,
                    "held verdicts".into(),
                    MigrationType::Simple,
                    MIGRATION_0002.into_sql_str(),
                    false,
                ),
            ],
        );
        sql::migrate(&database, &migrator).await?;
        Ok(Db {
            database,
            rows_per_statement: cfg.rows_per_statement.max(1),
        })
    }

    pub fn backend(&self) -> Backend {
        self.database.backend()
    }

    fn pool(&self) -> &sqlx::AnyPool {
        self.database.pool()
    }

    /// Next offset per partition of `topic`.
    pub async fn offsets(&self, topic: &str) -> Result<BTreeMap<i32, i64>, DbError> {
        let mut conn = self.pool().acquire().await?;
        Ok(OFFSETS.read(&mut conn, topic).await?)
    }

    /// Every stored price list (JSON bodies), oldest effective first.
    pub async fn price_lists(&self) -> Result<Vec<String>, DbError> {
        let rows = sqlx::query("SELECT body FROM cd_price_list ORDER BY effective_from, event_id")
            .fetch_all(self.pool())
            .await?;
        rows.iter().map(|r| Ok(r.try_get(0)?)).collect()
    }

    /// Stores price lists (known ones are ignored), in a transaction of their own.
    pub async fn insert_price_lists(&self, lists: &[PriceListRow]) -> Result<(), DbError> {
        let mut tx = self.begin().await?;
        tx.price_lists(lists).await?;
        tx.commit().await
    }

    /// The events of a partition in the order they were taken in.
    pub async fn events(&self, partition: i32) -> Result<Vec<EventRow>, DbError> {
        let rows = sqlx::query(
            "SELECT body FROM cd_event_log WHERE kafka_partition = $1 ORDER BY first_offset",
        )
        .bind(i64::from(partition))
        .fetch_all(self.pool())
        .await?;
        let mut out = Vec::new();
        for r in &rows {
            out.extend(decode_log(partition, &r.try_get::<Vec<u8>, _>(0)?)?);
        }
        Ok(out)
    }

    /// The detector's verdicts of a partition that still hold (not superseded), and the next
    /// generation of every evidence whose verdict was superseded.
    pub async fn verdicts(
        &self,
        partition: i32,
    ) -> Result<(Vec<Verdict>, HashMap<String, u32>), DbError> {
        let rows = sqlx::query(
            "SELECT status, base_id, generation, verdict FROM cd_conflict WHERE kafka_partition = $1 AND rule <> $2",
        )
        .bind(i64::from(partition))
        .bind(Rule::IdentityCollision.name())
        .fetch_all(self.pool())
        .await?;
        let mut live = Vec::new();
        let mut generations: HashMap<String, u32> = HashMap::default();
        for r in &rows {
            let st: String = r.try_get(0)?;
            let base: String = r.try_get(1)?;
            let generation = r.try_get::<i64, _>(2)? as u32;
            // The next generation follows the newest superseded one; a verdict that holds keeps
            // its own (generations withdrawn unwritten leave gaps, see `settle`).
            let g = if st == status::SUPERSEDED {
                generation + 1
            } else {
                let json: String = r.try_get(3)?;
                live.push(serde_json::from_str(&json)?);
                generation
            };
            let e = generations.entry(base).or_insert(0);
            *e = (*e).max(g);
        }
        // Deterministic order for the diff.
        live.sort_by(|a: &Verdict, b: &Verdict| a.conflict_id.cmp(&b.conflict_id));
        Ok((live, generations))
    }

    /// Opens a batch transaction.
    pub async fn begin(&self) -> Result<Batch, DbError> {
        Ok(Batch {
            tx: self.pool().begin().await?,
            rows_per_statement: self.rows_per_statement,
            backend: self.backend(),
        })
    }

    /// Up to `limit` outbox records of each of `partitions` (the publisher's crash-tail read covers
    /// that many per partition), oldest first.
    ///
    /// One query per partition, each an ordered walk of the `(kafka_partition, outbox_id)` index:
    /// one `IN (...) ORDER BY outbox_id LIMIT` query sorted every pending row of the partitions
    /// (with payloads) before taking its few, each round (seen at 5.5M pending, issue 16).
    pub async fn outbox_pending(
        &self,
        partitions: &[i32],
        limit: i64,
    ) -> Result<Vec<OutboxRow>, DbError> {
        let mut all = Vec::new();
        for p in partitions {
            let rows = sqlx::query(
                "SELECT outbox_id, kafka_partition, topic, record_key, record_id, event_type, payload FROM cd_outbox WHERE kafka_partition = $1 ORDER BY outbox_id LIMIT $2",
            )
            .bind(i64::from(*p))
            .bind(limit)
            .fetch_all(self.pool())
            .await?;
            for r in &rows {
                all.push(OutboxRow {
                    id: r.try_get(0)?,
                    partition: r.try_get::<i64, _>(1)? as i32,
                    topic: r.try_get(2)?,
                    key: r.try_get(3)?,
                    record_id: r.try_get(4)?,
                    event_type: r.try_get(5)?,
                    payload: r.try_get(6)?,
                });
            }
        }
        all.sort_unstable_by_key(|r| r.id);
        Ok(all)
    }

    /// Deletes published outbox records.
    pub async fn outbox_delete(&self, ids: &[i64]) -> Result<(), DbError> {
        for chunk in ids.chunks(500) {
            let list: Vec<String> = chunk.iter().map(|i| i.to_string()).collect();
            let sql = format!(
                "DELETE FROM cd_outbox WHERE outbox_id IN ({})",
                list.join(",")
            );
            sqlx::query(AssertSqlSafe(sql)).execute(self.pool()).await?;
        }
        Ok(())
    }

    /// Raised verdicts waiting unwritten in the instances' memory (`cd_held`).
    pub async fn held_len(&self) -> Result<i64, DbError> {
        Ok(
            sqlx::query("SELECT CAST(COALESCE(SUM(verdicts), 0) AS BIGINT) FROM cd_held")
                .fetch_one(self.pool())
                .await?
                .try_get(0)?,
        )
    }

    /// Records waiting in the outbox.
    pub async fn outbox_len(&self) -> Result<i64, DbError> {
        Ok(sqlx::query("SELECT COUNT(*) FROM cd_outbox")
            .fetch_one(self.pool())
            .await?
            .try_get(0)?)
    }

    /// Open conflicts per owner and the oldest open `queued_at`.
    pub async fn queue_stats(&self) -> Result<(BTreeMap<String, i64>, Option<i64>), DbError> {
        let rows = sqlx::query(
            "SELECT owner, COUNT(*), MIN(queued_at) FROM cd_conflict WHERE status = $1 GROUP BY owner",
        )
        .bind(status::OPEN)
        .fetch_all(self.pool())
        .await?;
        let mut by_owner = BTreeMap::new();
        let mut oldest: Option<i64> = None;
        for r in &rows {
            by_owner.insert(r.try_get::<String, _>(0)?, r.try_get::<i64, _>(1)?);
            let m: i64 = r.try_get(2)?;
            oldest = Some(oldest.map_or(m, |o| o.min(m)));
        }
        Ok((by_owner, oldest))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_schema_is_complete_for_each_backend() {
        assert!(migration_sql(Backend::Postgres).contains("BIGSERIAL PRIMARY KEY"));
        assert!(!migration_sql(Backend::Sqlite).contains('{'));
    }
}
