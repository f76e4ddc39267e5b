//! [`SqlError`] and how database failures are classified (retryable / fatal / poison) from sqlx's
//! error and the server's SQLSTATE (PostgreSQL) or result code (SQLite). A service's own database
//! error is [`DbError`], which wraps these and delegates its class to them ([`Classify`] is implemented for
//! `sqlx::Error` and `MigrateError` here). No I/O; no delivery guarantee of its own: the loops that
//! meet these errors retry, dead-letter or stop on the class.

use std::path::PathBuf;

use sqlx::migrate::MigrateError;

use crate::{Classify, ErrorClass};

/// A failure of the shared SQL plumbing (connecting, migrating, the shared tables).
#[derive(Debug, thiserror::Error)]
pub enum SqlError {
    #[error("database: {0}")]
    Sqlx(#[from] sqlx::Error),
    #[error("migration: {0}")]
    Migrate(#[from] MigrateError),
    /// The folder of a SQLite file could not be created (fatal: a path or permission to fix).
    #[error("cannot create {}: {source}", path.display())]
    CreateDir {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// A failure of a service's SQL state, the one database error every SQL service uses (they differ
/// in what they store, not in how storing fails): the plumbing's ([`SqlError`]: `?` converts
/// sqlx's and the migrator's errors too), a stored JSON value that does not parse, or a stored row
/// the service cannot make sense of (a truncated restore log, an unknown colour, a total that
/// overflows).
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    /// Connecting, migrating, or a statement the database refused (classes from [`SqlError`]).
    #[error(transparent)]
    Sql(#[from] SqlError),
    /// A stored JSON value (a verdict, a price list, a manifest) that does not parse.
    #[error("stored JSON: {0}")]
    Json(#[from] serde_json::Error),
    /// Something the database holds or is asked for makes no sense.
    #[error("{0}")]
    Invalid(String),
    /// Input the service refuses to store (an aggregate it would overflow): poison, so the loop
    /// isolates the event and dead-letters it. The text starts with the dead letter's reason.
    #[error("{0}")]
    Rejected(String),
}

// `?` makes one conversion, not two: sqlx's and the migrator's errors reach `DbError` directly.
impl From<sqlx::Error> for DbError {
    fn from(e: sqlx::Error) -> Self {
        Self::Sql(SqlError::from(e))
    }
}

impl From<MigrateError> for DbError {
    fn from(e: MigrateError) -> Self {
        Self::Sql(SqlError::from(e))
    }
}

impl Classify for DbError {
    fn class(&self) -> ErrorClass {
        match self {
            DbError::Sql(e) => e.class(),
            // Stored state that does not read back is not fixed by retrying.
            DbError::Json(_) | DbError::Invalid(_) => ErrorClass::Fatal,
            DbError::Rejected(_) => ErrorClass::Poison,
        }
    }
}

impl Classify for SqlError {
    fn class(&self) -> ErrorClass {
        match self {
            SqlError::Sqlx(e) => e.class(),
            SqlError::Migrate(e) => e.class(),
            SqlError::CreateDir { .. } => ErrorClass::Fatal,
        }
    }
}

impl Classify for sqlx::Error {
    fn class(&self) -> ErrorClass {
        use sqlx::Error as E;
        match self {
            E::Io(_)
            | E::Tls(_)
            | E::Protocol(_)
            | E::PoolTimedOut
            | E::PoolClosed
            | E::WorkerCrashed => ErrorClass::Retryable,
            E::Database(db) => classify_code(&db.code().unwrap_or_default()),
            _ => ErrorClass::Fatal,
        }
    }
}

impl Classify for MigrateError {
    fn class(&self) -> ErrorClass {
        match self {
            // A migration that lost its connection is tried again; one the database refuses (or
            // a record table that disagrees with the code) is fatal, never an input to skip.
            MigrateError::Execute(e) | MigrateError::ExecuteMigration(e, _) => match e.class() {
                ErrorClass::Retryable => ErrorClass::Retryable,
                _ => ErrorClass::Fatal,
            },
            _ => ErrorClass::Fatal,
        }
    }
}

/// The class of a server's error code: a PostgreSQL SQLSTATE (5 characters) or a SQLite extended
/// result code (at most 4 digits).
fn classify_code(code: &str) -> ErrorClass {
    // PostgreSQL SQLSTATE classes: 08 connection, 40 rollback (serialization, deadlock),
    // 53 resources, 57 operator intervention (shutdown), 58 system. 22/23: bad data.
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
        Ok(18..=20 | 25) => ErrorClass::Poison,                 // TOOBIG CONSTRAINT MISMATCH RANGE
        _ => ErrorClass::Fatal,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_service_db_error_takes_the_plumbings_class_and_bad_stored_state_is_fatal() {
        assert_eq!(
            DbError::from(sqlx::Error::PoolTimedOut).class(),
            ErrorClass::Retryable
        );
        assert_eq!(DbError::Invalid("x".into()).class(), ErrorClass::Fatal);
        let json = serde_json::from_str::<u8>("{").unwrap_err();
        assert_eq!(DbError::from(json).class(), ErrorClass::Fatal);
    }

    #[test]
    fn server_error_codes_are_classified() {
        use ErrorClass::*;
        for (code, class) in [
            ("08006", Retryable), // PostgreSQL: connection failure
            ("40001", Retryable), // serialization failure
            ("57P01", Retryable), // admin shutdown
            ("23505", Poison),    // unique violation
            ("22003", Poison),    // numeric value out of range
            ("42P01", Fatal),     // undefined table
            ("5", Retryable),     // SQLite: BUSY
            ("517", Retryable),   // BUSY_SNAPSHOT (extended)
            ("2067", Poison),     // CONSTRAINT_UNIQUE (extended)
            ("1", Fatal),         // ERROR (e.g. no such table)
            ("", Fatal),
        ] {
            assert_eq!(classify_code(code), class, "{code}");
        }
        assert_eq!(sqlx::Error::PoolTimedOut.class(), Retryable);
        assert_eq!(sqlx::Error::RowNotFound.class(), Fatal);
    }

    #[test]
    fn a_migration_that_lost_its_connection_is_retryable_and_a_refused_one_fatal() {
        use MigrateError as M;
        let lost = || sqlx::Error::Io(std::io::ErrorKind::ConnectionReset.into());
        assert_eq!(M::Execute(lost()).class(), ErrorClass::Retryable);
        assert_eq!(
            M::ExecuteMigration(lost(), 1).class(),
            ErrorClass::Retryable
        );
        assert_eq!(M::VersionMismatch(1).class(), ErrorClass::Fatal);
        assert_eq!(
            M::Execute(sqlx::Error::RowNotFound).class(),
            ErrorClass::Fatal
        );
        assert_eq!(
            SqlError::Migrate(M::Execute(lost())).class(),
            ErrorClass::Retryable
        );
    }
}
