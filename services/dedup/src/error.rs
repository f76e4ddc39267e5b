//! The dedup service's errors, each classified (retryable / fatal / poison) for the loop that meets
//! it. No I/O; no delivery guarantee.

use tillstream_contracts::RegistryError;
use tillstream_runtime::service::TaskFailure;
use tillstream_runtime::{Classify, ErrorClass};

use crate::changelog::ChangelogError;

#[derive(Debug, thiserror::Error)]
pub enum DedupError {
    #[error("invalid configuration: {0}")]
    Config(String),
    #[error("topics: {0}")]
    Topics(#[from] tillstream_runtime::kafka::TopicCheckError),
    #[error("kafka: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    #[error("schema registry: {0}")]
    Registry(#[from] RegistryError),
    #[error("encoding an output record: {0}")]
    Codec(#[from] tillstream_contracts::CodecError),
    #[error("changelog: {0}")]
    Changelog(#[from] ChangelogError),
    #[error("dead letter: {0}")]
    DeadLetter(#[from] tillstream_runtime::kafka::DeadLetterError),
    #[error("state restore failed: {0}")]
    Restore(String),
    #[error("transaction: {0}")]
    Transaction(String),
    #[error("ops endpoint: {0}")]
    Io(#[from] std::io::Error),
    #[error(transparent)]
    Task(#[from] TaskFailure),
}

impl Classify for DedupError {
    fn class(&self) -> ErrorClass {
        match self {
            DedupError::Kafka(e) => e.class(),
            DedupError::Topics(e) => e.class(),
            DedupError::Registry(e) => e.class(),
            _ => ErrorClass::Fatal,
        }
    }
}
