//! Kafka plumbing shared by every service, one concern a file:
//!
//! - `config`: [`KafkaConfig`] (brokers, idempotence, pass-through properties) and [`Assignment`]
//!   (consumer group or static self-assignment);
//! - `consumer`: [`InputConsumer`], the input side of every consumer service, with its
//!   [`PartitionHook`] (start offsets on assign, state hand-over on revoke);
//! - `offsets`: [`BatchOffsets`], stored only once a batch's effects are durable;
//! - `produce`: the one [`producer`] configuration, the standard [`headers`], [`send_with_retry`];
//! - `dead_letter`: [`DeadLetters`], bad input as Avro `DeadLetter` records with a reason;
//! - `read`: [`read_topic_to_end`] outside any group (oracle, tools, tests);
//! - `lag`: [`LagGauge`], the consumer-lag gauge of every consumer service.
//!
//! Delivery guarantee: at-least-once. An offset is stored only after the work it covers is durable,
//! and committed by the auto-commit timer, on revoke and on shutdown.

mod config;
mod consumer;
mod dead_letter;
mod lag;
mod offsets;
mod produce;
mod read;

pub use config::{Assignment, BrokerProfile, KafkaConfig, RecordHeaders};
pub use consumer::{ConsumerSettings, InputConsumer, PartitionContext, PartitionHook, RawConsumer};
pub use dead_letter::{DeadLetterError, DeadLetters, Rejected, Source};
pub use lag::{LagGauge, read_lag};
pub use offsets::BatchOffsets;
pub use produce::{enqueue, flush, headers, make_headers, producer, send_with_retry};
pub use read::{
    ReadError, TopicCheckError, Watermarks, check_topics, header_map, partition_count,
    read_topic_to_end, watermarks,
};
