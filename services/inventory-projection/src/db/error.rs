//! [`DbError`] and its classification (retryable / fatal / poison): the shared SQL plumbing's
//! failures ([`SqlError`]: sqlx, the migrator, a SQLite folder) take the runtime's classes, from
//! the server's SQLSTATE or result code; what the projection's own data can get wrong is fatal. No
//! I/O; no delivery guarantee of its own: the loops that meet these errors retry, dead-letter or
//! stop on the class.

use tillstream_runtime::sql::SqlError;
use tillstream_runtime::{Classify, ErrorClass};

/// A database failure.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    /// The database or the migrator failed (`database: ...`, `migration: ...`).
    #[error(transparent)]
    Sql(#[from] SqlError),
    /// Something the database holds or is asked for makes no sense (unknown colour, switching to
    /// the live set).
    #[error("{0}")]
    Invalid(String),
}

tillstream_runtime::from_sql_errors!(DbError, Sql);

impl Classify for DbError {
    fn class(&self) -> ErrorClass {
        match self {
            DbError::Sql(e) => e.class(),
            DbError::Invalid(_) => ErrorClass::Fatal,
        }
    }
}
