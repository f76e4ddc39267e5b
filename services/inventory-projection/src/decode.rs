//! Kafka record → [`Envelope`]: Confluent unframing, writer schema from the registry (cached),
//! Avro decoding into a store event. Pure apart from the registry lookup; no delivery guarantee of
//! its own: [`decode_retrying`] waits out an unreachable registry, the caller dead-letters (or, in a
//! rebuild, skips) poison and stops on fatal errors.

use rdkafka::Message;
use rdkafka::message::OwnedMessage;
use tillstream_contracts::{CodecError, DeviceEvent, Registry, RegistryError};
use tillstream_runtime::framed::{self, reason};
use tillstream_runtime::retry::Backoff;
use tillstream_runtime::{CancellationToken, Classify, ErrorClass};

use crate::model::Envelope;

/// Why a record could not become an event.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// This record can never be decoded: dead-letter it (reason, detail) and move on.
    #[error("{reason}: {detail}")]
    Poison {
        reason: &'static str,
        detail: String,
    },
    /// The registry is unreachable or failing: try the same record again later.
    #[error("schema registry: {0}")]
    Registry(RegistryError),
}

impl Classify for DecodeError {
    fn class(&self) -> ErrorClass {
        match self {
            DecodeError::Poison { .. } => ErrorClass::Poison,
            DecodeError::Registry(e) => e.class(),
        }
    }
}

fn poison(reason: &'static str, detail: impl ToString) -> DecodeError {
    DecodeError::Poison {
        reason,
        detail: detail.to_string(),
    }
}

/// What became of a record.
// Moved once, straight into the batch: boxing the event would cost an allocation per record.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub enum Decoded {
    Event(Envelope),
    /// This record can never be decoded (see [`DecodeError::Poison`]).
    Poison {
        reason: &'static str,
        detail: String,
    },
}

/// [`decode`], retrying (with back-off) while the registry is unreachable. `Ok(None)` when `token`
/// is cancelled while waiting; `Err` for a registry failure that is not retryable.
pub async fn decode_retrying(
    registry: &Registry,
    msg: &OwnedMessage,
    token: &CancellationToken,
) -> Result<Option<Decoded>, RegistryError> {
    let mut backoff = Backoff::new(std::time::Duration::from_millis(200));
    loop {
        match decode(registry, msg).await {
            Ok(env) => return Ok(Some(Decoded::Event(env))),
            Err(DecodeError::Poison { reason, detail }) => {
                return Ok(Some(Decoded::Poison { reason, detail }));
            }
            Err(DecodeError::Registry(e)) if e.class() == ErrorClass::Retryable => {
                tracing::warn!(error = %e, "cannot decode yet; retrying");
                if !backoff.wait(token).await {
                    return Ok(None);
                }
            }
            Err(DecodeError::Registry(e)) => return Err(e),
        }
    }
}

/// Decodes one record of the store-event topic.
pub async fn decode(registry: &Registry, msg: &OwnedMessage) -> Result<Envelope, DecodeError> {
    let (writer, datum) = framed::writer_of(registry, msg.payload())
        .await
        .map_err(DecodeError::Registry)?
        .map_err(|u| poison(u.reason, u.detail))?;
    let event = DeviceEvent::decode(&writer, datum).map_err(|e| match e {
        CodecError::UnknownRecord(_) => poison(reason::NOT_A_STORE_EVENT, e),
        other => poison(reason::UNDECODABLE, other),
    })?;
    let record_ts = msg
        .timestamp()
        .to_millis()
        .filter(|t| *t >= 0)
        .unwrap_or_else(|| event.occurred_at());
    Ok(Envelope {
        partition: msg.partition(),
        offset: msg.offset(),
        record_ts,
        event,
    })
}
