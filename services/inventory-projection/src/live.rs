//! The live batch loop: batch in → settle partitions whose start offset is not known yet → skip
//! what the database already holds → decode (dead-letter poison) → one database transaction →
//! store the offsets for Kafka's commit (a hint for tools only).
//!
//! A database that is unavailable never ends the loop: every database step (start offsets, batch
//! transaction) waits with back-off, with the "database" readiness check down meanwhile, and goes
//! on with the same batch when the database answers again. Only a fatal database error ends it.
//!
//! Delivery guarantee: exactly-once effects in the database. The database holds the next offset per
//! partition, written in the batch's own transaction; on assignment the consumer starts there
//! (`assignment::OffsetHook`), and anything redelivered below it is skipped, or refused by the gate
//! if it gets that far. Bad input is dead-lettered before the offset that passes it is committed, so
//! it never vanishes.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Duration;

use rdkafka::Message;
use rdkafka::message::OwnedMessage;
use tillstream_contracts::Registry;
use tillstream_runtime::kafka::{self, ConsumerSettings, DeadLetters, InputConsumer, Rejected};
use tillstream_runtime::retry::Backoff;
use tillstream_runtime::sql::{mark_available, mark_unavailable};
use tillstream_runtime::{CancellationToken, Classify, ErrorClass, Health};

use crate::Error;
use crate::assignment::{OffsetHook, SharedPartitions, lock};
use crate::config::{Config, SERVICE};
use crate::db::{
    Db, DbError, RETRY_INITIAL_DELAY, Target, apply_isolating_refused, rejection_reason,
    until_available,
};
use crate::decode::{Decoded, decode_retrying};
use crate::metrics as m;
use crate::model::Envelope;

/// The readiness check of the database (the runtime's, shared by every service with SQL state).
pub use tillstream_runtime::sql::DATABASE_CHECK;

/// Marks the database not ready while `operation` waits for it, and counts the wait.
pub(crate) fn database_unavailable(health: &Health, operation: &'static str, e: &DbError) {
    m::db_retry(operation);
    mark_unavailable(health, operation, e);
}

/// Everything the batch loop needs, owned by its task.
pub(crate) struct Live {
    /// Topic, batch sizes, projection parameters, fault injection.
    pub cfg: Config,
    /// Where batches are applied and start offsets read.
    pub db: Db,
    /// Writer schemas of the records.
    pub registry: Registry,
    /// Where undecodable records and refused events go.
    pub dead: DeadLetters,
    /// The input (its hook reads start offsets from `db`).
    pub consumer: InputConsumer<OffsetHook>,
    /// What the hook and the loop know about each assigned partition.
    pub parts: SharedPartitions,
    /// The loop's stop signal: the batch in hand is finished (or left unapplied while it waits
    /// for the database), then the loop returns.
    pub token: CancellationToken,
    /// Readiness of the database check.
    pub health: Health,
}

/// What settling the flagged partitions of a batch decided.
enum Settled {
    /// Drop these partitions' records from the batch (the consumer was sent back to re-read them).
    Drop(BTreeSet<i32>),
    /// Told to stop while waiting for the database: nothing of the batch is applied.
    Cancelled,
}

impl Live {
    /// The input consumer of the live projection.
    pub fn new_consumer(
        cfg: &Config,
        hook: OffsetHook,
    ) -> Result<InputConsumer<OffsetHook>, rdkafka::error::KafkaError> {
        // read_committed (the default): with Apache Kafka, only what dedup committed is applied.
        let settings = ConsumerSettings::new(&cfg.group_id, "tillstream-inventory-projection");
        InputConsumer::new(&cfg.kafka, &settings, SERVICE, hook, &[&cfg.topic])
    }

    /// The batch loop; returns when the token is cancelled (after finishing the batch in hand) or
    /// on a fatal error.
    pub async fn run(&mut self) -> Result<(), Error> {
        let linger = Duration::from_millis(self.cfg.batch.linger_ms);
        let token = self.token.clone();
        while let Some(batch) = self
            .consumer
            .next_batch(&token, self.cfg.batch.max_events, linger)
            .await
        {
            self.process(batch).await?;
        }
        self.consumer.commit_on_shutdown();
        Ok(())
    }

