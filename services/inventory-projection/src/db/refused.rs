//! A batch the database refuses as poison (a sum that would leave 64 bits, a value it cannot
//! store): applied again event by event, so one bad event cannot hold its batch back. The live
//! loop dead-letters each event the database refuses; a rebuild skips the same events, so the
//! rebuilt set still equals the live one. One function for both, so they cannot drift apart.
//!
//! Delivery guarantee: the refused event's offset is passed all the same (an empty batch with the
//! next offset), so the consumer moves on; every other event of the batch is applied exactly once
//! (each piece is its own gated transaction).

use std::collections::BTreeMap;
use std::future::Future;

use tillstream_runtime::{Classify, ErrorClass};

use super::DbError;
use crate::model::Envelope;

/// Applies `envs` (next offsets `next`) with `apply`, which returns how many events the gate
/// admitted, or `None` when cancelled. When the database refuses the batch as poison, each event is
/// applied alone; each one it refuses again is handed to `refused` (with the refusal) and its offset
/// passed. Returns the events admitted in all, `None` when cancelled; errors that are not poison
/// (and what `refused` returns) end it.
pub async fn apply_isolating_refused<'a, A, AF, R, RF, E>(
    envs: &'a [Envelope],
    next: &BTreeMap<i32, i64>,
    mut apply: A,
    mut refused: R,
) -> Result<Option<usize>, E>
where
    A: FnMut(&'a [Envelope], BTreeMap<i32, i64>) -> AF,
    AF: Future<Output = Result<Option<usize>, DbError>>,
    R: FnMut(&'a Envelope, DbError) -> RF,
    RF: Future<Output = Result<(), E>>,
    E: From<DbError>,
{
    match apply(envs, next.clone()).await {
        Err(e) if e.class() == ErrorClass::Poison && !envs.is_empty() => {
            tracing::warn!(error = %e, events = envs.len(), "database refused the batch; applying event by event");
        }
        other => return Ok(other?),
    }
    let mut admitted = 0;
    for env in envs {
        let one = BTreeMap::from([(env.partition, env.offset + 1)]);
        match apply(std::slice::from_ref(env), one.clone()).await {
            Ok(Some(n)) => admitted += n,
            Ok(None) => return Ok(None),
            Err(e) if e.class() == ErrorClass::Poison => {
                refused(env, e).await?;
                if apply(&[], one).await?.is_none() {
                    return Ok(None);
                }
            }
            Err(e) => return Err(e.into()),
        }
    }
    Ok(apply(&[], next.clone()).await?.map(|n| admitted + n))
}
