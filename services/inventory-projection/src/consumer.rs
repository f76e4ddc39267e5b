//! The live consumer: group member on the store-event topic whose start offsets come from the
//! database, batch loop (decode → dead-letter poison → one DB transaction per batch), lag gauge.
//!
//! Delivery guarantee: exactly-once effects in the database. The database holds the next offset per
//! partition, written in the batch's own transaction; on assignment the consumer starts there
//! (`OffsetHook`), and anything redelivered below it is skipped, or refused by the gate if it gets
//! that far. Kafka commits are only a hint for tools. Bad input is dead-lettered before the offset
//! that passes it is committed, so it never vanishes.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rdkafka::Message;
use rdkafka::consumer::Consumer;
use rdkafka::message::OwnedMessage;
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use tillstream_contracts::{Registry, SourceKind};
use tillstream_runtime::kafka::{
    self, ConsumerSettings, DeadLetters, InputConsumer, PartitionHook,
};
use tillstream_runtime::{CancellationToken, Classify, ErrorClass, Health};
use tokio::runtime::{Handle, RuntimeFlavor};

use crate::Error;
use crate::config::{Config, SERVICE};
use crate::db::{Db, Target};
use crate::decode::{DecodeError, decode};
use crate::metrics as m;
use crate::model::Envelope;

/// Per-partition knowledge shared between the rebalance hook and the batch loop.
#[derive(Debug, Default)]
pub struct Partitions {
    /// Next offset the database holds, per assigned partition.
    expected: HashMap<i32, i64>,
    /// Assigned partitions whose start offset the hook could not set: seek on their first record.
    needs_seek: BTreeSet<i32>,
}

/// Sets each assigned partition's start offset from the database (the source of truth).
pub struct OffsetHook {
    db: Db,
    topic: String,
    handle: Handle,
    parts: Arc<Mutex<Partitions>>,
}

impl OffsetHook {
    pub fn new(db: Db, topic: &str, parts: Arc<Mutex<Partitions>>) -> OffsetHook {
        OffsetHook {
            db,
            topic: topic.to_string(),
            handle: Handle::current(),
            parts,
        }
    }

    /// Reads the live offsets from inside librdkafka's rebalance callback, which runs on whatever
    /// thread polls the consumer: a tokio worker (block_in_place, multi-thread runtime only) or a
    /// librdkafka thread (block on the runtime's handle).
    fn read_offsets(&self) -> Result<BTreeMap<i32, i64>, String> {
        let fut = self.db.live_offsets(&self.topic);
        let res = match Handle::try_current() {
            Ok(h) if h.runtime_flavor() == RuntimeFlavor::MultiThread => {
                tokio::task::block_in_place(|| h.block_on(fut))
            }
            Ok(_) => return Err("current-thread runtime: cannot block in the callback".into()),
            Err(_) => self.handle.block_on(fut),
        };
        res.map_err(|e| e.to_string())
    }
}

impl PartitionHook for OffsetHook {
    fn on_assign(&self, tpl: &mut TopicPartitionList) {
        let ours: Vec<i32> = tpl
            .elements()
            .iter()
            .filter(|e| e.topic() == self.topic)
            .map(|e| e.partition())
            .collect();
        let read = self.read_offsets();
        let mut parts = self.parts.lock().unwrap_or_else(|p| p.into_inner());
        match read {
            Ok(stored) => {
                for p in ours {
                    let (offset, next) = match stored.get(&p) {
                        Some(o) => (Offset::Offset(*o), *o),
                        // Nothing applied yet: from the beginning, whatever Kafka has committed.
                        None => (Offset::Beginning, 0),
                    };
                    if let Err(e) = tpl.set_partition_offset(&self.topic, p, offset) {
                        tracing::warn!(partition = p, error = %e, "cannot set start offset; will seek");
                        parts.needs_seek.insert(p);
                    }
                    parts.expected.insert(p, next);
                }
                tracing::info!(?stored, "start offsets from the database");
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot read offsets on assignment; will seek on first record");
                for p in ours {
                    parts.needs_seek.insert(p);
                }
            }
        }
    }

