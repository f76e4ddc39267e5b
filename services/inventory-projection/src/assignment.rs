//! Partition assignment: where each assigned partition starts reading (the offsets the database
//! holds, read by [`OffsetHook`] when partitions arrive) and what the batch loop knows about each
//! assigned partition ([`Partitions`]: the next offset the database holds, and which partitions
//! still need their start offset settled because the database could not be read on assignment).
//!
//! Delivery guarantee: a partition starts at the database's offset, or (when the database could not
//! be read) is flagged so the batch loop reads the offset before applying anything of it and seeks
//! back if the consumer started past it; nothing below the database offset is applied again.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};

use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use tillstream_runtime::kafka::PartitionHook;
use tillstream_runtime::retry::block_on_from_sync;
use tokio::runtime::Handle;

use crate::db::Db;

/// Per-partition knowledge shared between the partition hook and the batch loop.
#[derive(Debug, Default)]
pub struct Partitions {
    /// Next offset the database holds, per assigned partition whose start is settled.
    pub(crate) expected: HashMap<i32, i64>,
    /// Assigned partitions whose start offset the hook could not set: the batch loop settles them
    /// (reads the database offset, seeks back if needed) before applying any of their records.
    pub(crate) needs_seek: BTreeSet<i32>,
}

/// The partitions' shared state.
pub type SharedPartitions = Arc<Mutex<Partitions>>;

/// Locks the shared state (a panic elsewhere never leaves it unusable: the data stays consistent
/// because every update is a single insert or remove).
pub(crate) fn lock(parts: &Mutex<Partitions>) -> MutexGuard<'_, Partitions> {
    parts.lock().unwrap_or_else(|p| p.into_inner())
}

/// Sets each assigned partition's start offset from the database (the source of truth).
pub struct OffsetHook {
    /// Where the offsets are read.
    db: Db,
    /// The input topic (other topics' partitions are left alone).
    topic: String,
    /// The runtime to block on when librdkafka calls the hook from one of its own threads.
    handle: Handle,
    /// What the batch loop learns about each partition.
    parts: SharedPartitions,
}

impl OffsetHook {
    /// Must be created inside the service's (multi-thread) runtime.
    pub fn new(db: Db, topic: &str, parts: SharedPartitions) -> OffsetHook {
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
        block_on_from_sync(&self.handle, self.db.live_offsets(&self.topic))?
            .map_err(|e| e.to_string())
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
        let mut parts = lock(&self.parts);
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
        let mut parts = lock(&self.parts);
        for e in tpl.elements() {
            if e.topic() == self.topic {
                parts.expected.remove(&e.partition());
                parts.needs_seek.remove(&e.partition());
            }
        }
    }
}
