//! The price-list history tailer: reads the append-only history topic (every partition, outside
//! any consumer group: every instance needs every store's lists), from the start at every start,
//! and hands new lists to the batch loop. The downlink topic is compacted to the latest list per
//! store; this topic keeps them all, so a late sale is judged against the list in force then.
//!
//! Delivery guarantee: at-least-once into the batch loop, which ignores a list it already holds
//! (by event id) and stores new ones in the transaction that applies them. At start the whole
//! topic is read up to its end before any store event is judged ([`catch_up`]). A record that is
//! not a usable price list is dead-lettered with its reason.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use rdkafka::Message;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::OwnedMessage;
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use tillstream_contracts::PriceListApproved;
use tillstream_runtime::CancellationToken;
use tillstream_runtime::kafka::{self, DeadLetters, KafkaConfig, Rejected};
use tokio::sync::{Notify, mpsc};

use crate::decode::Decoder;
use crate::error::DetectorError;

/// Reads the history topic from its start to its end now (blocking). Returns the records and the
/// next offset per partition.
pub fn read_to_end(
    kafka: &KafkaConfig,
    topic: &str,
    timeout: Duration,
) -> Result<(Vec<OwnedMessage>, BTreeMap<i32, i64>), DetectorError> {
    let msgs = kafka::read_topic_to_end(kafka, topic, timeout)
        .map_err(|e| DetectorError::Topology(format!("reading {topic}: {e}")))?;
    let mut next = BTreeMap::new();
    for m in &msgs {
        let e = next.entry(m.partition()).or_insert(0);
        *e = (*e).max(m.offset() + 1);
    }
    Ok((msgs, next))
}

/// Decodes history records into lists, dead-lettering what is not a usable list.
pub async fn decode_all(
    decoder: &mut Decoder,
    dead: &DeadLetters,
    msgs: &[OwnedMessage],
    token: &CancellationToken,
) -> Result<Vec<PriceListApproved>, DetectorError> {
    let mut lists = Vec::new();
    for m in msgs {
        let res = decoder.price_list(m.payload()).await?;
        let bad = match res {
            Ok(list) => match crate::core::admit_price_list(&list) {
                Ok(()) => {
                    lists.push(list);
                    continue;
                }
                Err(r) => Rejected::new(r.reason, r.detail).with_identity(
                    &list.store_id,
                    Some(&list.device_id),
                    Some(&list.event_id),
                ),
            },
            Err(b) => b,
        };
        let record = dead.for_message(
            m,
            &bad,
            m.timestamp()
                .to_millis()
                .unwrap_or_else(tillstream_runtime::clock::now_ms),
        );
        dead.publish(&record, token).await?;
    }
    Ok(lists)
}

/// Tails the topic from `next` until `token` is cancelled, sending each batch of new lists to
/// the batch loop and waking it.
#[allow(clippy::too_many_arguments)]
pub async fn tail(
    kafka: KafkaConfig,
    topic: String,
    client_id: String,
    next: BTreeMap<i32, i64>,
    mut decoder: Decoder,
    dead: DeadLetters,
    lists: mpsc::UnboundedSender<Vec<PriceListApproved>>,
    waiting: Arc<Notify>,
    token: CancellationToken,
) -> Result<(), DetectorError> {
    let mut cfg = kafka.consumer_config(&format!("{client_id}-history"));
    cfg.set("group.id", format!("{client_id}-history"))
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "false")
        .set("auto.offset.reset", "earliest");
    let consumer: StreamConsumer = cfg.create()?;
    let partitions = {
        let c = &consumer;
        let t = topic.clone();
        tokio::task::block_in_place(|| {
            kafka::partition_count(c.client(), &t, Duration::from_secs(10))
        })?
    };
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions as i32 {
        let offset = next
            .get(&p)
            .map_or(Offset::Beginning, |o| Offset::Offset(*o));
        tpl.add_partition_offset(&topic, p, offset)?;
    }
    consumer.assign(&tpl)?;
    tracing::info!(%topic, partitions, "price-list history tailer running");
    loop {
        let first = tokio::select! {
            biased;
            _ = token.cancelled() => break,
            m = consumer.recv() => m,
        };
        let mut msgs = Vec::new();
        match first {
            Ok(m) => msgs.push(m.detach()),
            Err(e) => {
                tracing::warn!(error = %e, "history topic read error (librdkafka retries)");
                continue;
            }
        }
        // Whatever else is already there.
        while let Ok(Ok(m)) = tokio::time::timeout(Duration::from_millis(20), consumer.recv()).await
        {
            msgs.push(m.detach());
            if msgs.len() >= 1000 {
                break;
            }
        }
        let decoded = decode_all(&mut decoder, &dead, &msgs, &token).await?;
        if !decoded.is_empty() {
            if lists.send(decoded).is_err() {
                break;
            }
            waiting.notify_one();
        }
    }
    Ok(())
}
