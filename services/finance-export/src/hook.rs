//! Partition assignment: each assigned partition starts at the next offset the ledger database
//! holds (written in the same transaction as the effects). When the database cannot be read at
//! that moment the partition starts from the group's committed offset, which is never ahead of the
//! database's (offsets are stored for Kafka only after a batch committed), and the gate refuses
//! what the ledger already holds.
//!
//! Delivery guarantee: nothing is skipped; redelivered records are refused by the event gate.

use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use tillstream_runtime::kafka::PartitionHook;
use tillstream_runtime::retry::block_on_from_sync;
use tokio::runtime::Handle;

use crate::db::Db;

/// Sets start offsets from the ledger database.
pub struct OffsetHook {
    db: Db,
    handle: Handle,
}

impl OffsetHook {
    /// Must be created inside the service's (multi-thread) runtime.
    pub fn new(db: Db) -> OffsetHook {
        OffsetHook {
            db,
            handle: Handle::current(),
        }
    }
}

impl PartitionHook for OffsetHook {
    fn on_assign(&self, tpl: &mut TopicPartitionList) {
        let topics: std::collections::BTreeSet<String> = tpl
            .elements()
            .iter()
            .map(|e| e.topic().to_string())
            .collect();
        for topic in topics {
            let read = block_on_from_sync(&self.handle, self.db.offsets(&topic))
                .map_err(|e| e.to_string())
                .and_then(|r| r.map_err(|e| e.to_string()));
            match read {
                Ok(offsets) => {
                    for (p, o) in offsets {
                        if tpl.find_partition(&topic, p).is_some()
                            && let Err(e) = tpl.set_partition_offset(&topic, p, Offset::Offset(o))
                        {
                            tracing::warn!(topic, partition = p, error = %e, "cannot set start offset");
                        }
                    }
                }
                Err(e) => tracing::warn!(
                    topic,
                    error = %e,
                    "cannot read start offsets from the database: starting from the committed offsets (the gate refuses what is booked)"
                ),
            }
        }
    }
}
