//! The close barrier: before a store-day closes because every trading device closed it, the ledger
//! must have booked everything the input topics held when the day first looked closed. Without it
//! the close depends on where a batch happened to end (one till's close booked in one batch, the
//! same store's other till's earlier-produced sales in the next, after the exporter looked), and so
//! would the delivered file: those sales would become adjustment lines of the next export. A day
//! closed by the cut-off needs no barrier (its moment is the clock's, not the stream's).
//!
//! Delivery guarantee: none of its own (it only delays a close); the watermarks are kept in memory,
//! so after a restart a day waits for one more look.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use tillstream_runtime::kafka::{self, KafkaConfig};

use crate::Error;
use crate::db::Db;

/// High watermark per (topic, partition).
type HighWatermarks = BTreeMap<(String, i32), i64>;

/// See the module doc.
pub struct CloseBarrier {
    /// Reads watermarks (joins no group, commits nothing).
    client: Arc<BaseConsumer>,
    /// The service's input topics.
    topics: Vec<String>,
    /// Per store-day that looked closed: the input's high watermarks at that moment.
    seen_closed: Mutex<BTreeMap<(String, i32), HighWatermarks>>,
}

impl std::fmt::Debug for CloseBarrier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CloseBarrier")
            .field("topics", &self.topics)
            .finish_non_exhaustive()
    }
}

impl CloseBarrier {
    pub fn new(kafka: &KafkaConfig, topics: &[&str]) -> Result<CloseBarrier, KafkaError> {
        let client: BaseConsumer = kafka
            .client_config("tillstream-finance-export-barrier")
            .create()?;
        Ok(CloseBarrier {
            client: Arc::new(client),
            topics: topics.iter().map(|t| t.to_string()).collect(),
            seen_closed: Mutex::new(BTreeMap::new()),
        })
    }

    /// Whether `day` (which every trading device has closed) may close now: the first look records
    /// the input's high watermarks and says no; a later look says yes once the ledger's next
    /// offsets reach them.
    pub async fn passed(&self, db: &Db, day: &(String, i32)) -> Result<bool, Error> {
        let recorded = lock(&self.seen_closed).get(day).cloned();
        let Some(goal) = recorded else {
            let marks = self.watermarks().await?;
            lock(&self.seen_closed).insert(day.clone(), marks);
            return Ok(false);
        };
        let mut booked: BTreeMap<String, BTreeMap<i32, i64>> = BTreeMap::new();
        for topic in &self.topics {
            booked.insert(topic.clone(), db.offsets(topic).await?);
        }
        let reached = goal.iter().all(|((topic, p), high)| {
            let next = booked
                .get(topic)
                .and_then(|o| o.get(p))
                .copied()
                .unwrap_or(0);
            next >= *high
        });
        if reached {
            lock(&self.seen_closed).remove(day);
        }
        Ok(reached)
    }

    /// Forgets what was recorded for `day` (it no longer looks closed, or it closed otherwise):
    /// the next time it looks closed it waits for the input as it is then.
    pub fn forget(&self, day: &(String, i32)) {
        lock(&self.seen_closed).remove(day);
    }

    async fn watermarks(&self) -> Result<HighWatermarks, Error> {
        let (client, topics) = (self.client.clone(), self.topics.clone());
        let read = tokio::task::spawn_blocking(move || {
            let names: Vec<&str> = topics.iter().map(String::as_str).collect();
            kafka::watermarks(client.client(), &names, Duration::from_secs(5))
        })
        .await
        .unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()))?;
        Ok(read
            .into_iter()
            .map(|(key, (_, high))| (key, high))
            .collect())
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}
