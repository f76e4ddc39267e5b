//! The detector's SQL state on PostgreSQL or SQLite (sqlx `Any`, one dialect with `$N`
//! placeholders; `migrations/` holds the schema): the event gate and restore log, input offsets,
//! price lists, the conflict queue, compensations, the reviewers' audit and the outbox. Its own
//! namespace: tables prefixed `cd_`, migrations recorded in `_conflict_detector_migrations`.
//!
//! Delivery guarantee: exactly-once effects. A batch is one transaction ([`Batch`]): the events the
//! gate admits (`ON CONFLICT DO NOTHING`), the verdicts, compensations and outbox records they
//! produced, and the next offset per partition; all of it commits or none of it does. The outbox is
//! published after the commit and deleted once the broker acknowledged it.

use std::collections::BTreeMap;
use std::time::Duration;

use rustc_hash::FxHashMap as HashMap;
use serde::{Deserialize, Serialize};
use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::{Any, AnyConnection, AnyPool, AssertSqlSafe, Row, Transaction};
use tillstream_contracts::Compensation;
use tillstream_runtime::{Classify, ErrorClass};

use crate::core::{Rule, Triage, Verdict};

/// The schema (with `{BLOB}` / `{AUTO_ID}` for the backend).
const MIGRATION_0001: &str = include_str!("../migrations/0001_conflict_detector.sql");
/// Where sqlx records this service's migrations (not the default `_sqlx_migrations`, which another
/// service on the same database may own).
pub const MIGRATIONS_TABLE: &str = "_conflict_detector_migrations";

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct DatabaseConfig {
    /// `postgres://...`, `sqlite://path` or a plain file path (SQLite, created if missing).
    pub url: String,
    pub max_connections: u32,
    /// Rows per multi-row insert (capped by the driver's bind-parameter limit).
    pub rows_per_statement: usize,
    /// SQLite: how long a writer waits for another connection's write lock.
    pub busy_timeout_ms: u64,
}

