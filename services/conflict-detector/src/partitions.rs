//! Which input partitions this instance owns, where each starts, and what the batch loop must do
//! about changes (restore a new partition's state, drop a revoked one's), shared between the
//! consumer's [`OffsetHook`], the batch loop and the publisher. No delivery guarantee of its own:
//! the start offsets come from the database, which holds them in the batches' transactions.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, MutexGuard};

use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use tillstream_runtime::kafka::PartitionHook;
use tillstream_runtime::retry::block_on_from_sync;
use tokio::runtime::Handle;

use crate::db::Db;

/// Partition bookkeeping (see the module doc).
#[derive(Debug, Default)]
pub struct Partitions {
    /// Input partitions owned (the publisher sends these partitions' outbox records).
    pub owned: BTreeSet<i32>,
    /// Next offset per (topic, partition) the database holds; records below it were applied.
    pub expected: BTreeMap<(String, i32), i64>,
    /// Owned partitions whose state must be (re)built before their records are processed.
    pub to_restore: BTreeSet<i32>,
    /// Partitions gone since the batch loop last looked (drop their stores).
    pub revoked: BTreeSet<i32>,
    /// Assigned (topic, partition)s the hook could not position: seek on their first record.
    pub needs_seek: BTreeSet<(String, i32)>,
}

/// The shared handle.
pub type Shared = Arc<Mutex<Partitions>>;

pub fn lock(s: &Shared) -> MutexGuard<'_, Partitions> {
    s.lock().unwrap_or_else(|p| p.into_inner())
}

/// Sets every assigned partition's start offset from the database and tells the batch loop.
pub struct OffsetHook {
    db: Db,
    input_topic: String,
    topics: Vec<String>,
    handle: Handle,
    shared: Shared,
}

impl OffsetHook {
    pub fn new(db: Db, input_topic: &str, topics: &[&str], shared: Shared) -> OffsetHook {
        OffsetHook {
            db,
            input_topic: input_topic.to_string(),
            topics: topics.iter().map(|t| t.to_string()).collect(),
            handle: Handle::current(),
            shared,
        }
    }

    /// Reads the stored offsets from inside librdkafka's callback (a tokio worker: block in place;
    /// a librdkafka thread: block on the runtime's handle).
    fn read(&self) -> Result<BTreeMap<(String, i32), i64>, String> {
        let db = self.db.clone();
        let topics = self.topics.clone();
        let fut = async move {
            let mut all = BTreeMap::new();
            for t in &topics {
                for (p, o) in db.offsets(t).await? {
                    all.insert((t.clone(), p), o);
                }
            }
            Ok::<_, crate::db::DbError>(all)
        };
        block_on_from_sync(&self.handle, fut)?.map_err(|e| e.to_string())
    }
}

impl PartitionHook for OffsetHook {
    fn on_assign(&self, tpl: &mut TopicPartitionList) {
        let ours: Vec<(String, i32)> = tpl
            .elements()
            .iter()
            .filter(|e| self.topics.iter().any(|t| t == e.topic()))
            .map(|e| (e.topic().to_string(), e.partition()))
            .collect();
        let stored = self.read();
        let mut s = lock(&self.shared);
        for (t, p) in &ours {
            if *t == self.input_topic {
                s.owned.insert(*p);
                s.to_restore.insert(*p);
                s.revoked.remove(p);
            }
        }
        match stored {
            Ok(stored) => {
                for (t, p) in ours {
                    let next = stored.get(&(t.clone(), p)).copied();
                    let offset = next.map_or(Offset::Beginning, Offset::Offset);
                    if let Err(e) = tpl.set_partition_offset(&t, p, offset) {
                        tracing::warn!(topic = %t, partition = p, error = %e, "cannot set the start offset; will seek");
                        s.needs_seek.insert((t.clone(), p));
                    }
                    s.expected.insert((t, p), next.unwrap_or(0));
                }
                tracing::info!(?stored, "start offsets from the database");
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot read offsets on assignment; will seek on the first records");
                for k in ours {
                    s.needs_seek.insert(k);
                }
            }
        }
    }

    fn on_revoke(&self, tpl: &TopicPartitionList) {
        let mut s = lock(&self.shared);
        for e in tpl.elements() {
            let k = (e.topic().to_string(), e.partition());
            s.expected.remove(&k);
            s.needs_seek.remove(&k);
            if e.topic() == self.input_topic {
                s.owned.remove(&e.partition());
                s.to_restore.remove(&e.partition());
                s.revoked.insert(e.partition());
            }
        }
    }
}
