//! The projection's migrations record on a database it shares with other services, on SQLite and
//! on a real PostgreSQL: its record table is its own, so another service's migrations (with their
//! own versions, in their own table or in sqlx's default one) never collide with it; and a database
//! migrated by the previous version (record in `_sqlx_migrations`) comes up with its data.

mod common;

use sqlx::migrate::{Migration, MigrationType, Migrator};
use sqlx::{AnyPool, Connection, SqlSafeStr};
use tillstream_integration_tests::{Stack, Svc};
use tillstream_inventory_projection::db::{
    DatabaseConfig, Db, LEGACY_MIGRATIONS_TABLE, MIGRATIONS_TABLE, migrator,
};

/// Another service's migrations (a conflict detector's, say): version 1 too, other SQL.
fn other_service(table: &'static str) -> Migrator {
    let mut m = Migrator::with_migrations(vec![Migration::new(
        1,
        "conflicts".into(),
        MigrationType::Simple,
        "CREATE TABLE conflict_probe (id BIGINT NOT NULL PRIMARY KEY)".into_sql_str(),
        false,
    )]);
    m.dangerous_set_table_name(table);
    m
}

async fn pool(cfg: &DatabaseConfig) -> AnyPool {
    sqlx::any::install_default_drivers();
    let (_, url) = tillstream_inventory_projection::db::resolve_url(&cfg.url);
    AnyPool::connect(&url).await.unwrap()
}

/// (version, description) rows of a record table.
async fn recorded(pool: &AnyPool, table: &str) -> Vec<(i64, String)> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT version, description FROM {table} ORDER BY version"
    )))
    .fetch_all(pool)
    .await
    .unwrap()
}

/// Every (version, description) of the projection's migrations.
fn projection_migrations() -> Vec<(i64, String)> {
    migrator()
        .iter()
        .map(|m| (m.version, m.description.to_string()))
        .collect()
}

async fn count(pool: &AnyPool, table: &str) -> i64 {
    sqlx::query_scalar(sqlx::AssertSqlSafe(format!("SELECT COUNT(*) FROM {table}")))
        .fetch_one(pool)
        .await
        .unwrap()
}

/// The other service migrates before and after the projection, each in its own table: both
/// schemas exist, each table records its own versions only, and running either again is a no-op.
async fn migrators_with_their_own_tables_do_not_collide(cfg: &DatabaseConfig) {
    let pool = pool(cfg).await;
    let other = other_service("_tillstream_conflicts_migrations");
    other.run(&pool).await.unwrap();
    Db::connect(cfg).await.unwrap();
    other.run(&pool).await.unwrap();
    Db::connect(cfg).await.unwrap();
    assert_eq!(count(&pool, "projection_state").await, 1);
    assert_eq!(count(&pool, "conflict_probe").await, 0);
    assert_eq!(
        recorded(&pool, MIGRATIONS_TABLE).await,
        projection_migrations()
    );
    assert_eq!(
        recorded(&pool, "_tillstream_conflicts_migrations").await,
        vec![(1, "conflicts".to_string())]
    );
}

/// A database the previous version created (record in `_sqlx_migrations`, data in it) comes up
/// unchanged and its record is carried over; another service using `_sqlx_migrations` for its own
/// version 1 is neither mistaken for the projection's schema nor disturbed.
async fn previous_versions_record_is_adopted_and_another_services_is_not(
    previous: &DatabaseConfig,
    shared: &DatabaseConfig,
) {
    let old = pool(previous).await;
    // The previous version knew migration 1 only; this one adopts it and runs the rest (on a
    // database holding data).
    let mut previous_version =
        Migrator::with_migrations(migrator().iter().take(1).cloned().collect());
    previous_version.dangerous_set_table_name(LEGACY_MIGRATIONS_TABLE);
    previous_version.run(&old).await.unwrap();
    sqlx::query("INSERT INTO reorder_point (store_id, sku, reorder_point) VALUES ('*', 'A', 3)")
        .execute(&old)
        .await
        .unwrap();
    Db::connect(previous).await.unwrap();
    assert_eq!(
        recorded(&old, MIGRATIONS_TABLE).await,
        projection_migrations()
    );
    assert_eq!(
        recorded(&old, LEGACY_MIGRATIONS_TABLE).await,
        vec![(1, "projection".to_string())],
        "the legacy record is left as it was"
    );
    assert_eq!(count(&old, "reorder_point").await, 1, "data kept");
    assert_eq!(count(&old, "projection_state").await, 1);

    let pool = pool(shared).await;
    other_service(LEGACY_MIGRATIONS_TABLE)
        .run(&pool)
        .await
        .unwrap();
    Db::connect(shared).await.unwrap();
    assert_eq!(count(&pool, "projection_state").await, 1, "schema created");
    assert_eq!(
        recorded(&pool, LEGACY_MIGRATIONS_TABLE).await,
        vec![(1, "conflicts".to_string())]
    );
    assert_eq!(
        recorded(&pool, MIGRATIONS_TABLE).await,
        projection_migrations()
    );
}

fn sqlite(dir: &tempfile::TempDir, name: &str) -> DatabaseConfig {
    common::db_config(&dir.path().join(name).display().to_string())
}

#[tokio::test(flavor = "multi_thread")]
async fn sqlite_migrations_share_the_file_with_another_service() {
    let dir = tempfile::tempdir().unwrap();
    migrators_with_their_own_tables_do_not_collide(&sqlite(&dir, "shared.db")).await;
    previous_versions_record_is_adopted_and_another_services_is_not(
        &sqlite(&dir, "previous.db"),
        &sqlite(&dir, "default-table.db"),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn postgres_migrations_share_the_database_with_another_service() {
    let stack = Stack::start(&[Svc::Postgres], None).unwrap();
    let base = stack.pg_url();
    let prefix = base.rsplit_once('/').unwrap().0.to_string();
    let mut admin = sqlx::PgConnection::connect(&base).await.unwrap();
    for name in ["shared", "previous", "default_table"] {
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "CREATE DATABASE migrations_{name}"
        )))
        .execute(&mut admin)
        .await
        .unwrap();
    }
    let db = |name: &str| common::db_config(&format!("{prefix}/migrations_{name}"));
    migrators_with_their_own_tables_do_not_collide(&db("shared")).await;
    previous_versions_record_is_adopted_and_another_services_is_not(
        &db("previous"),
        &db("default_table"),
    )
    .await;
}