    fn on_revoke(&self, tpl: &TopicPartitionList) {
        let mut parts = self.parts.lock().unwrap_or_else(|p| p.into_inner());
        for e in tpl.elements() {
            if e.topic() == self.topic {
                parts.expected.remove(&e.partition());
                parts.needs_seek.remove(&e.partition());
            }
        }
    }
}

pub(crate) struct Live {
    pub cfg: Config,
    pub db: Db,
    pub registry: Registry,
    pub dead: DeadLetters,
    pub consumer: InputConsumer<OffsetHook>,
    pub parts: Arc<Mutex<Partitions>>,
    pub token: CancellationToken,
    pub health: Health,
}

/// Backoff that gives up (returns false) when the token is cancelled.
async fn backoff(token: &CancellationToken, delay: &mut Duration) -> bool {
    tokio::select! {
        _ = token.cancelled() => return false,
        _ = tokio::time::sleep(*delay) => {}
    }
    *delay = (*delay * 2).min(Duration::from_secs(5));
    true
}

impl Live {
    pub fn new_consumer(
        cfg: &Config,
        hook: OffsetHook,
    ) -> Result<InputConsumer<OffsetHook>, rdkafka::error::KafkaError> {
        // read_committed (the default): with Apache Kafka, only what dedup committed is applied.
        let settings = ConsumerSettings::new(&cfg.group_id, "tillstream-inventory-projection");
        InputConsumer::new(&cfg.kafka, &settings, SERVICE, hook, &[&cfg.topic])
    }

    /// The batch loop; returns when the token is cancelled (after finishing the batch in hand).
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

