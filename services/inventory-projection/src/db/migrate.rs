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
//! Running them (instances starting together all come up), reading a record table and the
//! migrator with its own table are the runtime's (`tillstream_runtime::sql::migrate`); the
//! projection's schema and the carrying over are this file's.
//!
//! Delivery guarantee: none of its own; a migration is applied once and recorded in the same step
//! (sqlx runs each in a transaction), and instances starting together all come up.

use sqlx::SqlSafeStr;
use sqlx::migrate::{Migration, MigrationType, Migrator};
use tillstream_runtime::sql;

use super::{Db, DbError};

/// The schema, embedded: runs unchanged on PostgreSQL and SQLite.
pub const MIGRATION_0001: &str = include_str!("../../migrations/0001_projection.sql");

/// The gate's `applied_at_ms` column (when each event was applied).
pub const MIGRATION_0002: &str = include_str!("../../migrations/0002_applied_at.sql");

/// Where the projection records the migrations it applied.
pub const MIGRATIONS_TABLE: &str = "_tillstream_projection_migrations";

/// Where versions before [`MIGRATIONS_TABLE`] recorded them (sqlx's default table, which another
/// service may use for its own migrations).
pub const LEGACY_MIGRATIONS_TABLE: &str = "_sqlx_migrations";

/// The projection's migrator, recording into [`MIGRATIONS_TABLE`].
pub fn migrator() -> Migrator {
    sql::migrator(
        MIGRATIONS_TABLE,
        vec![
            Migration::new(
                1,
                "projection".into(),
                MigrationType::Simple,
                MIGRATION_0001.into_sql_str(),
                false,
            ),
            Migration::new(
                2,
                "applied at".into(),
                MigrationType::Simple,
                MIGRATION_0002.into_sql_str(),
                false,
            ),
        ],
    )
}

impl Db {
    /// Brings the schema up to date (instances starting together all come up: see
    /// `tillstream_runtime::sql::migrate_with`), carrying an earlier version's record over first in
    /// every pass.
    pub(crate) async fn migrate(&self) -> Result<(), DbError> {
        let migrator = migrator();
        sql::migrate_with(&self.database, &migrator, || {
            self.adopt_legacy_record(&migrator)
        })
        .await
    }

    /// When the projection's table records nothing yet and the legacy table records the
    /// projection's own migrations (same version, same checksum), records those as applied in the
    /// projection's table without running them.
    async fn adopt_legacy_record(&self, migrator: &Migrator) -> Result<(), DbError> {
        if sql::recorded_migrations(&self.database, MIGRATIONS_TABLE)
            .await?
            .is_some_and(|rows| !rows.is_empty())
        {
            return Ok(());
        }
        let Some(legacy) =
            sql::recorded_migrations(&self.database, LEGACY_MIGRATIONS_TABLE).await?
        else {
            return Ok(());
        };
        let adopted = migrator
            .iter()
            .take_while(|m| {
                legacy
                    .iter()
                    .any(|l| l.version == m.version && l.checksum[..] == m.checksum[..])
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
            migrator.skip(self.pool(), Some(version)).await?;
        }
        Ok(())
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
