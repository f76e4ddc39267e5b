//! The SQL side: connection (PostgreSQL or SQLite through sqlx's `Any` driver, one dialect with
//! `$N` placeholders, which both drivers accept), migrations, the batch transaction, the stored
//! consumer offsets, blue/green table sets with their analyst views, and the canonical dump.
//!
//! Delivery guarantee: exactly-once effects. One batch = one transaction that inserts the batch's
//! event ids into the gate (`ON CONFLICT DO NOTHING RETURNING`), applies only the events the gate
//! admitted, and upserts the next offset per partition. Either all of it commits or none of it does;
//! a redelivered event is refused by the gate and changes nothing.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use rustc_hash::FxHashSet as HashSet;

use serde::{Deserialize, Serialize};
use sqlx::any::{AnyArguments, AnyPoolOptions, AnyRow};
use sqlx::query::Query;
use sqlx::{Any, AnyConnection, AnyPool, AssertSqlSafe, Connection, Row};
use tillstream_runtime::{Classify, ErrorClass};

use crate::model::{self, Delta, Envelope, GateRow, ProjectionParams};

/// The schema, embedded: runs unchanged on PostgreSQL and SQLite.
pub const MIGRATION_0001: &str = include_str!("../migrations/0001_projection.sql");
/// The analyst views (template over the active colour).
pub const VIEWS_SQL: &str = include_str!("views.sql");

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct DatabaseConfig {
    /// `postgres://...`, `sqlite://path` or a plain file path (SQLite, created if missing).
    pub url: String,
    pub max_connections: u32,
    /// Rows per multi-row statement (capped by the driver's bind-parameter limit).
    pub rows_per_statement: usize,
    /// SQLite: how long a writer waits for another process's write lock.
    pub busy_timeout_ms: u64,
}

impl Default for DatabaseConfig {
    fn default() -> Self {
        DatabaseConfig {
            url: "data/inventory-projection.db".into(),
            max_connections: 4,
            rows_per_statement: 1000,
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
    /// Largest number of bind parameters one statement may carry.
    fn max_params(self) -> usize {
        match self {
            Backend::Sqlite => 32_766,
            Backend::Postgres => 65_535,
        }
    }

    /// "Now" in epoch milliseconds, for the one view that compares with the clock.
    fn now_ms_sql(self) -> &'static str {
        match self {
            Backend::Sqlite => "(CAST(strftime('%s','now') AS INTEGER) * 1000)",
            Backend::Postgres => "CAST(EXTRACT(EPOCH FROM CURRENT_TIMESTAMP) * 1000 AS BIGINT)",
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Backend::Sqlite => "sqlite",
            Backend::Postgres => "postgres",
        }
    }
}

/// A table set. The live consumer writes the active one; `rebuild` fills the other, then switches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Color {
    Blue,
    Green,
}

impl Color {
    pub fn name(self) -> &'static str {
        match self {
            Color::Blue => "blue",
            Color::Green => "green",
        }
    }

    pub fn other(self) -> Color {
        match self {
            Color::Blue => Color::Green,
            Color::Green => Color::Blue,
        }
    }

    pub fn parse(s: &str) -> Option<Color> {
        match s {
            "blue" => Some(Color::Blue),
            "green" => Some(Color::Green),
            _ => None,
        }
    }
}

impl std::fmt::Display for Color {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ColType {
    Int,
    Text,
}

/// A projected table (per colour), for the canonical dump and for clearing a set.
#[derive(Debug)]
pub struct TableSpec {
    pub name: &'static str,
    pub columns: &'static [(&'static str, ColType)],
}

use ColType::{Int, Text};