    /// Partitions flagged by the hook: read their offsets now and seek back if the consumer
    /// started past them. Returns the partitions whose records in this batch must be dropped.
    async fn settle_seeks(&self, msgs: &[OwnedMessage]) -> Result<BTreeSet<i32>, Error> {
        let flagged: Vec<i32> = {
            let parts = self.parts.lock().unwrap_or_else(|p| p.into_inner());
            msgs.iter()
                .map(|m| m.partition())
                .filter(|p| parts.needs_seek.contains(p))
                .collect::<BTreeSet<_>>()
                .into_iter()
                .collect()
        };
        let mut drop = BTreeSet::new();
        if flagged.is_empty() {
            return Ok(drop);
        }
        let stored = self.db.live_offsets(&self.cfg.topic).await?;
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
                self.consumer.seek(&self.cfg.topic, p, want)?;
                drop.insert(p);
            }
            let mut parts = self.parts.lock().unwrap_or_else(|p| p.into_inner());
            parts.needs_seek.remove(&p);
            parts.expected.insert(p, want);
        }
        Ok(drop)
    }

    async fn process(&self, msgs: Vec<OwnedMessage>) -> Result<(), Error> {
        let drop = self.settle_seeks(&msgs).await?;
        let expected: HashMap<i32, i64> = self
            .parts
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .expected
            .clone();
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
            let mut delay = Duration::from_millis(200);
            loop {
                match decode(&self.registry, msg).await {
                    Ok(env) => envs.push(env),
                    Err(DecodeError::Poison { reason, detail }) => {
                        poison.push((msg, reason, detail))
                    }
                    Err(e) if e.class() == ErrorClass::Retryable => {
                        tracing::warn!(error = %e, "cannot decode yet; retrying");
                        if !backoff(&self.token, &mut delay).await {
                            return Ok(()); // shutting down: nothing committed, re-read later
                        }
                        continue;
                    }
                    Err(DecodeError::Registry(e)) => return Err(Error::Registry(e)),
                }
                break;
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
            let mut parts = self.parts.lock().unwrap_or_else(|p| p.into_inner());
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
    async fn apply_with_retry(
        &self,
        envs: &[Envelope],
        next: &BTreeMap<i32, i64>,
    ) -> Result<bool, Error> {
        let mut delay = Duration::from_millis(200);
        loop {
            match self.apply_once(envs, next).await {
                Ok(()) => {
                    self.health.ready("database", self.db.backend().name());
                    return Ok(true);
                }
                Err(e) => match e.class() {
                    ErrorClass::Retryable => {
                        m::db_error("retryable");
                        self.health.not_ready("database", e.to_string());
                        tracing::warn!(error = %e, "batch failed; retrying");
                        if !backoff(&self.token, &mut delay).await {
                            return Ok(false);
                        }
                    }
                    ErrorClass::Poison if envs.len() > 1 => {
                        m::db_error("poison");
                        tracing::warn!(error = %e, events = envs.len(), "database rejected the batch; applying event by event");
                        for env in envs {
                            let one = BTreeMap::from([(env.partition, env.offset + 1)]);
                            if !Box::pin(self.apply_with_retry(std::slice::from_ref(env), &one))
                                .await?
                            {
                                return Ok(false);
                            }
                        }
                        return Box::pin(self.apply_with_retry(&[], next)).await;
                    }
                    ErrorClass::Poison => {
                        m::db_error("poison");
                        let env = &envs[0];
                        let detail = e.to_string();
                        self.dead_letter_event(env, &detail).await?;
                        return Box::pin(self.apply_with_retry(&[], next)).await;
                    }
                    ErrorClass::Fatal => {
                        m::db_error("fatal");
                        self.health.broken("database", e.to_string());
                        return Err(e.into());
                    }
                },
            }
        }
    }

    async fn apply_once(
        &self,
        envs: &[Envelope],
        next: &BTreeMap<i32, i64>,
    ) -> Result<(), crate::db::DbError> {
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
        m::batch(envs.len(), self.db.backend().name(), applied.db_time);
        for (kind, n) in &applied.by_kind {
            m::applied(kind, *n);
        }
        m::skipped("duplicate", applied.duplicates as u64);
        m::negative_stock(applied.negative_rows);
        Ok(())
    }

    async fn dead_letter(
        &self,
        msg: &OwnedMessage,
        reason: &str,
        detail: &str,
        event: Option<&Envelope>,
    ) -> Result<(), Error> {
        let headers: BTreeMap<String, String> = kafka::header_map(msg);
        let source = kafka::Source {
            kind: SourceKind::Kafka,
            topic: &self.cfg.topic,
            partition: Some(msg.partition()),
            offset: Some(msg.offset()),
            key: msg.key(),
            headers,
        };
        let key_store = msg.key().map(|k| String::from_utf8_lossy(k).into_owned());
        let store = event.map(|e| e.event.store_id().to_string()).or(key_store);
        let record = self.dead.record(
            &source,
            msg.payload().unwrap_or_default(),
            reason,
            detail,
            store.as_deref(),
            event.map(|e| e.event.device_id()),
            event.map(|e| e.event.event_id()),
            tillstream_runtime::clock::now_ms(),
        );
        self.dead.publish(&record, &self.token).await?;
        Ok(())
    }

    /// Dead-letters an event the database refused. The payload is the event re-encoded with its
    /// declared schema version (the original record is no longer at hand); partition, offset and
    /// key point at the original record.
    async fn dead_letter_event(&self, env: &Envelope, detail: &str) -> Result<(), Error> {
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
        self.dead_letter(&msg, "db_rejected", detail, Some(env))
            .await
    }

    /// Every 5 s: lag per assigned partition = high watermark - next offset in the database. Reads
    /// watermarks with its own client (`consumer`, no group), never the input consumer.
    pub async fn lag_loop(
        consumer: Arc<rdkafka::consumer::BaseConsumer>,
        topic: String,
        parts: Arc<Mutex<Partitions>>,
        token: CancellationToken,
    ) {
        loop {
            tokio::select! {
                _ = token.cancelled() => return,
                _ = tokio::time::sleep(Duration::from_secs(5)) => {}
            }
            let expected: Vec<(i32, i64)> = parts
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .expected
                .iter()
                .map(|(p, o)| (*p, *o))
                .collect();
            let c = consumer.clone();
            let t = topic.clone();
            let res = tokio::task::spawn_blocking(move || {
                expected
                    .into_iter()
                    .filter_map(|(p, next)| {
                        c.fetch_watermarks(&t, p, Duration::from_secs(2))
                            .ok()
                            .map(|(_, high)| (p, (high - next).max(0)))
                    })
                    .collect::<Vec<_>>()
            })
            .await;
            if let Ok(lags) = res {
                for (p, lag) in lags {
                    m::lag(p, lag);
                }
            }
        }
    }
}
