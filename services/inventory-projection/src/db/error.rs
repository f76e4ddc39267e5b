//! [`DbError`] and how each database failure is classified (retryable / fatal / poison) from sqlx's
//! error and the server's SQLSTATE (PostgreSQL) or result code (SQLite). No I/O; no delivery
//! guarantee of its own: the loops that meet these errors retry, dead-letter or stop on the class.

use tillstream_runtime::{Classify, ErrorClass};

/// A database failure.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("database: {0}")]
    Sqlx(#[from] sqlx::Error),
    #[error("migration: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// Something the database holds or is asked for makes no sense (unknown colour, a directory
    /// that cannot be created, switching to the live set).
    #[error("{0}")]
    Invalid(String),
}

impl Classify for DbError {
    fn class(&self) -> ErrorClass {
        use sqlx::migrate::MigrateError as M;
        match self {
            DbError::Sqlx(e) => classify_sqlx(e),
            // A migration that lost its connection is tried again; one the database refuses (or
            // a migrations table that disagrees with the code) is fatal, never an input to skip.
            DbError::Migrate(M::Execute(e) | M::ExecuteMigration(e, _)) => match classify_sqlx(e) {
                ErrorClass::Retryable => ErrorClass::Retryable,
                _ => ErrorClass::Fatal,
            },
            DbError::Migrate(_) | DbError::Invalid(_) => ErrorClass::Fatal,
        }
    }
}

pub(crate) fn classify_sqlx(e: &sqlx::Error) -> ErrorClass {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqlite_and_postgres_error_codes_are_classified() {
        assert_eq!(
            classify_sqlx(&sqlx::Error::PoolTimedOut),
            ErrorClass::Retryable
        );
    }

    #[test]
    fn a_migration_that_lost_its_connection_is_retryable_and_a_refused_one_fatal() {
        use sqlx::migrate::MigrateError as M;
        let lost = || sqlx::Error::Io(std::io::ErrorKind::ConnectionReset.into());
        assert_eq!(
            DbError::Migrate(M::Execute(lost())).class(),
            ErrorClass::Retryable
        );
        assert_eq!(
            DbError::Migrate(M::ExecuteMigration(lost(), 1)).class(),
            ErrorClass::Retryable
        );
        assert_eq!(
            DbError::Migrate(M::VersionMismatch(1)).class(),
            ErrorClass::Fatal
        );
        assert_eq!(
            DbError::Migrate(M::Execute(sqlx::Error::RowNotFound)).class(),
            ErrorClass::Fatal
        );
    }
}
