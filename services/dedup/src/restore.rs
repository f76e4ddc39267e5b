//! Partition ownership and state restore. The [`Hook`] runs inside librdkafka's rebalance callback
//! (that is, inside the consumer's poll, never while a batch is being processed): on assignment of
//! input partition p it rebuilds p's state by reading changelog partition p to its end (or only the
//! records written since, when this instance held p before); on revoke it parks p's state as a
//! standby copy. Messages of p are only processed once p's state is in place.
//!
//! Delivery guarantee: the changelog only ever holds batches whose outputs were delivered, so a
//! restored state never makes the service skip an output. The restored state knows the first input
//! offset its changelog does not cover, and the partition resumes there: records below it (a batch
//! whose changelog record was written but whose offsets were not committed yet) are never emitted
//! twice. The input consumer stores that start offset, so the committed offset catches up even if
//! the partition receives nothing new; a covered record that still arrives is skipped, its offset
//! stored.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::Message;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use tillstream_contracts::SequenceGap;
use tillstream_runtime::Health;
use tillstream_runtime::kafka::{KafkaConfig, PartitionHook};
use tillstream_runtime::retry::blocking;

use crate::changelog::{self, Assembler};
use crate::core::{CoreConfig, PartitionDedup};
use crate::metrics as m;

/// Health component name.
pub const HEALTH: &str = "partitions";

#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    #[error("reading changelog {topic}[{partition}]: {detail}")]
    Read {
        topic: String,
        partition: i32,
        detail: String,
    },
    #[error("changelog {topic}[{partition}]: end {end} not reached within {timeout:?} (at {at})")]
    Timeout {
        topic: String,
        partition: i32,
        end: i64,
        at: i64,
        timeout: Duration,
    },
}

/// The state of one owned input partition.
#[derive(Debug)]
pub struct Slot {
    pub dedup: PartitionDedup,
    /// Offset after the last changelog record this state includes.
    pub changelog_end: i64,
}

/// State shared between the rebalance hook and the processing loop.
#[derive(Debug, Default)]
pub struct Shared {
    pub owned: Mutex<BTreeMap<i32, Slot>>,
    standby: Mutex<BTreeMap<i32, Slot>>,
    republish: Mutex<Vec<(i32, Vec<SequenceGap>)>>,
    fatal: Mutex<Option<String>>,
    pub restores: std::sync::atomic::AtomicU64,
}

impl Shared {
    pub fn owns(&self, p: i32) -> bool {
        lock(&self.owned).contains_key(&p)
    }

    pub fn take_republish(&self) -> Vec<(i32, Vec<SequenceGap>)> {
        std::mem::take(&mut *lock(&self.republish))
    }

    pub fn fatal(&self) -> Option<String> {
        lock(&self.fatal).clone()
    }

    fn set_fatal(&self, why: String) {
        lock(&self.fatal).get_or_insert(why);
    }
}

pub fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Reads changelog partitions (its own client: assigned, never subscribed, never commits).
pub struct Restorer {
    consumer: BaseConsumer,
    changelog_topic: String,
    timeout: Duration,
}

impl std::fmt::Debug for Restorer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Restorer")
            .field("changelog_topic", &self.changelog_topic)
            .finish_non_exhaustive()
    }
}

/// What a restore produced.
#[derive(Debug)]
pub struct Restored {
    pub slot: Slot,
    pub records: u64,
    pub incomplete: u64,
    /// Gap records of the last delta read: published again (their writer may have died before).
    pub republish: Vec<SequenceGap>,
}

impl Restorer {
    pub fn new(
        kafka: &KafkaConfig,
        group_id: &str,
        client_id: &str,
        changelog_topic: &str,
        timeout: Duration,
    ) -> Result<Self, rdkafka::error::KafkaError> {
        let mut c = kafka.client_config(&format!("{client_id}-restore"));
        c.set("group.id", format!("{group_id}-restore"))
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("enable.partition.eof", "false")
            .set("isolation.level", "read_committed")
            .set("fetch.max.bytes", "52428800")
            .set("fetch.wait.max.ms", "50")
            .set("max.partition.fetch.bytes", "10485760");
        Ok(Restorer {
            consumer: c.create()?,
            changelog_topic: changelog_topic.to_string(),
            timeout,
        })
    }