impl Default for DatabaseConfig {
    fn default() -> Self {
        DatabaseConfig {
            url: "data/conflict-detector.db".into(),
            max_connections: 4,
            rows_per_statement: 500,
            busy_timeout_ms: 60_000,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

impl Backend {
    pub fn name(self) -> &'static str {
        match self {
            Backend::Sqlite => "sqlite",
            Backend::Postgres => "postgres",
        }
    }

    fn migration(self) -> String {
        let (blob, auto) = match self {
            Backend::Sqlite => ("BLOB", "INTEGER PRIMARY KEY AUTOINCREMENT"),
            Backend::Postgres => ("BYTEA", "BIGSERIAL PRIMARY KEY"),
        };
        MIGRATION_0001
            .replace("{BLOB}", blob)
            .replace("{AUTO_ID}", auto)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("database: {0}")]
    Sqlx(#[from] sqlx::Error),
    #[error("migration: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("stored JSON: {0}")]
    Json(#[from] serde_json::Error),
    #[error("{0}")]
    Invalid(String),
}

impl Classify for DbError {
    fn class(&self) -> ErrorClass {
        use sqlx::Error as E;
        match self {
            DbError::Sqlx(
                E::Io(_)
                | E::Tls(_)
                | E::Protocol(_)
                | E::PoolTimedOut
                | E::PoolClosed
                | E::WorkerCrashed,
            ) => ErrorClass::Retryable,
            DbError::Sqlx(E::Database(db)) => {
                let code = db.code().map(|c| c.into_owned()).unwrap_or_default();
                // PostgreSQL SQLSTATE 08 connection, 40 rollback, 53 resources, 57 shutdown;
                // SQLite BUSY / LOCKED / IOERR / FULL / CANTOPEN.
                let pg = code.len() == 5 && matches!(&code[..2], "08" | "40" | "53" | "57" | "58");
                let lite = code
                    .parse::<i64>()
                    .is_ok_and(|c| matches!(c & 0xff, 5 | 6 | 10 | 13 | 14));
                if pg || lite {
                    ErrorClass::Retryable
                } else {
                    ErrorClass::Fatal
                }
            }
            _ => ErrorClass::Fatal,
        }
    }
}

/// (backend, sqlx URL) for a configured location.
pub fn resolve_url(url: &str) -> (Backend, String) {
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        return (Backend::Postgres, url.to_string());
    }
    let path = url
        .trim_start_matches("sqlite://")
        .trim_start_matches("sqlite:");
    if path.starts_with(":memory:") {
        return (Backend::Sqlite, format!("sqlite:{path}"));
    }
    let sep = if path.contains('?') { '&' } else { '?' };
    let mode = if path.contains("mode=") {
        ""
    } else {
        "mode=rwc"
    };
    let url = if mode.is_empty() {
        format!("sqlite://{path}")
    } else {
        format!("sqlite://{path}{sep}{mode}")
    };
    (Backend::Sqlite, url)
}

/// One store event as the restore log keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventRow {
    pub partition: i32,
    pub offset: i64,
    pub record_time: i64,
    pub schema_id: u32,
    pub datum: Vec<u8>,
}

/// One partition's share of a batch in the restore log: its events encoded as
/// `offset i64 | record_time i64 | schema_id u32 | len u32 | datum` (little endian) each.
#[derive(Debug, Clone, Default)]
pub struct LogChunk {
    pub first_offset: i64,
    pub last_offset: i64,
    pub events: usize,
    pub body: Vec<u8>,
}

impl LogChunk {
    /// Appends an event (in offset order).
    pub fn push(&mut self, offset: i64, record_time: i64, schema_id: u32, datum: &[u8]) {
        if self.events == 0 {
            self.first_offset = offset;
        }
        self.last_offset = offset;
        self.events += 1;
        self.body.extend_from_slice(&offset.to_le_bytes());
        self.body.extend_from_slice(&record_time.to_le_bytes());
        self.body.extend_from_slice(&schema_id.to_le_bytes());
        self.body
            .extend_from_slice(&(datum.len() as u32).to_le_bytes());
        self.body.extend_from_slice(datum);
    }
}

/// A log body of `rows` (see [`LogChunk`]).
pub fn encode_log(rows: &[&EventRow]) -> Vec<u8> {
    let mut c = LogChunk::default();
    for r in rows {
        c.push(r.offset, r.record_time, r.schema_id, &r.datum);
    }
    c.body
}

/// The events of a log body ([`encode_log`]).
pub fn decode_log(partition: i32, mut body: &[u8]) -> Result<Vec<EventRow>, DbError> {
    fn take<'a>(b: &mut &'a [u8], n: usize) -> Result<&'a [u8], DbError> {
        if b.len() < n {
            return Err(DbError::Invalid("truncated event log row".into()));
        }
        let (head, rest) = b.split_at(n);
        *b = rest;
        Ok(head)
    }
    let mut out = Vec::new();
    while !body.is_empty() {
        let offset = i64::from_le_bytes(take(&mut body, 8)?.try_into().expect("8 bytes"));
        let record_time = i64::from_le_bytes(take(&mut body, 8)?.try_into().expect("8 bytes"));
        let schema_id = u32::from_le_bytes(take(&mut body, 4)?.try_into().expect("4 bytes"));
        let len = u32::from_le_bytes(take(&mut body, 4)?.try_into().expect("4 bytes")) as usize;
        let datum = take(&mut body, len)?.to_vec();
        out.push(EventRow {
            partition,
            offset,
            record_time,
            schema_id,
            datum,
        });
    }
    Ok(out)
}

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

