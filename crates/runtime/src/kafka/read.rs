//! Reading a topic outside any consumer group: every record from the low to the high watermark,
//! committing nothing (the oracle, `tillctl tail`, tests). Blocking; no delivery guarantee needed.

use std::collections::BTreeMap;
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};

use super::KafkaConfig;

/// Reads every record currently in `topic` (all partitions, from the low watermark to the high
/// watermark seen at the start) without joining a consumer group and without committing anything.
/// Blocking: call it from `spawn_blocking` or a blocking context. Fails if the end is not reached
/// within `timeout` or the topic does not exist.
pub fn read_topic_to_end(
    config: &KafkaConfig,
    topic: &str,
    timeout: Duration,
) -> Result<Vec<rdkafka::message::OwnedMessage>, ReadError> {
    use rdkafka::Message;
    let mut cfg = config.consumer_config("tillstream-reader");
    cfg.set("group.id", "tillstream-reader")
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "false");
    let consumer: BaseConsumer = cfg.create()?;
    let md = consumer.fetch_metadata(Some(topic), Duration::from_secs(10))?;
    let parts: Vec<i32> = md
        .topics()
        .iter()
        .find(|t| t.name() == topic)
        .map(|t| t.partitions().iter().map(|p| p.id()).collect())
        .unwrap_or_default();
    if parts.is_empty() {
        return Err(ReadError::NoTopic(topic.to_string()));
    }
    let mut tpl = TopicPartitionList::new();
    let mut remaining = BTreeMap::new();
    for p in parts {
        let (lo, hi) = consumer.fetch_watermarks(topic, p, Duration::from_secs(10))?;
        if hi > lo {
            remaining.insert(p, hi);
            tpl.add_partition_offset(topic, p, Offset::Offset(lo))?;
        }
    }
    let mut out = Vec::new();
    if remaining.is_empty() {
        return Ok(out);
    }
    consumer.assign(&tpl)?;
    let deadline = std::time::Instant::now() + timeout;
    while !remaining.is_empty() {
        if std::time::Instant::now() > deadline {
            return Err(ReadError::Timeout {
                topic: topic.to_string(),
                read: out.len(),
            });
        }
        let Some(m) = consumer.poll(Duration::from_millis(200)) else {
            continue;
        };
        let m = m?;
        if let Some(hi) = remaining.get(&m.partition())
            && m.offset() + 1 >= *hi
        {
            remaining.remove(&m.partition());
        }
        out.push(m.detach());
    }
    Ok(out)
}

#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("topic {0} does not exist")]
    NoTopic(String),
    #[error("reading {topic}: end not reached in time ({read} records read)")]
    Timeout { topic: String, read: usize },
    #[error(transparent)]
    Kafka(#[from] KafkaError),
}

/// Headers of a record as a map (values lossily decoded as UTF-8).
pub fn header_map(m: &impl rdkafka::Message) -> BTreeMap<String, String> {
    use rdkafka::message::Headers;
    m.headers()
        .map(|h| {
            h.iter()
                .map(|x| {
                    (
                        x.key.to_string(),
                        x.value
                            .map(|v| String::from_utf8_lossy(v).into_owned())
                            .unwrap_or_default(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

/// The partition count of `topic` (0 when it does not exist). Blocking.
pub fn partition_count<C: rdkafka::ClientContext>(
    client: &rdkafka::client::Client<C>,
    topic: &str,
    timeout: Duration,
) -> Result<usize, KafkaError> {
    let md = client.fetch_metadata(Some(topic), timeout)?;
    Ok(md
        .topics()
        .iter()
        .find(|t| t.name() == topic)
        .map(|t| t.partitions().len())
        .unwrap_or(0))
}

/// (low, high) watermarks per (topic, partition).
pub type Watermarks = BTreeMap<(String, i32), (i64, i64)>;

/// The (low, high) watermarks of every partition of `topics` (a topic that does not exist has
/// none). Blocking.
pub fn watermarks<C: rdkafka::ClientContext>(
    client: &rdkafka::client::Client<C>,
    topics: &[&str],
    timeout: Duration,
) -> Result<Watermarks, KafkaError> {
    let mut out = BTreeMap::new();
    for topic in topics {
        for p in 0..partition_count(client, topic, timeout)? as i32 {
            let marks = client.fetch_watermarks(topic, p, timeout)?;
            out.insert((topic.to_string(), p), marks);
        }
    }
    Ok(out)
}

/// Why a service's topics do not fit it.
#[derive(Debug, thiserror::Error)]
pub enum TopicCheckError {
    /// The broker could not be asked (retryable at the caller's discretion).
    #[error(transparent)]
    Kafka(#[from] KafkaError),
    /// A topic is missing, or co-partitioned topics differ in partition count (fatal: the
    /// topology must be applied or fixed).
    #[error("{0}")]
    Topology(String),
}

impl crate::Classify for TopicCheckError {
    fn class(&self) -> crate::ErrorClass {
        match self {
            TopicCheckError::Kafka(e) => e.class(),
            TopicCheckError::Topology(_) => crate::ErrorClass::Fatal,
        }
    }
}

/// Checks at start that every topic exists and that the `co_partitioned` ones have the partition
/// count of the first of them (a store's records, and a service's state, keep their partition
/// number across those topics). Blocking (runs in place on a multi-thread runtime's worker).
pub fn check_topics<C: rdkafka::ClientContext>(
    client: &rdkafka::client::Client<C>,
    co_partitioned: &[&str],
    present: &[&str],
    timeout: Duration,
) -> Result<(), TopicCheckError> {
    let count = |topic: &str| -> Result<usize, TopicCheckError> {
        let n = crate::retry::blocking(|| partition_count(client, topic, timeout))?;
        if n == 0 {
            return Err(TopicCheckError::Topology(format!(
                "topic {topic} does not exist (run `tillctl topology apply`)"
            )));
        }
        Ok(n)
    };
    if let Some((first, rest)) = co_partitioned.split_first() {
        let reference = count(first)?;
        for t in rest {
            let n = count(t)?;
            if n != reference {
                return Err(TopicCheckError::Topology(format!(
                    "{t} has {n} partitions, {first} has {reference}: they must be co-partitioned \
                     (a store's records keep their partition number across them)"
                )));
            }
        }
    }
    for t in present {
        count(t)?;
    }
    Ok(())
}