/// Every table of a colour set, in dump order.
pub const TABLES: &[TableSpec] = &[
    TableSpec {
        name: "applied_event",
        columns: &[
            ("event_id", Text),
            ("store_id", Text),
            ("event_type", Text),
            ("kafka_partition", Int),
            ("kafka_offset", Int),
        ],
    },
    TableSpec {
        name: "consumer_offset",
        columns: &[
            ("topic", Text),
            ("kafka_partition", Int),
            ("next_offset", Int),
        ],
    },
    TableSpec {
        name: "stock",
        columns: &[
            ("store_id", Text),
            ("sku", Text),
            ("on_hand", Int),
            ("version", Int),
            ("last_event_id", Text),
            ("last_occurred_at", Int),
            ("below_zero", Int),
        ],
    },
    TableSpec {
        name: "stock_movement",
        columns: &[
            ("event_id", Text),
            ("line_no", Int),
            ("store_id", Text),
            ("sku", Text),
            ("movement", Text),
            ("qty_delta", Int),
            ("counted_qty", Int),
            ("occurred_at", Int),
            ("kafka_partition", Int),
            ("kafka_offset", Int),
        ],
    },
    TableSpec {
        name: "sales_hourly",
        columns: &[
            ("store_id", Text),
            ("sku", Text),
            ("hour_start", Int),
            ("currency", Text),
            ("qty_sold", Int),
            ("gross_minor", Int),
            ("discounts_minor", Int),
            ("tax_minor", Int),
            ("net_minor", Int),
            ("qty_returned", Int),
            ("refunded_minor", Int),
            ("refunded_tax_minor", Int),
            ("sale_lines", Int),
            ("refund_lines", Int),
        ],
    },
    TableSpec {
        name: "reservation",
        columns: &[
            ("store_id", Text),
            ("reservation_id", Text),
            ("sku", Text),
            ("status", Text),
            ("requested_qty", Int),
            ("granted_qty", Int),
            ("released_qty", Int),
            ("requested_at", Int),
            ("granted_at", Int),
            ("granted_by", Text),
            ("expires_at", Int),
            ("released_at", Int),
            ("release_reason", Text),
            ("order_ref", Text),
        ],
    },
    TableSpec {
        name: "store_sync",
        columns: &[
            ("store_id", Text),
            ("last_event_at", Int),
            ("last_seen_at", Int),
            ("last_lag_ms", Int),
            ("max_lag_ms", Int),
            ("last_business_date", Int),
            ("events_total", Int),
            ("offline_events_total", Int),
            ("last_event_id", Text),
        ],
    },
    TableSpec {
        name: "store_day",
        columns: &[
            ("store_id", Text),
            ("business_date", Int),
            ("events", Int),
            ("offline_events", Int),
            ("orders", Int),
            ("refunds", Int),
            ("adjustments", Int),
        ],
    },
];

#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("database: {0}")]
    Sqlx(#[from] sqlx::Error),
    #[error("migration: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("{0}")]
    Invalid(String),
}

impl Classify for DbError {
    fn class(&self) -> ErrorClass {
        match self {
            DbError::Migrate(_) | DbError::Invalid(_) => ErrorClass::Fatal,
            DbError::Sqlx(e) => classify_sqlx(e),
        }
    }
}

fn classify_sqlx(e: &sqlx::Error) -> ErrorClass {
    use sqlx::Error as E;
    match e {
        E::Io(_)
        | E::Tls(_)
        | E::Protocol(_)
        | E::PoolTimedOut
        | E::PoolClosed
        | E::WorkerCrashed => ErrorClass::Retryable,
        E::Database(db) => {
            let code = db.code().map(|c| c.into_owned()).unwrap_or_default();
            // PostgreSQL SQLSTATE classes: 08 connection, 40 rollback (serialization, deadlock),
            // 53 resources, 57 operator intervention (shutdown), 58 system. 22/23: bad data.
            // (SQLSTATEs have 5 characters; SQLite's extended codes have at most 4 digits.)
            if code.len() == 5 {
                return match &code[..2] {
                    "08" | "40" | "53" | "57" | "58" => ErrorClass::Retryable,
                    "22" | "23" => ErrorClass::Poison,
                    _ => ErrorClass::Fatal,
                };
            }
            // SQLite result codes (primary code = low byte of the extended code).
            match code.parse::<i64>().map(|c| c & 0xff) {
                Ok(5 | 6 | 10 | 13 | 14 | 15) => ErrorClass::Retryable, // BUSY LOCKED IOERR FULL CANTOPEN PROTOCOL
                Ok(18..=20 | 25) => ErrorClass::Poison, // TOOBIG CONSTRAINT MISMATCH RANGE
                _ => ErrorClass::Fatal,
            }
        }
        _ => ErrorClass::Fatal,
    }
}

/// Normalises a configured database location into (backend, sqlx URL).
pub fn resolve_url(url: &str) -> (Backend, String) {
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        return (Backend::Postgres, url.to_string());
    }
    let path = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))
        .unwrap_or(url);
    if path.starts_with(":memory:") {
        return (Backend::Sqlite, format!("sqlite:{path}"));
    }
    let (path, query) = path.split_once('?').unwrap_or((path, ""));
    let mut params: Vec<&str> = query.split('&').filter(|p| !p.is_empty()).collect();
    if !params.iter().any(|p| p.starts_with("mode=")) {
        params.push("mode=rwc");
    }
    (
        Backend::Sqlite,
        format!("sqlite://{path}?{}", params.join("&")),
    )
}

/// What a test or drill asks the batch transaction to do just before COMMIT.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct FaultConfig {
    /// Hold every batch that applies new events open this long before committing (0 = never).
    pub hold_batch_open_ms: u64,
    /// Created (empty) when a batch starts holding, so a test knows it can kill -9 mid-batch.
    pub marker_file: Option<PathBuf>,
}

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
    pub color: Option<Color>,
    /// Events the gate admitted (not seen before).
    pub new_events: usize,
    /// Events in the batch the gate refused (already applied).
    pub duplicates: usize,
    pub rows: usize,
    /// Stock rows this batch left below zero.
    pub negative_rows: usize,
    pub db_time: Duration,
    /// Admitted events per event type.
    pub by_kind: Vec<(&'static str, u64)>,
}