    /// Partitions flagged by the hook (their start offset could not be read on assignment): read
    /// their database offsets now, waiting while the database is unavailable, and seek back where
    /// the consumer started past them.
    async fn settle_seeks(&self, msgs: &[OwnedMessage]) -> Result<Settled, Error> {
        let flagged: BTreeSet<i32> = {
            let parts = lock(&self.parts);
            msgs.iter()
                .map(|m| m.partition())
                .filter(|p| parts.needs_seek.contains(p))
                .collect()
        };
        let mut drop = BTreeSet::new();
        if flagged.is_empty() {
            return Ok(Settled::Drop(drop));
        }
        let read = until_available(
            &self.token,
            |e| database_unavailable(&self.health, "start_offsets", e),
            || self.db.live_offsets(&self.cfg.topic),
        )
        .await;
        let stored = match read {
            Ok(Some(stored)) => stored,
            Ok(None) => return Ok(Settled::Cancelled),
            Err(e) => {
                self.health.broken(DATABASE_CHECK, e.to_string());
                return Err(e.into());
            }
        };
        mark_available(&self.health, self.db.backend());
        for p in flagged {
            let want = stored.get(&p).copied().unwrap_or(0);
            let first = msgs
                .iter()
                .find(|m| m.partition() == p)
                .map(|m| m.offset())
                .unwrap_or(want);
            if first > want {
                tracing::warn!(
                    partition = p,
                    first,
                    want,
                    "consumer started past the database offset: seeking back"
                );
                drop.insert(p);
                if let Err(e) = self.consumer.seek(&self.cfg.topic, p, want) {
                    if e.class() != ErrorClass::Retryable {
                        return Err(e.into());
                    }
                    // Still flagged: its next record settles it again (nothing of it is applied
                    // before that, so nothing is skipped).
                    tracing::warn!(partition = p, error = %e, "cannot seek back yet: dropping the partition's records, will retry on its next record");
                    continue;
                }
            }
            let mut parts = lock(&self.parts);
            parts.needs_seek.remove(&p);
            parts.expected.insert(p, want);
        }
        Ok(Settled::Drop(drop))
    }