/// A conflict as the queue shows it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ConflictRow {
    pub conflict_id: String,
    pub store_id: String,
    pub kafka_partition: i32,
    pub rule: String,
    pub triage: String,
    pub owner: String,
    pub status: String,
    pub sku: Option<String>,
    pub detected_at: i64,
    pub queued_at: i64,
    pub detector: String,
    pub explanation: String,
    pub resolution: Option<String>,
    pub resolved_by: Option<String>,
    pub resolved_at: Option<i64>,
    pub superseded_by: Option<String>,
}

const CONFLICT_COLUMNS: &str = "conflict_id, store_id, kafka_partition, rule, triage, owner, status, sku, detected_at, queued_at, detector, explanation, resolution, resolved_by, resolved_at, superseded_by";

impl ConflictRow {
    fn from_row(r: &AnyRow) -> Result<ConflictRow, sqlx::Error> {
        Ok(ConflictRow {
            conflict_id: r.try_get(0)?,
            store_id: r.try_get(1)?,
            kafka_partition: r.try_get::<i64, _>(2)? as i32,
            rule: r.try_get(3)?,
            triage: r.try_get(4)?,
            owner: r.try_get(5)?,
            status: r.try_get(6)?,
            sku: r.try_get(7)?,
            detected_at: r.try_get(8)?,
            queued_at: r.try_get(9)?,
            detector: r.try_get(10)?,
            explanation: r.try_get(11)?,
            resolution: r.try_get(12)?,
            resolved_by: r.try_get(13)?,
            resolved_at: r.try_get(14)?,
            superseded_by: r.try_get(15)?,
        })
    }
}

/// Queue statuses.
pub mod status {
    pub const OPEN: &str = "open";
    pub const CLOSED: &str = "closed";
    pub const RESOLVED: &str = "resolved";
    pub const SUPERSEDED: &str = "superseded";
}

/// The queue status a fresh verdict starts in.
pub fn initial_status(triage: Triage) -> &'static str {
    match triage {
        Triage::NeedsReview => status::OPEN,
        Triage::Info | Triage::AutoResolved => status::CLOSED,
    }
}

/// What `list` selects.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Filter {
    pub store: Option<String>,
    pub rule: Option<String>,
    /// info | auto-resolved | needs-review
    pub severity: Option<String>,
    /// open (default) | closed | resolved | superseded | all
    pub status: Option<String>,
    /// Only conflicts queued at least this long ago.
    pub min_age_ms: Option<i64>,
    pub limit: Option<i64>,
}

/// A reviewer's decision on one conflict, ready to store.
#[derive(Debug, Clone)]
pub struct Resolution {
    pub conflict_id: String,
    pub resolution: String,
    pub who: String,
    pub why: String,
    pub action: String,
    pub at: i64,
    pub audit_id: String,
    pub compensations: Vec<Compensation>,
}

/// Pooled database handle. Cheap to clone.
#[derive(Clone)]
pub struct Db {
    pool: AnyPool,
    backend: Backend,
    rows_per_statement: usize,
}

impl std::fmt::Debug for Db {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Db")
            .field("backend", &self.backend)
            .finish_non_exhaustive()
    }
}

/// `head VALUES (..), (..) tail` for `nrows` rows of `ncols` placeholders: `$N` on PostgreSQL,
/// `?` on SQLite (where `$N` is a named parameter, and sqlx binds names by scanning every
/// parameter's name: quadratic in a statement of thousands of parameters).
fn values(backend: Backend, head: &str, ncols: usize, nrows: usize, tail: &str) -> String {
    let mut s = String::with_capacity(head.len() + tail.len() + nrows * ncols * 5);
    s.push_str(head);
    s.push_str(" VALUES ");
    for r in 0..nrows {
        s.push_str(if r == 0 { "(" } else { ",(" });
        for c in 0..ncols {
            if c > 0 {
                s.push(',');
            }
            match backend {
                Backend::Sqlite => s.push('?'),
                Backend::Postgres => {
                    s.push('$');
                    s.push_str(&(r * ncols + c + 1).to_string());
                }
            }
        }
        s.push(')');
    }
    s.push(' ');
    s.push_str(tail);
    s
}

