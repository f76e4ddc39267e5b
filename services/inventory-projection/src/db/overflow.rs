//! Sums that would leave 64 bits: the model refuses a batch whose own figures overflow
//! (`model::Overflow`, carried as [`DbError::Rejected`]); PostgreSQL refuses a sum with a row that
//! overflows (SQLSTATE 22003); on SQLite, which would store a REAL instead, triggers
//! (`sql/overflow_guard_sqlite.sql`) refuse it. All three are poison: the live loop isolates the
//! event and dead-letters it with the reason [`rejection_reason`] names.
//!
//! Delivery guarantee: none of its own (a refused batch commits nothing).

use sqlx::AssertSqlSafe;
use tillstream_runtime::sql::{Backend, SqlError};

use super::sets::Color;
use super::{Db, DbError};
use crate::model::OVERFLOW_REASON;

/// The SQLite triggers, one statement per `-- statement` line, for a table set.
const SQLITE_GUARD: &str = include_str!("sql/overflow_guard_sqlite.sql");

/// PostgreSQL's "numeric value out of range".
const PG_OUT_OF_RANGE: &str = "22003";

impl Db {
    /// Installs the SQLite overflow triggers on both table sets (idempotent; nothing on PostgreSQL,
    /// which refuses an overflowing sum by itself).
    pub(crate) async fn guard_overflow(&self) -> Result<(), DbError> {
        if self.backend() != Backend::Sqlite {
            return Ok(());
        }
        for color in [Color::Blue, Color::Green] {
            for stmt in SQLITE_GUARD.split("-- statement") {
                let stmt = stmt.replace("{color}", color.name());
                sqlx::raw_sql(AssertSqlSafe(stmt))
                    .execute(self.pool())
                    .await?;
            }
        }
        Ok(())
    }
}

/// The dead-letter reason of an event the batch transaction refused: [`OVERFLOW_REASON`] when a sum
/// would leave 64 bits (in the model or in the database), else `db_rejected`.
pub fn rejection_reason(e: &DbError) -> &'static str {
    let overflow = match e {
        DbError::Rejected(text) => text.starts_with(OVERFLOW_REASON),
        DbError::Sql(SqlError::Sqlx(sqlx::Error::Database(db))) => {
            db.code().as_deref() == Some(PG_OUT_OF_RANGE) || db.message().contains(OVERFLOW_REASON)
        }
        _ => false,
    };
    if overflow {
        OVERFLOW_REASON
    } else {
        "db_rejected"
    }
}