/// Outcome of trying to switch the views to a rebuilt set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Switch {
    /// Switched; `compared` = the rebuilt set was compared with the live one and was equal.
    Done { compared: bool },
    /// The live set consumed further meanwhile: replay up to these offsets, then try again.
    LiveAhead(BTreeMap<i32, i64>),
    /// The live set is behind the rebuild (its consumer is lagging or stopped).
    LiveBehind(BTreeMap<i32, i64>),
    /// Same offsets, different content: not switched. The first differing line of each dump.
    Differs { live: String, rebuilt: String },
}

/// The database handle. Cheap to clone.
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

type AnyQuery<'q> = Query<'q, Any, AnyArguments>;

impl Db {
    /// Connects (creating a SQLite file if needed) and runs the migrations.
    pub async fn connect(cfg: &DatabaseConfig) -> Result<Db, DbError> {
        sqlx::any::install_default_drivers();
        let (backend, url) = resolve_url(&cfg.url);
        if backend == Backend::Sqlite
            && let Some(path) = url
                .strip_prefix("sqlite://")
                .and_then(|p| p.split('?').next())
            && let Some(parent) = std::path::Path::new(path).parent()
            && !parent.as_os_str().is_empty()
        {
            std::fs::create_dir_all(parent).map_err(|e| {
                DbError::Invalid(format!("cannot create {}: {e}", parent.display()))
            })?;
        }
        let busy = cfg.busy_timeout_ms;
        let mut opts = AnyPoolOptions::new()
            .max_connections(cfg.max_connections.max(1))
            .acquire_timeout(Duration::from_secs(30));
        if backend == Backend::Sqlite {
            opts = opts.after_connect(move |conn, _| {
                Box::pin(async move {
                    // WAL: readers never block the writer. synchronous=NORMAL may lose the last
                    // commits on power loss, but effects and offsets are lost together, so the
                    // events are simply read again: exactly-once still holds.
                    // Big batches: a 64 MiB page cache (no spilling mid-transaction) and
                    // statement journals in memory (every multi-row upsert needs one).
                    for pragma in [
                        format!("PRAGMA busy_timeout = {busy}"),
                        "PRAGMA journal_mode = WAL".to_string(),
                        "PRAGMA synchronous = NORMAL".to_string(),
                        "PRAGMA cache_size = -65536".to_string(),
                        "PRAGMA temp_store = MEMORY".to_string(),
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

    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }

    async fn migrate(&self) -> Result<(), DbError> {
        use sqlx::SqlSafeStr;
        use sqlx::migrate::{Migration, MigrationType, Migrator};
        let migrator = Migrator::with_migrations(vec![Migration::new(
            1,
            "projection".into(),
            MigrationType::Simple,
            MIGRATION_0001.into_sql_str(),
            false,
        )]);
        // sqlx serialises migrations with an advisory lock on PostgreSQL only. On SQLite, two
        // processes opening a fresh file at once both try to apply; the loser fails ("table ...
        // already exists") when the winner commits, and a second pass finds the migration applied.
        // A real migration error fails every pass and is returned.
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

    /// The colour the views point at.
    pub async fn active_color(&self) -> Result<Color, DbError> {
        let row = sqlx::query("SELECT active_color FROM projection_state WHERE id = 1")
            .fetch_one(&self.pool)
            .await?;
        let c: String = row.try_get(0)?;
        Color::parse(&c).ok_or_else(|| DbError::Invalid(format!("unknown colour {c:?}")))
    }

    /// Locks the state row for the rest of the transaction and returns the active colour.
    async fn lock_state(conn: &mut AnyConnection) -> Result<Color, DbError> {
        let row = sqlx::query(
            "UPDATE projection_state SET active_color = active_color WHERE id = 1 RETURNING active_color",
        )
        .fetch_one(&mut *conn)
        .await?;
        let c: String = row.try_get(0)?;
        Color::parse(&c).ok_or_else(|| DbError::Invalid(format!("unknown colour {c:?}")))
    }

    /// (Re)creates the analyst views over the active set.
    pub async fn ensure_views(&self) -> Result<Color, DbError> {
        let mut tx = self.pool.begin().await?;
        let color = Self::lock_state(&mut tx).await?;
        self.create_views(&mut tx, color).await?;
        tx.commit().await?;
        Ok(color)
    }

    async fn create_views(&self, conn: &mut AnyConnection, color: Color) -> Result<(), DbError> {
        let stmts: Vec<String> = view_statements(color, self.backend);
        for name in view_names().iter().rev() {
            sqlx::query(AssertSqlSafe(format!("DROP VIEW IF EXISTS {name}")))
                .execute(&mut *conn)
                .await?;
        }
        for s in stmts {
            sqlx::query(AssertSqlSafe(s)).execute(&mut *conn).await?;
        }
        Ok(())
    }

    /// Next offset per partition stored in `color` for `topic`.
    pub async fn offsets(&self, color: Color, topic: &str) -> Result<BTreeMap<i32, i64>, DbError> {
        let mut conn = self.pool.acquire().await?;
        Self::offsets_on(&mut conn, color, topic).await
    }

    async fn offsets_on(
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

    /// Empties every table of a set (the rebuild's target).
    pub async fn clear(&self, color: Color) -> Result<(), DbError> {
        let mut tx = self.pool.begin().await?;
        for t in TABLES {
            sqlx::query(AssertSqlSafe(format!("DELETE FROM {color}_{}", t.name)))
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }

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
        let mut tx = self.pool.begin().await?;
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
        let mut delta = model::project(&fresh, params);
        delta
            .movements
            .sort_unstable_by(|a, b| (a.event_id, a.line_no).cmp(&(b.event_id, b.line_no)));
        let negative_rows = self.write_delta(&mut tx, color, &delta).await?;
        self.upsert_offsets(&mut tx, color, topic, next_offsets)
            .await?;
        if fault.hold_batch_open_ms > 0 && !fresh.is_empty() {
            if let Some(marker) = &fault.marker_file {
                let _ = std::fs::write(marker, b"");
            }
            tracing::warn!(
                ms = fault.hold_batch_open_ms,
                "fault injection: holding the batch transaction open"
            );
            tokio::time::sleep(Duration::from_millis(fault.hold_batch_open_ms)).await;
        }
        tx.commit().await?;
        let mut by_kind: Vec<(&'static str, u64)> = Vec::new();
        for e in &fresh {
            let k = e.event.kind().name();
            match by_kind.iter_mut().find(|(n, _)| *n == k) {
                Some((_, c)) => *c += 1,
                None => by_kind.push((k, 1)),
            }
        }
        Ok(Applied {
            by_kind,
            color: Some(color),
            new_events: fresh.len(),
            duplicates: batch.len() - fresh.len(),
            rows: delta.rows() + gate.len(),
            negative_rows,
            db_time: t0.elapsed(),
        })
    }

    fn chunk(&self, ncols: usize) -> usize {
        self.rows_per_statement
            .min(self.backend.max_params() / ncols)
            .max(1)
    }

    /// Runs `head VALUES (...), (...) tail` over `rows`, chunked; returns the rows the statements
    /// returned (when `tail` has a RETURNING clause).
    async fn exec_rows<R>(
        &self,
        conn: &mut AnyConnection,
        head: &str,
        ncols: usize,
        tail: &str,
        rows: &[R],
        bind: impl for<'q> Fn(AnyQuery<'q>, &R) -> AnyQuery<'q>,
    ) -> Result<Vec<AnyRow>, DbError> {
        let returning = tail.contains("RETURNING");
        let mut out = Vec::new();
        for chunk in rows.chunks(self.chunk(ncols)) {
            let sql = values_sql(self.backend, head, ncols, chunk.len(), tail);
            let mut q = sqlx::query(AssertSqlSafe(sql));
            for r in chunk {
                q = bind(q, r);
            }
            if returning {
                out.extend(q.fetch_all(&mut *conn).await?);
            } else {
                q.execute(&mut *conn).await?;
            }
        }
        Ok(out)
    }

    /// Inserts the gate rows; returns the (partition, offset) of the events admitted.
    async fn insert_gate(
        &self,
        conn: &mut AnyConnection,
        color: Color,
        gate: &[GateRow<'_>],
    ) -> Result<HashSet<(i64, i64)>, DbError> {
        let head = format!(
            "INSERT INTO {color}_applied_event (event_id, store_id, event_type, kafka_partition, kafka_offset)"
        );
        let rows = self
            .exec_rows(
                conn,
                &head,
                5,
                "ON CONFLICT (event_id) DO NOTHING RETURNING kafka_partition, kafka_offset",
                gate,
                |q, r| {
                    q.bind(r.event_id)
                        .bind(r.store_id)
                        .bind(r.event_type)
                        .bind(r.partition)
                        .bind(r.offset)
                },
            )
            .await?;
        rows.iter()
            .map(|r| Ok((r.try_get::<i64, _>(0)?, r.try_get::<i64, _>(1)?)))
            .collect()
    }

    /// Writes a batch's deltas; returns how many stock rows it left below zero.
    async fn write_delta(
        &self,
        conn: &mut AnyConnection,
        color: Color,
        d: &Delta<'_>,
    ) -> Result<usize, DbError> {
        self.exec_rows(
            conn,
            &format!(
                "INSERT INTO {color}_stock_movement (event_id, line_no, store_id, sku, movement, \
                 qty_delta, counted_qty, occurred_at, kafka_partition, kafka_offset)"
            ),
            10,
            "ON CONFLICT (event_id, line_no) DO NOTHING",
            &d.movements,
            |q, m| {
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
            },
        )
        .await?;

        // Stock: rows that only add, then rows a blind count overwrote (a different conflict rule).
        let head = format!(
            "INSERT INTO {color}_stock AS t (store_id, sku, on_hand, version, last_event_id, \
             last_occurred_at, below_zero)"
        );
        let (adds, sets): (Vec<_>, Vec<_>) = d.stock.iter().partition(|s| s.set.is_none());
        fn bind_stock<'q>(q: AnyQuery<'q>, s: &&model::StockDelta<'_>) -> AnyQuery<'q> {
            let on_hand = s.set.unwrap_or(0).saturating_add(s.add);
            q.bind(s.store_id)
                .bind(s.sku)
                .bind(on_hand)
                .bind(s.moves)
                .bind(s.last_event_id)
                .bind(s.last_occurred_at)
                .bind(i64::from(on_hand < 0))
        }
        let mut below = 0usize;
        let returned = self
            .exec_rows(
                conn,
                &head,
                7,
                "ON CONFLICT (store_id, sku) DO UPDATE SET \
                 on_hand = t.on_hand + excluded.on_hand, \
                 version = t.version + excluded.version, \
                 last_event_id = excluded.last_event_id, \
                 last_occurred_at = excluded.last_occurred_at, \
                 below_zero = CASE WHEN t.on_hand + excluded.on_hand < 0 THEN 1 ELSE 0 END \
                 RETURNING below_zero",
                &adds,
                bind_stock,
            )
            .await?;
        below += count_flagged(&returned)?;
        let returned = self
            .exec_rows(
                conn,
                &head,
                7,
                "ON CONFLICT (store_id, sku) DO UPDATE SET \
                 on_hand = excluded.on_hand, \
                 version = t.version + excluded.version, \
                 last_event_id = excluded.last_event_id, \
                 last_occurred_at = excluded.last_occurred_at, \
                 below_zero = excluded.below_zero \
                 RETURNING below_zero",
                &sets,
                bind_stock,
            )
            .await?;
        below += count_flagged(&returned)?;

        self.exec_rows(
            conn,
            &format!(
                "INSERT INTO {color}_sales_hourly AS t (store_id, sku, hour_start, currency, qty_sold, \
                 gross_minor, discounts_minor, tax_minor, net_minor, qty_returned, refunded_minor, \
                 refunded_tax_minor, sale_lines, refund_lines)"
            ),
            14,
            "ON CONFLICT (store_id, sku, hour_start, currency) DO UPDATE SET \
             qty_sold = t.qty_sold + excluded.qty_sold, \
             gross_minor = t.gross_minor + excluded.gross_minor, \
             discounts_minor = t.discounts_minor + excluded.discounts_minor, \
             tax_minor = t.tax_minor + excluded.tax_minor, \
             net_minor = t.net_minor + excluded.net_minor, \
             qty_returned = t.qty_returned + excluded.qty_returned, \
             refunded_minor = t.refunded_minor + excluded.refunded_minor, \
             refunded_tax_minor = t.refunded_tax_minor + excluded.refunded_tax_minor, \
             sale_lines = t.sale_lines + excluded.sale_lines, \
             refund_lines = t.refund_lines + excluded.refund_lines",
            &d.sales,
            |q, s| {
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
            },
        )
        .await?;

        self.exec_rows(
            conn,
            &format!(
                "INSERT INTO {color}_reservation AS t (store_id, reservation_id, sku, status, \
                 requested_qty, granted_qty, released_qty, requested_at, granted_at, granted_by, \
                 expires_at, released_at, release_reason, order_ref)"
            ),
            14,
            "ON CONFLICT (store_id, reservation_id) DO UPDATE SET \
             requested_qty = COALESCE(t.requested_qty, excluded.requested_qty), \
             granted_qty = COALESCE(t.granted_qty, excluded.granted_qty), \
             released_qty = COALESCE(t.released_qty, excluded.released_qty), \
             requested_at = COALESCE(t.requested_at, excluded.requested_at), \
             granted_at = COALESCE(t.granted_at, excluded.granted_at), \
             granted_by = COALESCE(t.granted_by, excluded.granted_by), \
             expires_at = COALESCE(excluded.expires_at, t.expires_at), \
             released_at = COALESCE(t.released_at, excluded.released_at), \
             release_reason = COALESCE(t.release_reason, excluded.release_reason), \
             order_ref = COALESCE(t.order_ref, excluded.order_ref), \
             status = CASE \
               WHEN COALESCE(t.release_reason, excluded.release_reason) = 'EXPIRED' THEN 'EXPIRED' \
               WHEN COALESCE(t.released_at, excluded.released_at) IS NOT NULL THEN 'RELEASED' \
               WHEN COALESCE(t.granted_at, excluded.granted_at) IS NOT NULL THEN 'GRANTED' \
               ELSE 'REQUESTED' END",
            &d.reservations,
            |q, r| {
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
            },
        )
        .await?;

        self.exec_rows(
            conn,
            &format!(
                "INSERT INTO {color}_store_sync AS t (store_id, last_event_at, last_seen_at, \
                 last_lag_ms, max_lag_ms, last_business_date, events_total, offline_events_total, \
                 last_event_id)"
            ),
            9,
            "ON CONFLICT (store_id) DO UPDATE SET \
             last_event_at = CASE WHEN excluded.last_event_at > t.last_event_at \
               THEN excluded.last_event_at ELSE t.last_event_at END, \
             last_seen_at = CASE WHEN excluded.last_seen_at > t.last_seen_at \
               THEN excluded.last_seen_at ELSE t.last_seen_at END, \
             last_lag_ms = excluded.last_lag_ms, \
             max_lag_ms = CASE WHEN excluded.max_lag_ms > t.max_lag_ms \
               THEN excluded.max_lag_ms ELSE t.max_lag_ms END, \
             last_business_date = CASE WHEN excluded.last_business_date > t.last_business_date \
               THEN excluded.last_business_date ELSE t.last_business_date END, \
             events_total = t.events_total + excluded.events_total, \
             offline_events_total = t.offline_events_total + excluded.offline_events_total, \
             last_event_id = excluded.last_event_id",
            &d.sync,
            |q, s| {
                q.bind(s.store_id)
                    .bind(s.last_event_at)
                    .bind(s.last_seen_at)
                    .bind(s.last_lag_ms)
                    .bind(s.max_lag_ms)
                    .bind(s.last_business_date)
                    .bind(s.events)
                    .bind(s.offline_events)
                    .bind(s.last_event_id)
            },
        )
        .await?;

        self.exec_rows(
            conn,
            &format!(
                "INSERT INTO {color}_store_day AS t (store_id, business_date, events, offline_events, \
                 orders, refunds, adjustments)"
            ),
            7,
            "ON CONFLICT (store_id, business_date) DO UPDATE SET \
             events = t.events + excluded.events, \
             offline_events = t.offline_events + excluded.offline_events, \
             orders = t.orders + excluded.orders, \
             refunds = t.refunds + excluded.refunds, \
             adjustments = t.adjustments + excluded.adjustments",
            &d.days,
            |q, r| {
                q.bind(r.store_id)
                    .bind(r.business_date)
                    .bind(r.d.events)
                    .bind(r.d.offline_events)
                    .bind(r.d.orders)
                    .bind(r.d.refunds)
                    .bind(r.d.adjustments)
            },
        )
        .await?;
        Ok(below)
    }

    async fn upsert_offsets(
        &self,
        conn: &mut AnyConnection,
        color: Color,
        topic: &str,
        next: &BTreeMap<i32, i64>,
    ) -> Result<(), DbError> {
        let rows: Vec<(i64, i64)> = next.iter().map(|(p, o)| (i64::from(*p), *o)).collect();
        // Offsets only move forward: a late batch from a previous owner cannot move them back.
        self.exec_rows(
            conn,
            &format!(
                "INSERT INTO {color}_consumer_offset AS t (topic, kafka_partition, next_offset)"
            ),
            3,
            "ON CONFLICT (topic, kafka_partition) DO UPDATE SET next_offset = \
             CASE WHEN excluded.next_offset > t.next_offset THEN excluded.next_offset \
             ELSE t.next_offset END",
            &rows,
            |q, (p, o)| q.bind(topic.to_string()).bind(*p).bind(*o),
        )
        .await?;
        Ok(())
    }

    /// The canonical dump of a set: every table, every row rendered as tab-separated text (`\N` for
    /// NULL), rows sorted bytewise (independent of the database's collation), tables in a fixed
    /// order. Two sets hold the same data iff their dumps are byte-identical, on either backend.
    pub async fn dump(&self, color: Color) -> Result<String, DbError> {
        let mut conn = self.pool.acquire().await?;
        dump_on(&mut conn, color).await
    }

    /// Compares a rebuilt set with the live one under the state lock and, when they match (or when
    /// `force`), points the views at it. See [`Switch`].
    pub async fn try_switch(
        &self,
        rebuilt: Color,
        topic: &str,
        force: bool,
    ) -> Result<Switch, DbError> {
        let mut tx = self.pool.begin().await?;
        let live = Self::lock_state(&mut tx).await?;
        if live == rebuilt {
            return Err(DbError::Invalid(format!(
                "{rebuilt} is already the live set"
            )));
        }
        let live_off = Self::offsets_on(&mut tx, live, topic).await?;
        let new_off = Self::offsets_on(&mut tx, rebuilt, topic).await?;
        let compared = !live_off.is_empty();
        if compared && !force {
            if live_off != new_off {
                let ahead = live_off
                    .iter()
                    .any(|(p, o)| new_off.get(p).is_none_or(|n| o > n));
                tx.rollback().await?;
                return Ok(if ahead {
                    Switch::LiveAhead(live_off)
                } else {
                    Switch::LiveBehind(live_off)
                });
            }
            let a = dump_on(&mut tx, live).await?;
            let b = dump_on(&mut tx, rebuilt).await?;
            if a != b {
                let (la, lb) = first_difference(&a, &b);
                tx.rollback().await?;
                return Ok(Switch::Differs {
                    live: la,
                    rebuilt: lb,
                });
            }
        }
        sqlx::query(
            "UPDATE projection_state SET active_color = $1, switches = switches + 1 WHERE id = 1",
        )
        .bind(rebuilt.name())
        .execute(&mut *tx)
        .await?;
        self.create_views(&mut tx, rebuilt).await?;
        tx.commit().await?;
        Ok(Switch::Done {
            compared: compared && !force,
        })
    }

    /// Upserts reorder points from CSV text `store_id,sku,reorder_point[,reorder_qty]` (a header
    /// line starting with `store_id` is skipped). Returns the rows written.
    pub async fn import_reorder_points(&self, csv: &str) -> Result<usize, DbError> {
        let mut rows = Vec::new();
        for (i, line) in csv.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') || line.starts_with("store_id") {
                continue;
            }
            let f: Vec<&str> = line.split(',').map(str::trim).collect();
            let bad = || DbError::Invalid(format!("line {}: {line:?}", i + 1));
            if f.len() < 3 || f[0].is_empty() || f[1].is_empty() {
                return Err(bad());
            }
            let rp: i64 = f[2].parse().map_err(|_| bad())?;
            let rq: Option<i64> = match f.get(3) {
                Some(s) if !s.is_empty() => Some(s.parse().map_err(|_| bad())?),
                _ => None,
            };
            rows.push((f[0].to_string(), f[1].to_string(), rp, rq));
        }
        let mut tx = self.pool.begin().await?;
        self.exec_rows(
            &mut tx,
            "INSERT INTO reorder_point (store_id, sku, reorder_point, reorder_qty)",
            4,
            "ON CONFLICT (store_id, sku) DO UPDATE SET reorder_point = excluded.reorder_point, \
             reorder_qty = excluded.reorder_qty",
            &rows,
            |q, r| q.bind(r.0.clone()).bind(r.1.clone()).bind(r.2).bind(r.3),
        )
        .await?;
        tx.commit().await?;
        Ok(rows.len())
    }

    /// Verifies the connection (readiness).
    pub async fn ping(&self) -> Result<(), DbError> {
        let mut conn = self.pool.acquire().await?;
        conn.ping().await?;
        Ok(())
    }
}

fn count_flagged(rows: &[AnyRow]) -> Result<usize, DbError> {
    let mut n = 0;
    for r in rows {
        if r.try_get::<i64, _>(0)? != 0 {
            n += 1;
        }
    }
    Ok(n)
}

/// `head VALUES ($1, ..., $ncols), (...) tail` for `nrows` rows (`?` placeholders on SQLite).
///
/// Why two placeholder styles: SQLite treats `$N` as a *named* parameter, and sqlx binds by asking
/// `sqlite3_bind_parameter_name` for each index, which walks the statement's name list: O(n²) per
/// execution (78% of the apply time in the bench at 10k parameters). Anonymous `?` parameters have
/// no names, so binding is O(n). PostgreSQL only knows `$N`. Everything else is one dialect.
pub fn values_sql(backend: Backend, head: &str, ncols: usize, nrows: usize, tail: &str) -> String {
    use std::fmt::Write;
    let mut s = String::with_capacity(head.len() + tail.len() + nrows * ncols * 7 + 16);
    s.push_str(head);
    s.push_str(" VALUES ");
    let mut n = 0;
    for r in 0..nrows {
        if r > 0 {
            s.push(',');
        }
        s.push('(');
        for c in 0..ncols {
            if c > 0 {
                s.push(',');
            }
            n += 1;
            match backend {
                Backend::Sqlite => s.push('?'),
                Backend::Postgres => {
                    let _ = write!(s, "${n}");
                }
            }
        }
        s.push(')');
    }
    s.push(' ');
    s.push_str(tail);
    s
}

/// The view statements for `color` on `backend`.
pub fn view_statements(color: Color, backend: Backend) -> Vec<String> {
    VIEWS_SQL
        .split("\n;;\n")
        .map(|s| {
            s.replace("{c}", color.name())
                .replace("{now_ms}", backend.now_ms_sql())
        })
        .filter(|s| s.contains("CREATE VIEW"))
        .collect()
}

/// Names of the analyst views, in creation order.
pub fn view_names() -> Vec<&'static str> {
    VIEWS_SQL
        .lines()
        .filter_map(|l| l.strip_prefix("CREATE VIEW "))
        .filter_map(|l| l.split_whitespace().next())
        .collect()
}

fn render_text(s: &str, out: &mut String) {
    for ch in s.chars() {
        match ch {
            '\\' => out.push_str("\\\\"),
            '\t' => out.push_str("\\t"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            c => out.push(c),
        }
    }
}

async fn dump_on(conn: &mut AnyConnection, color: Color) -> Result<String, DbError> {
    use std::fmt::Write;
    let mut out = String::new();
    for t in TABLES {
        let cols: Vec<&str> = t.columns.iter().map(|c| c.0).collect();
        let sql = format!("SELECT {} FROM {color}_{}", cols.join(", "), t.name);
        let rows = sqlx::query(AssertSqlSafe(sql))
            .fetch_all(&mut *conn)
            .await?;
        let mut lines = Vec::with_capacity(rows.len());
        for r in &rows {
            let mut line = String::new();
            for (i, (_, ty)) in t.columns.iter().enumerate() {
                if i > 0 {
                    line.push('\t');
                }
                match ty {
                    ColType::Int => {
                        let v: Option<i64> = r.try_get(i)?;
                        match v {
                            Some(v) => {
                                let _ = write!(line, "{v}");
                            }
                            None => line.push_str("\\N"),
                        }
                    }
                    ColType::Text => {
                        let v: Option<String> = r.try_get(i)?;
                        match v {
                            Some(v) => render_text(&v, &mut line),
                            None => line.push_str("\\N"),
                        }
                    }
                }
            }
            lines.push(line);
        }
        lines.sort_unstable();
        let _ = writeln!(out, "## {} ({} rows)", t.name, lines.len());
        for l in lines {
            out.push_str(&l);
            out.push('\n');
        }
    }
    Ok(out)
}

/// The first line where two dumps differ (for error messages).
pub fn first_difference(a: &str, b: &str) -> (String, String) {
    let mut la = a.lines();
    let mut lb = b.lines();
    loop {
        match (la.next(), lb.next()) {
            (Some(x), Some(y)) if x == y => continue,
            (x, y) => {
                return (
                    x.unwrap_or("<end>").to_string(),
                    y.unwrap_or("<end>").to_string(),
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Instances starting together on a fresh SQLite file all come up (sqlx locks migrations on
    /// PostgreSQL only; on SQLite the losers of the race used to fail with "table already exists").
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn instances_starting_together_on_a_fresh_sqlite_file_all_come_up() {
        for round in 0..5 {
            let dir = tempfile::tempdir().unwrap();
            let cfg = DatabaseConfig {
                url: dir.path().join("p.db").display().to_string(),
                ..DatabaseConfig::default()
            };
            let tasks: Vec<_> = (0..4)
                .map(|_| {
                    let cfg = cfg.clone();
                    tokio::spawn(async move { Db::connect(&cfg).await.map(|_| ()) })
                })
                .collect();
            for t in tasks {
                if let Err(e) = t.await.unwrap() {
                    panic!("round {round}: {e}");
                }
            }
            let db = Db::connect(&cfg).await.unwrap();
            let rows: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM projection_state")
                .fetch_one(db.pool())
                .await
                .unwrap();
            assert_eq!(rows, 1);
        }
    }

    #[test]
    fn urls_resolve_to_a_backend() {
        assert_eq!(
            resolve_url("postgres://u:p@127.0.0.1:5/db"),
            (Backend::Postgres, "postgres://u:p@127.0.0.1:5/db".into())
        );
        assert_eq!(
            resolve_url("data/x.db"),
            (Backend::Sqlite, "sqlite://data/x.db?mode=rwc".into())
        );
        assert_eq!(
            resolve_url("sqlite:///tmp/x.db?mode=ro"),
            (Backend::Sqlite, "sqlite:///tmp/x.db?mode=ro".into())
        );
    }

    #[test]
    fn values_sql_numbers_placeholders_row_by_row() {
        assert_eq!(
            values_sql(
                Backend::Postgres,
                "INSERT INTO t (a, b)",
                2,
                2,
                "ON CONFLICT DO NOTHING"
            ),
            "INSERT INTO t (a, b) VALUES ($1,$2),($3,$4) ON CONFLICT DO NOTHING"
        );
        assert_eq!(
            values_sql(Backend::Sqlite, "INSERT INTO t (a)", 1, 2, ""),
            "INSERT INTO t (a) VALUES (?),(?) "
        );
    }

    #[test]
    fn blue_and_green_sets_are_the_same_ddl() {
        let (head, rest) = MIGRATION_0001.split_once("-- Table set \"blue\"").unwrap();
        assert!(head.contains("projection_state"));
        let (blue, green) = rest.split_once("-- Table set \"green\"").unwrap();
        let norm = |s: &str| {
            s.lines()
                .skip(1)
                .filter(|l| !l.starts_with("--"))
                .collect::<Vec<_>>()
                .join("\n")
                .replace("green_", "X_")
                .replace("blue_", "X_")
                .trim()
                .to_string()
        };
        assert_eq!(norm(blue), norm(green));
        for t in TABLES {
            for c in ["blue", "green"] {
                assert!(
                    MIGRATION_0001.contains(&format!("CREATE TABLE {c}_{} (", t.name)),
                    "{c}_{} missing",
                    t.name
                );
            }
        }
    }

    #[test]
    fn every_view_is_created_for_the_colour() {
        let stmts = view_statements(Color::Green, Backend::Sqlite);
        assert_eq!(stmts.len(), view_names().len());
        assert!(
            stmts
                .iter()
                .all(|s| !s.contains("{c}") && !s.contains("blue_"))
        );
        assert!(view_names().contains(&"stock_below_reorder_point"));
    }

    #[test]
    fn sqlite_and_postgres_error_codes_are_classified() {
        assert_eq!(
            classify_sqlx(&sqlx::Error::PoolTimedOut),
            ErrorClass::Retryable
        );
    }
}