impl Db {
    /// Connects (creating a SQLite file and its folder if needed) and runs the migrations.
    pub async fn connect(cfg: &DatabaseConfig) -> Result<Db, DbError> {
        sqlx::any::install_default_drivers();
        let (backend, url) = resolve_url(&cfg.url);
        if backend == Backend::Sqlite
            && let Some(path) = url
                .strip_prefix("sqlite://")
                .and_then(|p| p.split('?').next())
            && let Some(dir) = std::path::Path::new(path).parent()
            && !dir.as_os_str().is_empty()
        {
            std::fs::create_dir_all(dir)
                .map_err(|e| DbError::Invalid(format!("cannot create {}: {e}", dir.display())))?;
        }
        let busy = cfg.busy_timeout_ms;
        let mut opts = AnyPoolOptions::new()
            .max_connections(cfg.max_connections.max(2))
            .acquire_timeout(Duration::from_secs(30));
        if backend == Backend::Sqlite {
            opts = opts.after_connect(move |conn, _| {
                Box::pin(async move {
                    // WAL: the queue API reads while a batch writes. synchronous=NORMAL may lose
                    // the last commits on power loss, but effects and offsets together: the events
                    // are read again and decided the same way.
                    for pragma in [
                        format!("PRAGMA busy_timeout = {busy}"),
                        "PRAGMA journal_mode = WAL".into(),
                        "PRAGMA synchronous = NORMAL".into(),
                    ] {
                        sqlx::query(AssertSqlSafe(pragma))
                            .execute(&mut *conn)
                            .await?;
                    }
                    Ok(())
                })
            });
        }
        let pool = opts.connect(&url).await?;
        let db = Db {
            pool,
            backend,
            rows_per_statement: cfg.rows_per_statement.max(1),
        };
        db.migrate().await?;
        Ok(db)
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    async fn migrate(&self) -> Result<(), DbError> {
        use sqlx::SqlSafeStr;
        use sqlx::migrate::{Migration, MigrationType, Migrator};
        let mut migrator = Migrator::with_migrations(vec![Migration::new(
            1,
            "conflict detector".into(),
            MigrationType::Simple,
            AssertSqlSafe(self.backend.migration()).into_sql_str(),
            false,
        )]);
        migrator.dangerous_set_table_name(MIGRATIONS_TABLE);
        // PostgreSQL serialises migrators with an advisory lock; two SQLite processes opening a
        // fresh file at once both try, and the loser finds the migration applied on a second pass.
        let mut attempt = 0u64;
        loop {
            match migrator.run(&self.pool).await {
                Ok(()) => return Ok(()),
                Err(e) if self.backend == Backend::Sqlite && attempt < 5 => {
                    attempt += 1;
                    tracing::debug!(error = %e, attempt, "migration raced another instance; checking again");
                    tokio::time::sleep(Duration::from_millis(50 * attempt)).await;
                }
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// Next offset per partition of `topic`.
    pub async fn offsets(&self, topic: &str) -> Result<BTreeMap<i32, i64>, DbError> {
        let rows =
            sqlx::query("SELECT kafka_partition, next_offset FROM cd_offset WHERE topic = $1")
                .bind(topic)
                .fetch_all(&self.pool)
                .await?;
        rows.iter()
            .map(|r| Ok((r.try_get::<i64, _>(0)? as i32, r.try_get::<i64, _>(1)?)))
            .collect()
    }

    /// Every stored price list (JSON bodies), oldest effective first.
    pub async fn price_lists(&self) -> Result<Vec<String>, DbError> {
        let rows = sqlx::query("SELECT body FROM cd_price_list ORDER BY effective_from, event_id")
            .fetch_all(&self.pool)
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
        .fetch_all(&self.pool)
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
        .fetch_all(&self.pool)
        .await?;
        let mut live = Vec::new();
        let mut generations: HashMap<String, u32> = HashMap::default();
        for r in &rows {
            let st: String = r.try_get(0)?;
            if st == status::SUPERSEDED {
                let base: String = r.try_get(1)?;
                let g = r.try_get::<i64, _>(2)? as u32 + 1;
                let e = generations.entry(base).or_insert(0);
                *e = (*e).max(g);
            } else {
                let json: String = r.try_get(3)?;
                live.push(serde_json::from_str(&json)?);
            }
        }
        // Deterministic order for the diff.
        live.sort_by(|a: &Verdict, b: &Verdict| a.conflict_id.cmp(&b.conflict_id));
        Ok((live, generations))
    }

    /// Opens a batch transaction.
    pub async fn begin(&self) -> Result<Batch, DbError> {
        Ok(Batch {
            tx: self.pool.begin().await?,
            rows_per_statement: self.rows_per_statement,
            backend: self.backend,
        })
    }

    /// Up to `limit` outbox records of `partitions`, oldest first.
    pub async fn outbox_pending(
        &self,
        partitions: &[i32],
        limit: i64,
    ) -> Result<Vec<OutboxRow>, DbError> {
        if partitions.is_empty() {
            return Ok(Vec::new());
        }
        let list: Vec<String> = partitions.iter().map(|p| p.to_string()).collect();
        let sql = format!(
            "SELECT outbox_id, kafka_partition, topic, record_key, record_id, event_type, payload FROM cd_outbox WHERE kafka_partition IN ({}) ORDER BY outbox_id LIMIT {limit}",
            list.join(",")
        );
        let rows = sqlx::query(AssertSqlSafe(sql))
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|r| {
                Ok(OutboxRow {
                    id: r.try_get(0)?,
                    partition: r.try_get::<i64, _>(1)? as i32,
                    topic: r.try_get(2)?,
                    key: r.try_get(3)?,
                    record_id: r.try_get(4)?,
                    event_type: r.try_get(5)?,
                    payload: r.try_get(6)?,
                })
            })
            .collect()
    }

    /// Deletes published outbox records.
    pub async fn outbox_delete(&self, ids: &[i64]) -> Result<(), DbError> {
        for chunk in ids.chunks(500) {
            let list: Vec<String> = chunk.iter().map(|i| i.to_string()).collect();
            let sql = format!(
                "DELETE FROM cd_outbox WHERE outbox_id IN ({})",
                list.join(",")
            );
            sqlx::query(AssertSqlSafe(sql)).execute(&self.pool).await?;
        }
        Ok(())
    }

    /// Records waiting in the outbox.
    pub async fn outbox_len(&self) -> Result<i64, DbError> {
        Ok(sqlx::query("SELECT COUNT(*) FROM cd_outbox")
            .fetch_one(&self.pool)
            .await?
            .try_get(0)?)
    }

    /// Open conflicts per owner and the oldest open `queued_at`.
    pub async fn queue_stats(&self) -> Result<(BTreeMap<String, i64>, Option<i64>), DbError> {
        let rows = sqlx::query(
            "SELECT owner, COUNT(*), MIN(queued_at) FROM cd_conflict WHERE status = $1 GROUP BY owner",
        )
        .bind(status::OPEN)
        .fetch_all(&self.pool)
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

    /// The queue, filtered, oldest first.
    pub async fn list(&self, f: &Filter, now_ms: i64) -> Result<Vec<ConflictRow>, DbError> {
        let mut clauses: Vec<String> = Vec::new();
        let mut binds: Vec<String> = Vec::new();
        let want = f.status.clone().unwrap_or_else(|| status::OPEN.into());
        if want != "all" {
            binds.push(want);
            clauses.push(format!("status = ${}", binds.len()));
        }
        for (col, v) in [
            ("store_id", &f.store),
            ("rule", &f.rule),
            ("triage", &f.severity),
        ] {
            if let Some(v) = v {
                binds.push(v.clone());
                clauses.push(format!("{col} = ${}", binds.len()));
            }
        }
        if let Some(age) = f.min_age_ms {
            clauses.push(format!("queued_at <= {}", now_ms.saturating_sub(age)));
        }
        let sql = format!(
            "SELECT {CONFLICT_COLUMNS} FROM cd_conflict{} ORDER BY queued_at, conflict_id LIMIT {}",
            if clauses.is_empty() {
                String::new()
            } else {
                format!(" WHERE {}", clauses.join(" AND "))
            },
            f.limit.unwrap_or(100).clamp(1, 10_000)
        );
        let mut q = sqlx::query(AssertSqlSafe(sql));
        for b in &binds {
            q = q.bind(b.as_str());
        }
        let rows = q.fetch_all(&self.pool).await?;
        Ok(rows
            .iter()
            .map(ConflictRow::from_row)
            .collect::<Result<_, _>>()?)
    }

    /// One conflict with its verdict (evidence, figures), compensations and audit trail.
    pub async fn get(&self, id: &str) -> Result<Option<ConflictDetail>, DbError> {
        let mut conn = self.pool.acquire().await?;
        get_on(&mut conn, id).await
    }

    /// Every row of a table, as text lines in key order (tests compare database states).
    pub async fn dump(
        &self,
        table: &str,
        columns: &str,
        order: &str,
    ) -> Result<Vec<String>, DbError> {
        let sql = format!("SELECT {columns} FROM {table} ORDER BY {order}");
        let rows = sqlx::query(AssertSqlSafe(sql))
            .fetch_all(&self.pool)
            .await?;
        Ok(rows
            .iter()
            .map(|r| {
                (0..r.len())
                    .map(|i| {
                        r.try_get::<Option<String>, _>(i)
                            .map(|v| v.unwrap_or_else(|| "NULL".into()))
                            .or_else(|_| {
                                r.try_get::<Option<i64>, _>(i)
                                    .map(|v| v.map_or("NULL".into(), |v| v.to_string()))
                            })
                            .unwrap_or_else(|_| "?".into())
                    })
                    .collect::<Vec<_>>()
                    .join("|")
            })
            .collect())
    }
}

/// A conflict with everything `show` prints.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ConflictDetail {
    #[serde(flatten)]
    pub row: ConflictRow,
    pub verdict: Verdict,
    pub compensations: Vec<Compensation>,
    pub audit: Vec<AuditRow>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct AuditRow {
    pub action: String,
    pub who: String,
    pub why: String,
    pub at: i64,
    pub outcome: String,
}

async fn get_on(conn: &mut AnyConnection, id: &str) -> Result<Option<ConflictDetail>, DbError> {
    let sql = format!("SELECT {CONFLICT_COLUMNS}, verdict FROM cd_conflict WHERE conflict_id = $1");
    let Some(r) = sqlx::query(AssertSqlSafe(sql))
        .bind(id)
        .fetch_optional(&mut *conn)
        .await?
    else {
        return Ok(None);
    };
    let row = ConflictRow::from_row(&r)?;
    let verdict: Verdict = serde_json::from_str(&r.try_get::<String, _>(16)?)?;
    let comps = sqlx::query(
        "SELECT body FROM cd_compensation WHERE conflict_id = $1 ORDER BY compensation_id",
    )
    .bind(id)
    .fetch_all(&mut *conn)
    .await?;
    let compensations = comps
        .iter()
        .map(|c| Ok(serde_json::from_str(&c.try_get::<String, _>(0)?)?))
        .collect::<Result<Vec<Compensation>, DbError>>()?;
    let audit = sqlx::query("SELECT action, who, why, at, outcome FROM cd_audit WHERE conflict_id = $1 ORDER BY at, audit_id")
        .bind(id)
        .fetch_all(&mut *conn)
        .await?
        .iter()
        .map(|a| {
            Ok(AuditRow {
                action: a.try_get(0)?,
                who: a.try_get(1)?,
                why: a.try_get(2)?,
                at: a.try_get(3)?,
                outcome: a.try_get(4)?,
            })
        })
        .collect::<Result<Vec<_>, DbError>>()?;
    Ok(Some(ConflictDetail {
        row,
        verdict,
        compensations,
        audit,
    }))
}

/// One batch transaction (see the module doc).
pub struct Batch {
    tx: Transaction<'static, Any>,
    rows_per_statement: usize,
    backend: Backend,
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
        let chunk = self.rows_per_statement.clamp(1, 65_535 / 6);
        for part in records.chunks(chunk) {
            let sql = values(
                self.backend,
                "INSERT INTO cd_outbox (kafka_partition, topic, record_key, record_id, event_type, payload)",
                6,
                part.len(),
                "",
            );
            let mut q = sqlx::query(AssertSqlSafe(sql));
            for r in part {
                q = q
                    .bind(i64::from(r.partition))
                    .bind(r.topic.as_str())
                    .bind(r.key.as_str())
                    .bind(r.record_id.as_str())
                    .bind(r.event_type)
                    .bind(r.payload.as_slice());
            }
            q.execute(&mut *self.tx).await?;
        }
        Ok(())
    }

    /// Records the next offset per partition of `topic`.
    pub async fn offsets(&mut self, topic: &str, next: &BTreeMap<i32, i64>) -> Result<(), DbError> {
        for (p, o) in next {
            sqlx::query(
                "INSERT INTO cd_offset (topic, kafka_partition, next_offset) VALUES ($1, $2, $3) ON CONFLICT (topic, kafka_partition) DO UPDATE SET next_offset = excluded.next_offset",
            )
            .bind(topic)
            .bind(i64::from(*p))
            .bind(*o)
            .execute(&mut *self.tx)
            .await?;
        }
        Ok(())
    }

    /// Stores price lists (known ones ignored).
    pub async fn price_lists(
        &mut self,
        lists: &[(String, String, String, i64, String)],
    ) -> Result<(), DbError> {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_numbers_placeholders_row_by_row() {
        assert_eq!(
            values(
                Backend::Postgres,
                "INSERT INTO t (a, b)",
                2,
                2,
                "ON CONFLICT DO NOTHING"
            ),
            "INSERT INTO t (a, b) VALUES ($1,$2),($3,$4) ON CONFLICT DO NOTHING"
        );
        assert_eq!(
            values(Backend::Sqlite, "INSERT INTO t (a)", 1, 2, ""),
            "INSERT INTO t (a) VALUES (?),(?) "
        );
    }

    #[test]
    fn log_bodies_round_trip_and_refuse_truncation() {
        let rows = vec![
            EventRow {
                partition: 3,
                offset: 7,
                record_time: 1_800_000_000_000,
                schema_id: 12,
                datum: vec![1, 2, 3],
            },
            EventRow {
                partition: 3,
                offset: 9,
                record_time: -1,
                schema_id: 0,
                datum: vec![],
            },
        ];
        let refs: Vec<&EventRow> = rows.iter().collect();
        let body = encode_log(&refs);
        assert_eq!(decode_log(3, &body).unwrap(), rows);
        assert!(decode_log(3, &body[..body.len() - 1]).is_err());
    }

    #[test]
    fn urls_resolve_to_a_backend() {
        assert_eq!(
            resolve_url("data/x.db"),
            (Backend::Sqlite, "sqlite://data/x.db?mode=rwc".into())
        );
        assert_eq!(
            resolve_url("sqlite://a.db?mode=ro"),
            (Backend::Sqlite, "sqlite://a.db?mode=ro".into())
        );
        assert_eq!(resolve_url("postgres://u@h/d").0, Backend::Postgres);
        assert!(
            Backend::Postgres
                .migration()
                .contains("BIGSERIAL PRIMARY KEY")
        );
        assert!(!Backend::Sqlite.migration().contains('{'));
    }
}
