//! A service's schema migrations, recorded in a table of the service's own ([`migrator`]) rather
//! than sqlx's default `_sqlx_migrations`, so services sharing one database (one PostgreSQL in
//! production) keep their versions apart; and running them so that instances starting together
//! all come up ([`migrate`], [`migrate_with`]). Reading a record table ([`recorded_migrations`])
//! serves a service that carries an older record over.
//!
//! Delivery guarantee: none of its own; a migration is applied once and recorded in the same step
//! (sqlx runs each in a transaction).

use std::borrow::Cow;
use std::future::Future;
use std::time::Duration;

use sqlx::migrate::{Migration, Migrator};
use sqlx::{AssertSqlSafe, Row};

use super::{Backend, Database, SqlError};

/// Passes on SQLite before a failing pass's error is returned (a race lost to another instance is
/// over after one more pass; a real error fails them all).
const SQLITE_PASSES: u64 = 6;

/// A migrator for `migrations` that records them in `record_table` (e.g.
/// `_conflict_detector_migrations`).
pub fn migrator(
    record_table: impl Into<Cow<'static, str>>,
    migrations: Vec<Migration>,
) -> Migrator {
    let mut migrator = Migrator::with_migrations(migrations);
    // "dangerous" in sqlx's words because renaming the table of a database already migrated makes
    // sqlx forget what it applied: a service that moves its record carries it over first (see the
    // inventory projection's `migrate`).
    migrator.dangerous_set_table_name(record_table);
    migrator
}

/// Brings the schema up to date ([`migrate_with`] with nothing before each pass).
pub async fn migrate(db: &Database, migrator: &Migrator) -> Result<(), SqlError> {
    migrate_with(db, migrator, || async { Ok::<(), SqlError>(()) }).await
}

/// Brings the schema up to date, running `before_each_pass` first in every pass (e.g. carrying a
/// record an earlier version kept elsewhere over).
///
/// sqlx serialises migrators with an advisory lock on PostgreSQL only. On SQLite, two processes
/// opening a fresh file at once both try to apply; the loser fails ("table ... already exists")
/// when the winner commits, and a later pass finds the migration applied. A real migration error
/// fails every pass and is returned.
pub async fn migrate_with<E, Fut>(
    db: &Database,
    migrator: &Migrator,
    mut before_each_pass: impl FnMut() -> Fut,
) -> Result<(), E>
where
    E: From<SqlError> + std::fmt::Display,
    Fut: Future<Output = Result<(), E>>,
{
    let mut attempt = 0u64;
    loop {
        let pass = async {
            before_each_pass().await?;
            migrator
                .run(db.pool())
                .await
                .map_err(|e| E::from(SqlError::from(e)))
        };
        match pass.await {
            Ok(()) => return Ok(()),
            Err(e) if db.backend() == Backend::Sqlite && attempt + 1 < SQLITE_PASSES => {
                attempt += 1;
                tracing::debug!(error = %e, attempt, record = %migrator.table_name, "migration raced another instance; checking again");
                tokio::time::sleep(Duration::from_millis(50 * attempt)).await;
            }
            Err(e) => return Err(e),
        }
    }
}

/// One successful migration a record table holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppliedMigration {
    pub version: i64,
    /// sqlx's checksum of the migration's SQL (what tells one service's version 1 from another's).
    pub checksum: Vec<u8>,
}

/// Whether `table` exists (in the current schema on PostgreSQL).
pub async fn table_exists(db: &Database, table: &str) -> Result<bool, SqlError> {
    let sql = match db.backend() {
        Backend::Sqlite => "SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name = $1",
        Backend::Postgres => {
            "SELECT COUNT(*) FROM information_schema.tables \
             WHERE table_schema = current_schema() AND table_name = $1"
        }
    };
    let n: i64 = sqlx::query(sql)
        .bind(table)
        .fetch_one(db.pool())
        .await?
        .try_get(0)?;
    Ok(n > 0)
}

/// The successful migrations recorded in sqlx record table `table`, by version; `None` when the
/// table does not exist.
pub async fn recorded_migrations(
    db: &Database,
    table: &str,
) -> Result<Option<Vec<AppliedMigration>>, SqlError> {
    if !table_exists(db, table).await? {
        return Ok(None);
    }
    let rows = sqlx::query(AssertSqlSafe(format!(
        "SELECT version, checksum FROM {table} WHERE success ORDER BY version"
    )))
    .fetch_all(db.pool())
    .await?;
    let applied = rows
        .iter()
        .map(|r| {
            Ok(AppliedMigration {
                version: r.try_get(0)?,
                checksum: r.try_get(1)?,
            })
        })
        .collect::<Result<Vec<_>, sqlx::Error>>()?;
    Ok(Some(applied))
}

#[cfg(test)]
mod tests {
    use sqlx::SqlSafeStr;
    use sqlx::migrate::MigrationType;

    use super::*;
    use crate::sql::{DatabaseConfig, connect};

    fn probe_migrator(record_table: &'static str) -> Migrator {
        migrator(
            record_table,
            vec![Migration::new(
                1,
                "probe".into(),
                MigrationType::Simple,
                "CREATE TABLE probe (id BIGINT NOT NULL PRIMARY KEY); \
                 INSERT INTO probe (id) VALUES (1);"
                    .into_sql_str(),
                false,
            )],
        )
    }

    /// Instances starting together on a fresh SQLite file all come up, and the migration ran once.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn instances_starting_together_on_a_fresh_sqlite_file_all_come_up() {
        for round in 0..5 {
            let dir = tempfile::tempdir().unwrap();
            let cfg = DatabaseConfig {
                url: dir.path().join("s.db").display().to_string(),
                ..DatabaseConfig::default()
            };
            let tasks: Vec<_> = (0..4)
                .map(|_| {
                    let cfg = cfg.clone();
                    tokio::spawn(async move {
                        let db = connect(&cfg).await?;
                        migrate(&db, &probe_migrator("_probe_migrations")).await
                    })
                })
                .collect();
            for t in tasks {
                if let Err(e) = t.await.unwrap() {
                    panic!("round {round}: {e}");
                }
            }
            let db = connect(&cfg).await.unwrap();
            let rows: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM probe")
                .fetch_one(db.pool())
                .await
                .unwrap();
            assert_eq!(rows, 1);
        }
    }

    /// The record lands in the service's own table; sqlx's default table is never created.
    #[tokio::test]
    async fn the_record_is_kept_in_the_services_own_table() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = DatabaseConfig {
            url: dir.path().join("s.db").display().to_string(),
            ..DatabaseConfig::default()
        };
        let db = connect(&cfg).await.unwrap();
        assert_eq!(
            recorded_migrations(&db, "_probe_migrations").await.unwrap(),
            None
        );
        let m = probe_migrator("_probe_migrations");
        migrate(&db, &m).await.unwrap();
        migrate(&db, &m).await.unwrap();
        let recorded = recorded_migrations(&db, "_probe_migrations")
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            recorded,
            vec![AppliedMigration {
                version: 1,
                checksum: m.iter().next().unwrap().checksum.to_vec(),
            }]
        );
        assert!(!table_exists(&db, "_sqlx_migrations").await.unwrap());
    }
}
