//! Error classification shared by every service: each failure is retryable (try again later, do not
//! advance), fatal (stop the service, nothing is committed past it) or poison (this one input can never
//! succeed: dead-letter it and move on). Owns no I/O and gives no delivery guarantee of its own.

/// How a failure must be handled by the loop that met it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorClass {
    /// Transient: back off and retry the same input; never skip it.
    Retryable,
    /// The service cannot continue (bad config, lost fencing, corrupted state): stop without committing.
    Fatal,
    /// The input itself is bad: dead-letter it with the reason and continue with the next one.
    Poison,
}

impl ErrorClass {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorClass::Retryable => "retryable",
            ErrorClass::Fatal => "fatal",
            ErrorClass::Poison => "poison",
        }
    }
}

/// Implemented by every library error type so loops can decide what to do without matching on variants.
pub trait Classify {
    fn class(&self) -> ErrorClass;
}

impl Classify for rdkafka::error::KafkaError {
    fn class(&self) -> ErrorClass {
        use rdkafka::error::{KafkaError, RDKafkaErrorCode as C};
        if matches!(
            self,
            KafkaError::ClientConfig(..) | KafkaError::ClientCreation(_)
        ) {
            return ErrorClass::Fatal;
        }
        match self.rdkafka_error_code() {
            Some(C::MessageSizeTooLarge | C::InvalidRecord | C::InvalidMessage) => {
                ErrorClass::Poison
            }
            Some(
                C::Fenced
                | C::ProducerFenced
                | C::InvalidProducerEpoch
                | C::TopicAuthorizationFailed
                | C::GroupAuthorizationFailed
                | C::SaslAuthenticationFailed,
            ) => ErrorClass::Fatal,
            _ => ErrorClass::Retryable,
        }
    }
}

impl Classify for tillstream_contracts::CodecError {
    fn class(&self) -> ErrorClass {
        // Every codec failure is about one input: it can never succeed on retry.
        ErrorClass::Poison
    }
}

impl Classify for tillstream_contracts::RegistryError {
    fn class(&self) -> ErrorClass {
        use tillstream_contracts::RegistryError as E;
        match self {
            E::Unreachable { .. } => ErrorClass::Retryable,
            E::Http { status, .. } if *status >= 500 => ErrorClass::Retryable,
            E::UnknownId(_) | E::Unusable { .. } => ErrorClass::Poison,
            E::Refused(_) | E::NoSubject(_) | E::NotRegistered { .. } | E::Http { .. } => {
                ErrorClass::Fatal
            }
        }
    }
}
