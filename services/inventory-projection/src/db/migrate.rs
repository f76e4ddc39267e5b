//! The projection's schema migrations (`migrations/*.sql`, embedded) and the table that records
//! them. The record lives in a table of the projection's own ([`MIGRATIONS_TABLE`]), not in sqlx's
//! default `_sqlx_migrations`, so other services sharing the database (conflict detector, finance
//! export) keep their own records without colliding with the projection's versions.
//!
//! A database migrated by an earlier version of the projection has its record in
//! `_sqlx_migrations`: the first start of this version copies that record (the versions whose
//! checksums match the projection's own migrations, nothing else) into the projection's table
//! without running those migrations again, and leaves `_sqlx_migrations` as it is.
//!
//! Delivery guarantee: none of its own; a migration is applied once and recorded in the same step
//! (sqlx runs each in a transaction), and instances starting together all come up.

use std::time::Duration;

use sqlx::migrate::{Migration, MigrationType, Migrator};
use sqlx::{AssertSqlSafe, Row, SqlSafeStr};

use super::{Backend, Db, DbError};

/// The schema, embedded: runs unchanged on PostgreSQL and SQLite.
pub const MIGRATION_0001: &str = include_str!("../../migrations/0001_projection.sql");

/// Where the projection records the migrations it applied.
pub const MIGRATIONS_TABLE: &str = "_tillstream_projection_migrations";

/// Where versions before [`MIGRATIONS_TABLE`] recorded them (sqlx's default table, which another
/// service may use for its own migrations).
pub const LEGACY_MIGRATIONS_TABLE: &str = "_sqlx_migrations";

/// The projection's migrator, recording into [`MIGRATIONS_TABLE`].
pub fn migrator() -> Migrator {
    let mut migrator = Migrator::with_migrations(vec![Migration::new(
        1,
        "projection".into(),
        MigrationType::Simple,
        MIGRATION_0001.into_sql_str(),
        false,
    )]);
    // "dangerous" in sqlx's words because renaming the table of a database already migrated makes
    // sqlx forget what it applied: `adopt_legacy_record` carries the earlier record over first.
    migrator.dangerous_set_table_name(MIGRATIONS_TABLE);
    migrator
}

impl Db {
    /// Brings the schema up to date.
    pub(crate) async fn migrate(&self) -> Result<(), DbError> {
        let migrator = migrator();
        // sqlx serialises migrations with an advisory lock on PostgreSQL only. On SQLite, two
        // processes opening a fresh file at once both try to apply; the loser fails ("table ...
        // already exists") when the winner commits, and a second pass finds the migration applied.
        // A real migration error fails every pass and is returned.
        let mut attempt = 0u64;
        loop {
            let pass = async {
                self.adopt_legacy_record(&migrator).await?;
                migrator.run(&self.pool).await?;
                Ok::<(), DbError>(())
            };
            match pass.await {
                Ok(()) => return Ok(()),
                Err(e) if self.backend == Backend::Sqlite && attempt < 5 => {
                    attempt += 1;
                    tracing::debug!(error = %e, attempt, "migration raced another instance; checking again");
                    tokio::time::sleep(Duration::from_millis(50 * attempt)).await;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// When the projection's table records nothing yet and the legacy table records the
    /// projection's own migrations (same version, same checksum), records those as applied in the
    /// projection's table without running them.
    async fn adopt_legacy_record(&self, migrator: &Migrator) -> Result<(), DbError> {
        if self
            .applied_in(MIGRATIONS_TABLE)
            .await?
            .is_some_and(|rows| !rows.is_empty())
        {
            return Ok(());
        }
        let Some(legacy) = self.applied_in(LEGACY_MIGRATIONS_TABLE).await? else {
            return Ok(());
        };
        let adopted = migrator
            .iter()
            .take_while(|m| {
                legacy
                    .iter()
                    .any(|(v, sum)| *v == m.version && sum[..] == m.checksum[..])
            })
            .map(|m| m.version)
            .last();
        if let Some(version) = adopted {
            tracing::info!(
                version,
                from = LEGACY_MIGRATIONS_TABLE,
                to = MIGRATIONS_TABLE,
                "carrying the record of migrations applied by an earlier version over"
            );
            migrator.skip(&self.pool, Some(version)).await?;
        }
        Ok(())
    }

    /// (version, checksum) of the successful migrations recorded in `table`; `None` when the
    /// table does not exist.
    async fn applied_in(&self, table: &str) -> Result<Option<Vec<(i64, Vec<u8>)>>, DbError> {
        let exists = match self.backend {
            Backend::Sqlite => {
                "SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name = $1"
            }
            Backend::Postgres => {
                "SELECT COUNT(*) FROM information_schema.tables \
                 WHERE table_schema = current_schema() AND table_name = $1"
            }
        };
        let n: i64 = sqlx::query(exists)
            .bind(table)
            .fetch_one(&self.pool)
            .await?
            .try_get(0)?;
        if n == 0 {
            return Ok(None);
        }
        let rows = sqlx::query(AssertSqlSafe(format!(
            "SELECT version, checksum FROM {table} WHERE success ORDER BY version"
        )))
        .fetch_all(&self.pool)
        .await?;
        let applied = rows
            .iter()
            .map(|r| Ok((r.try_get::<i64, _>(0)?, r.try_get::<Vec<u8>, _>(1)?)))
            .collect::<Result<Vec<_>, DbError>>()?;
        Ok(Some(applied))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::DatabaseConfig;

    fn sqlite(dir: &tempfile::TempDir) -> DatabaseConfig {
        DatabaseConfig {
            url: dir.path().join("p.db").display().to_string(),
            ..DatabaseConfig::default()
        }
    }

    /// Instances starting together on a fresh SQLite file all come up (sqlx locks migrations on
    /// PostgreSQL only; on SQLite the losers of the race used to fail with "table already exists").
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn instances_starting_together_on_a_fresh_sqlite_file_all_come_up() {
        for round in 0..5 {
            let dir = tempfile::tempdir().unwrap();
            let cfg = sqlite(&dir);
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
}
