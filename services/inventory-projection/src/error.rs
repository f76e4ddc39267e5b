//! The projection's errors, each classified (retryable / fatal / poison) for the loop that meets
//! it. No I/O; no delivery guarantee.

use tillstream_contracts::RegistryError;
use tillstream_runtime::kafka::DeadLetterError;
use tillstream_runtime::service::TaskFailure;
use tillstream_runtime::{Classify, ErrorClass};

use crate::db::DbError;

/// Why the projection (or `rebuild`) stopped.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Db(#[from] DbError),
    #[error("kafka: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    #[error("schema registry: {0}")]
    Registry(#[from] RegistryError),
    #[error("dead letter: {0}")]
    DeadLetter(#[from] DeadLetterError),
    #[error("ops endpoint: {0}")]
    Io(#[from] std::io::Error),
    /// A condition the projection cannot continue from (a missing topic, a rebuild that never
    /// caught up, cancellation of a one-shot command).
    #[error("{0}")]
    Other(String),
    #[error(transparent)]
    Task(#[from] TaskFailure),
}

impl Classify for Error {
    fn class(&self) -> ErrorClass {
        match self {
            Error::Db(e) => e.class(),
            Error::Kafka(e) => e.class(),
            Error::Registry(e) => e.class(),
            Error::DeadLetter(_) | Error::Io(_) => ErrorClass::Retryable,
            Error::Other(_) | Error::Task(_) => ErrorClass::Fatal,
        }
    }
}
