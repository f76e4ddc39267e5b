//! Offset bookkeeping: which offsets a batch covers, storing them only once the batch's effects are
//! durable, committing what was stored.
//!
//! Delivery guarantee: at-least-once. Consumers run with `enable.auto.offset.store=false`: an offset
//! is stored only by [`InputConsumer::store_offsets`](super::InputConsumer::store_offsets), which
//! services call after the batch's effects are durable (delivered to Kafka or committed to the
//! database). Stored offsets are committed by the auto-commit timer, synchronously on every revoke,
//! and on shutdown.

use std::collections::HashMap;

use rdkafka::consumer::{CommitMode, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};

/// Highest processed offset per (topic, partition) of a batch; `store` stores offset + 1 for each.
#[derive(Debug, Default, Clone)]
pub struct BatchOffsets {
    next: HashMap<(String, i32), i64>,
}

impl BatchOffsets {
    pub fn new() -> Self {
        Self::default()
    }

    /// Records that the message at `offset` has been handled.
    pub fn done(&mut self, topic: &str, partition: i32, offset: i64) {
        let e = self
            .next
            .entry((topic.to_string(), partition))
            .or_insert(offset + 1);
        *e = (*e).max(offset + 1);
    }

    pub fn is_empty(&self) -> bool {
        self.next.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = (&(String, i32), &i64)> {
        self.next.iter()
    }

    pub fn to_tpl(&self) -> TopicPartitionList {
        let mut tpl = TopicPartitionList::new();
        for ((t, p), o) in &self.next {
            let _ = tpl.add_partition_offset(t, *p, Offset::Offset(*o));
        }
        tpl
    }

    pub fn clear(&mut self) {
        self.next.clear();
    }
}

/// Commits the stored offsets synchronously (`why` names the occasion in the logs).
pub(crate) fn commit_stored<C: rdkafka::consumer::ConsumerContext>(
    consumer: &impl Consumer<C>,
    service: &str,
    why: &str,
) {
    match consumer.commit_consumer_state(CommitMode::Sync) {
        Ok(()) => tracing::debug!(service, why, "stored offsets committed"),
        Err(KafkaError::ConsumerCommit(RDKafkaErrorCode::NoOffset)) => {
            tracing::debug!(service, why, "no offsets to commit")
        }
        Err(e) => tracing::warn!(service, why, error = %e, "commit of stored offsets failed"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batch_offsets_keep_the_highest_plus_one() {
        let mut b = BatchOffsets::new();
        b.done("t", 0, 5);
        b.done("t", 0, 3);
        b.done("t", 1, 0);
        let mut v: Vec<_> = b.iter().map(|((t, p), o)| (t.clone(), *p, *o)).collect();
        v.sort();
        assert_eq!(v, vec![("t".into(), 0, 6), ("t".into(), 1, 1)]);
        assert_eq!(b.to_tpl().count(), 2);
    }
}
