//! The conflict detector's errors, each classified (retryable / fatal / poison) for the loop that
//! meets it. No I/O; no delivery guarantee.

use tillstream_contracts::{CodecError, RegistryError};
use tillstream_runtime::kafka::DeadLetterError;
use tillstream_runtime::service::TaskFailure;
use tillstream_runtime::{Classify, ErrorClass};

use crate::db::DbError;

#[derive(Debug, thiserror::Error)]
pub enum DetectorError {
    #[error("invalid configuration: {0}")]
    Config(String),
    #[error("topology: {0}")]
    Topology(String),
    #[error("topics: {0}")]
    Topics(#[from] tillstream_runtime::kafka::TopicCheckError),
    #[error("kafka: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    #[error("schema registry: {0}")]
    Registry(#[from] RegistryError),
    #[error("encoding an output record: {0}")]
    Codec(#[from] CodecError),
    #[error(transparent)]
    Db(#[from] DbError),
    #[error("dead letter: {0}")]
    DeadLetter(#[from] DeadLetterError),
    #[error("restoring partition state: {0}")]
    Restore(String),
    #[error("arithmetic: {0}")]
    Overflow(#[from] crate::core::money::Overflow),
    #[error("listener: {0}")]
    Io(#[from] std::io::Error),
    #[error(transparent)]
    Task(#[from] TaskFailure),
}

impl Classify for DetectorError {
    fn class(&self) -> ErrorClass {
        match self {
            DetectorError::Kafka(e) => e.class(),
            DetectorError::Topics(e) => e.class(),
            DetectorError::Registry(e) => e.class(),
            DetectorError::Db(e) => e.class(),
            DetectorError::DeadLetter(_) => ErrorClass::Retryable,
            DetectorError::Codec(_) | DetectorError::Overflow(_) => ErrorClass::Poison,
            _ => ErrorClass::Fatal,
        }
    }
}
