//! The finance export's errors, each classified (retryable / fatal / poison) for the loop that
//! meets it. No I/O; no delivery guarantee.

use tillstream_contracts::RegistryError;
use tillstream_runtime::kafka::DeadLetterError;
use tillstream_runtime::service::TaskFailure;
use tillstream_runtime::{Classify, ErrorClass};

use crate::db::DbError;
use crate::export::ExportError;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid configuration: {0}")]
    Config(String),
    #[error("kafka: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    #[error("schema registry: {0}")]
    Registry(#[from] RegistryError),
    #[error(transparent)]
    Db(#[from] DbError),
    #[error("dead letter: {0}")]
    DeadLetter(#[from] DeadLetterError),
    #[error(transparent)]
    Export(#[from] ExportError),
    #[error("listener: {0}")]
    Io(#[from] std::io::Error),
    #[error(transparent)]
    Task(#[from] TaskFailure),
}

impl Classify for Error {
    fn class(&self) -> ErrorClass {
        match self {
            Error::Kafka(e) => e.class(),
            Error::Registry(e) => e.class(),
            Error::Db(e) => e.class(),
            Error::Export(e) => e.class(),
            Error::DeadLetter(_) => ErrorClass::Retryable,
            Error::Config(_) | Error::Io(_) | Error::Task(_) => ErrorClass::Fatal,
        }
    }
}