    pub fn consumer(&self) -> &BaseConsumer {
        &self.consumer
    }

    fn read_err(&self, partition: i32, e: impl std::fmt::Display) -> RestoreError {
        RestoreError::Read {
            topic: self.changelog_topic.clone(),
            partition,
            detail: e.to_string(),
        }
    }

    /// Rebuilds the state of each partition in `parts`: from its standby copy (covering the
    /// changelog up to its `changelog_end`) when the changelog still holds everything after it, else
    /// from scratch. All partitions are read in one pass.
    pub fn restore(
        &self,
        parts: Vec<(i32, Option<Slot>)>,
        config: &CoreConfig,
    ) -> Result<BTreeMap<i32, Restored>, RestoreError> {
        let topic = self.changelog_topic.as_str();
        struct Work {
            dedup: PartitionDedup,
            hi: i64,
            at: i64,
            asm: Assembler,
            best_next: i64,
            out: Restored,
        }
        let mut work: BTreeMap<i32, Work> = BTreeMap::new();
        let mut tpl = TopicPartitionList::new();
        for (p, base) in parts {
            let (lo, hi) = self
                .consumer
                .fetch_watermarks(topic, p, self.timeout)
                .map_err(|e| self.read_err(p, e))?;
            let (dedup, start) = match base {
                Some(s) if s.changelog_end >= lo && s.changelog_end <= hi => {
                    (s.dedup, s.changelog_end)
                }
                _ => (PartitionDedup::new(p, config.clone()), lo),
            };
            if start < hi {
                tpl.add_partition_offset(topic, p, Offset::Offset(start))
                    .map_err(|e| self.read_err(p, e))?;
            }
            work.insert(
                p,
                Work {
                    dedup,
                    hi,
                    at: start,
                    asm: Assembler::new(),
                    best_next: i64::MIN,
                    out: Restored {
                        slot: Slot {
                            dedup: PartitionDedup::new(p, config.clone()),
                            changelog_end: hi,
                        },
                        records: 0,
                        incomplete: 0,
                        republish: Vec::new(),
                    },
                },
            );
        }
        if tpl.count() > 0 {
            self.consumer
                .assign(&tpl)
                .map_err(|e| self.read_err(-1, e))?;
            let deadline = Instant::now() + self.timeout;
            while let Some((p, w)) = work.iter().find(|(_, w)| w.at < w.hi) {
                if Instant::now() > deadline {
                    let err = RestoreError::Timeout {
                        topic: topic.to_string(),
                        partition: *p,
                        end: w.hi,
                        at: w.at,
                        timeout: self.timeout,
                    };
                    let _ = self.consumer.unassign();
                    return Err(err);
                }
                let Some(msg) = self.consumer.poll(Duration::from_millis(100)) else {
                    continue;
                };
                let msg = match msg {
                    Ok(m) => m,
                    Err(e) => {
                        tracing::warn!(error = %e, "changelog read error; retrying");
                        continue;
                    }
                };
                let p = msg.partition();
                let Some(w) = work.get_mut(&p) else {
                    continue;
                };
                if msg.offset() < w.at {
                    continue;
                }
                w.at = msg.offset() + 1;
                w.out.records += 1;
                let Some(bytes) = msg.payload() else {
                    continue;
                };
                match changelog::decode(bytes) {
                    Ok(chunk) => {
                        if let Some(delta) = w.asm.push(chunk) {
                            if delta.next_offset >= w.best_next {
                                w.best_next = delta.next_offset;
                                w.out.republish = delta.gaps.clone();
                            }
                            w.dedup.apply(&delta);
                        }
                    }
                    Err(e) => {
                        tracing::error!(partition = p, offset = msg.offset(), error = %e, "unreadable changelog record skipped");
                        w.out.incomplete += 1;
                    }
                }
            }
            let _ = self.consumer.unassign();
        }
        Ok(work
            .into_iter()
            .map(|(p, mut w)| {
                w.asm.finish();
                w.out.incomplete += w.asm.incomplete;
                w.dedup.finish_restore();
                w.out.slot.dedup = w.dedup;
                (p, w.out)
            })
            .collect())
    }
}

