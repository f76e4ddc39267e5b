//! A database that is down is waited for, never a reason to stop: [`until_available`] is the one
//! retry loop every database step goes through (connecting and migrating, start offsets, a batch
//! transaction), and [`mark_unavailable`] / [`mark_available`] keep the service's readiness check
//! ([`DATABASE_CHECK`]) saying so meanwhile.
//!
//! Delivery guarantee: none of its own; the step retried is the same step (same input, same
//! transaction from the start), never skipped.

use std::future::Future;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::Backend;
use crate::retry::Backoff;
use crate::{Classify, ErrorClass, Health};

/// The first wait of every retry while the database is unavailable (doubling up to the runtime's
/// cap, [`crate::retry::MAX_DELAY`]).
pub const RETRY_INITIAL_DELAY: Duration = Duration::from_millis(200);

/// The readiness check a service registers for its database.
pub const DATABASE_CHECK: &str = "database";

/// Runs `attempt` until it succeeds or fails with an error that is not retryable (returned), backing
/// off between attempts ([`RETRY_INITIAL_DELAY`], doubling up to the runtime's cap). `waiting` is
/// told about every retryable failure before the wait (readiness, metrics). Returns `None` when
/// `token` is cancelled while waiting.
pub async fn until_available<T, E, Fut>(
    token: &CancellationToken,
    mut waiting: impl FnMut(&E),
    mut attempt: impl FnMut() -> Fut,
) -> Result<Option<T>, E>
where
    E: Classify + std::fmt::Display,
    Fut: Future<Output = Result<T, E>>,
{
    let mut backoff = Backoff::new(RETRY_INITIAL_DELAY);
    loop {
        match attempt().await {
            Ok(v) => return Ok(Some(v)),
            Err(e) if e.class() == ErrorClass::Retryable => {
                waiting(&e);
                tracing::warn!(error = %e, retry_in_ms = backoff.delay().as_millis() as u64, "database unavailable; retrying");
                if !backoff.wait(token).await {
                    return Ok(None);
                }
            }
            Err(e) => return Err(e),
        }
    }
}

/// Marks [`DATABASE_CHECK`] not ready while `operation` (a short name: `open`, `batch`, ...) waits
/// for the database after `error`.
pub fn mark_unavailable(health: &Health, operation: &str, error: &impl std::fmt::Display) {
    health.not_ready(
        DATABASE_CHECK,
        format!("unavailable ({operation}): {error}; retrying"),
    );
}

/// Marks [`DATABASE_CHECK`] ready, naming the server.
pub fn mark_available(health: &Health, backend: Backend) {
    health.ready(DATABASE_CHECK, backend.name());
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sql::SqlError;

    /// Retryable failures are retried (the caller hears of each); the first other error ends it.
    #[tokio::test]
    async fn until_available_retries_only_what_is_retryable() {
        let token = CancellationToken::new();
        let mut calls = 0;
        let mut heard = 0;
        let got = until_available(
            &token,
            |_: &SqlError| heard += 1,
            || {
                calls += 1;
                let n = calls;
                async move {
                    match n {
                        1 | 2 => Err(SqlError::Sqlx(sqlx::Error::PoolTimedOut)),
                        _ => Ok(n),
                    }
                }
            },
        )
        .await
        .unwrap();
        assert_eq!((got, heard), (Some(3), 2));

        let fatal = until_available(
            &token,
            |_| {},
            || async { Err::<(), _>(SqlError::Sqlx(sqlx::Error::RowNotFound)) },
        )
        .await;
        assert!(matches!(
            fatal,
            Err(SqlError::Sqlx(sqlx::Error::RowNotFound))
        ));

        token.cancel();
        let cancelled = until_available(
            &token,
            |_| {},
            || async { Err::<(), _>(SqlError::Sqlx(sqlx::Error::PoolClosed)) },
        )
        .await
        .unwrap();
        assert_eq!(cancelled, None);
    }

    #[test]
    fn readiness_follows_the_database() {
        let health = Health::new();
        health.register(DATABASE_CHECK);
        mark_unavailable(&health, "batch", &"connection refused");
        assert!(!health.is_ready());
        mark_available(&health, Backend::Postgres);
        assert!(health.is_ready());
    }
}