    async fn process(&self, msgs: Vec<OwnedMessage>) -> Result<(), Error> {
        let drop = match self.settle_seeks(&msgs).await? {
            Settled::Drop(drop) => drop,
            Settled::Cancelled => return Ok(()), // shutting down: nothing stored, re-read later
        };
        let expected: HashMap<i32, i64> = lock(&self.parts).expected.clone();
        let mut next: BTreeMap<i32, i64> = BTreeMap::new();
        let mut envs: Vec<Envelope> = Vec::with_capacity(msgs.len());
        let mut poison: Vec<(&OwnedMessage, &'static str, String)> = Vec::new();
        let mut below = 0u64;
        for msg in &msgs {
            let p = msg.partition();
            if drop.contains(&p) {
                continue;
            }
            if expected.get(&p).is_some_and(|e| msg.offset() < *e) {
                below += 1;
                continue;
            }
            match decode_retrying(&self.registry, msg, &self.token).await? {
                Some(Decoded::Event(env)) => envs.push(env),
                Some(Decoded::Poison { reason, detail }) => poison.push((msg, reason, detail)),
                None => return Ok(()), // shutting down: nothing committed, re-read later
            }
            let e = next.entry(p).or_insert(0);
            *e = (*e).max(msg.offset() + 1);
        }
        m::skipped("below_db_offset", below);
        if next.is_empty() {
            return Ok(());
        }
        for (msg, reason, detail) in &poison {
            self.dead_letter(msg, reason, detail, None).await?;
        }
        m::skipped("dead_lettered", poison.len() as u64);

        if !self.apply_with_retry(&envs, &next).await? {
            return Ok(());
        }
        let mut offsets = kafka::BatchOffsets::new();
        {
            let mut parts = lock(&self.parts);
            for (p, o) in &next {
                parts.expected.insert(*p, *o);
                offsets.done(&self.cfg.topic, *p, o - 1);
            }
        }
        self.consumer.store_offsets(&offsets);
        Ok(())
    }

    /// Applies a batch, retrying transient failures; a batch the database rejects is applied event
    /// by event so only the offending event is dead-lettered. Returns false when cancelled first.
    /// Applies a batch, waiting out a database that is down; a batch it refuses as poison is
    /// applied event by event and each refused event dead-lettered (`db::apply_isolating_refused`).
    /// `false` when cancelled.
    async fn apply_with_retry(
        &self,
        envs: &[Envelope],
        next: &BTreeMap<i32, i64>,
    ) -> Result<bool, Error> {
        let admitted = apply_isolating_refused(
            envs,
            next,
            |envs, next| async move { self.apply_retrying(envs, &next).await },
            |env, e| async move {
                self.dead_letter_event(env, rejection_reason(&e), &e.to_string())
                    .await?;
                m::skipped("dead_lettered", 1);
                Ok::<(), Error>(())
            },
        )
        .await?;
        Ok(admitted.is_some())
    }

    /// One batch transaction, retried with back-off while the database is unavailable. The events
    /// admitted, `None` when cancelled; poison and fatal errors are returned (fatal ones also mark
    /// the service broken).
    async fn apply_retrying(
        &self,
        envs: &[Envelope],
        next: &BTreeMap<i32, i64>,
    ) -> Result<Option<usize>, DbError> {
        let mut backoff = Backoff::new(RETRY_INITIAL_DELAY);
        loop {
            match self.apply_once(envs, next).await {
                Ok(admitted) => {
                    mark_available(&self.health, self.db.backend());
                    return Ok(Some(admitted));
                }
                Err(e) => match e.class() {
                    ErrorClass::Retryable => {
                        m::db_error("retryable");
                        database_unavailable(&self.health, "batch", &e);
                        tracing::warn!(error = %e, "batch failed; retrying");
                        if !backoff.wait(&self.token).await {
                            return Ok(None);
                        }
                    }
                    ErrorClass::Poison => {
                        m::db_error("poison");
                        return Err(e);
                    }
                    ErrorClass::Fatal => {
                        m::db_error("fatal");
                        self.health.broken(DATABASE_CHECK, e.to_string());
                        return Err(e);
                    }
                },
            }
        }
    }

    async fn apply_once(
        &self,
        envs: &[Envelope],
        next: &BTreeMap<i32, i64>,
    ) -> Result<usize, DbError> {
        let applied = self
            .db
            .apply(
                Target::Live,
                &self.cfg.topic,
                envs,
                next,
                &self.cfg.projection.params(),
                &self.cfg.fault,
            )
            .await?;
        m::batch_applied(envs.len(), self.db.backend().name(), &applied);
        Ok(applied.new_events)
    }

    async fn dead_letter(
        &self,
        msg: &OwnedMessage,
        reason: &'static str,
        detail: &str,
        event: Option<&Envelope>,
    ) -> Result<(), Error> {
        let rejected = Rejected::new(reason, detail);
        let rejected = match event {
            Some(e) => rejected.with_identity(
                e.event.store_id(),
                Some(e.event.device_id()),
                Some(e.event.event_id()),
            ),
            None => rejected,
        };
        let record = self
            .dead
            .for_message(msg, &rejected, tillstream_runtime::clock::now_ms());
        self.dead.publish(&record, &self.token).await?;
        Ok(())
    }

    /// Dead-letters an event the database refused. The payload is the event re-encoded with its
    /// declared schema version (the original record is no longer at hand); partition, offset and
    /// key point at the original record.
    async fn dead_letter_event(
        &self,
        env: &Envelope,
        reason: &'static str,
        detail: &str,
    ) -> Result<(), Error> {
        let payload = env.event.encode().unwrap_or_default();
        let msg = OwnedMessage::new(
            Some(payload),
            Some(env.event.store_id().as_bytes().to_vec()),
            self.cfg.topic.clone(),
            rdkafka::Timestamp::CreateTime(env.record_ts),
            env.partition,
            env.offset,
            None,
        );
        self.dead_letter(&msg, reason, detail, Some(env)).await
    }
}