/// The partition hook given to the group consumer.
pub struct Hook {
    shared: Arc<Shared>,
    restorer: Restorer,
    core: CoreConfig,
    input_topic: String,
    health: Health,
}

impl std::fmt::Debug for Hook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hook").finish_non_exhaustive()
    }
}

impl Hook {
    pub fn new(
        shared: Arc<Shared>,
        restorer: Restorer,
        core: CoreConfig,
        input_topic: &str,
        health: Health,
    ) -> Self {
        Hook {
            shared,
            restorer,
            core,
            input_topic: input_topic.to_string(),
            health,
        }
    }

    fn assign(&self, parts: &[i32]) -> Result<(), RestoreError> {
        let started = Instant::now();
        let bases: Vec<(i32, Option<Slot>)> = {
            let mut standby = lock(&self.shared.standby);
            parts.iter().map(|p| (*p, standby.remove(p))).collect()
        };
        let from_standby: Vec<i32> = bases
            .iter()
            .filter(|(_, b)| b.is_some())
            .map(|(p, _)| *p)
            .collect();
        let restored = self.restorer.restore(bases, &self.core)?;
        let took = started.elapsed();
        let secs = took.as_secs_f64();
        m::restore_done(took);
        for (p, r) in restored {
            m::partition_restored(r.records, r.incomplete);
            tracing::info!(
                partition = p,
                from_standby = from_standby.contains(&p),
                changelog_records = r.records,
                incomplete = r.incomplete,
                event_ids = r.slot.dedup.id_count(),
                devices = r.slot.dedup.device_count(),
                next_offset = ?r.slot.dedup.next_offset(),
                "partition state restored"
            );
            if !r.republish.is_empty() {
                lock(&self.shared.republish).push((p, r.republish));
            }
            lock(&self.shared.owned).insert(p, r.slot);
            self.shared
                .restores
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        tracing::info!(partitions = ?parts, seconds = secs, "restore done");
        Ok(())
    }
}

impl PartitionHook for Hook {
    fn on_assign(&self, tpl: &mut TopicPartitionList) {
        let parts: Vec<i32> = tpl
            .elements_for_topic(&self.input_topic)
            .iter()
            .map(|e| e.partition())
            .collect();
        if !parts.is_empty() {
            self.health
                .not_ready(HEALTH, format!("restoring partitions {parts:?}"));
        }
        // The rebalance callback runs inside the consumer's `recv` future: restore without
        // stalling the runtime's other tasks.
        if let Err(e) = blocking(|| self.assign(&parts)) {
            tracing::error!(partitions = ?parts, error = %e, "restore failed: stopping");
            self.health.broken(HEALTH, e.to_string());
            self.shared.set_fatal(e.to_string());
            return;
        }
        // Resume each partition where its changelog ends: what it covers was processed and made
        // durable by an earlier owner. A partition with no state starts from the committed offset.
        {
            let owned = lock(&self.shared.owned);
            for p in &parts {
                if let Some(next) = owned.get(p).and_then(|s| s.dedup.next_offset())
                    && let Err(e) =
                        tpl.set_partition_offset(&self.input_topic, *p, Offset::Offset(next))
                {
                    tracing::warn!(partition = p, error = %e, "cannot set the start offset: covered records will be skipped");
                }
            }
        }
        let owned: Vec<i32> = lock(&self.shared.owned).keys().copied().collect();
        self.health
            .ready(HEALTH, format!("owning partitions {owned:?}"));
    }

    fn on_revoke(&self, tpl: &TopicPartitionList) {
        let mut owned = lock(&self.shared.owned);
        let mut standby = lock(&self.shared.standby);
        for e in tpl.elements_for_topic(&self.input_topic) {
            if let Some(slot) = owned.remove(&e.partition()) {
                standby.insert(e.partition(), slot);
            }
        }
    }
}
