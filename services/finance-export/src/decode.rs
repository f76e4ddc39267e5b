//! Kafka record → input: Confluent unframing, the writer schema from the registry (cached), Avro
//! decoding into a store event or a compensation. Pure apart from the registry lookup; no delivery
//! guarantee of its own: the caller waits out an unreachable registry and dead-letters poison.

use rdkafka::Message;
use rdkafka::message::OwnedMessage;
use tillstream_contracts::{
    CodecError, Compensation, DeviceEvent, EventKind, Registry, RegistryError,
};
use tillstream_runtime::framed::{self, reason};

/// What a record holds.
#[derive(Debug)]
pub enum Input {
    Event(Box<DeviceEvent>),
    Compensation(Box<Compensation>),
    /// It can never be decoded: dead-letter it with `reason` and move on.
    Poison {
        reason: &'static str,
        detail: String,
    },
}

impl Input {
    /// The identity the gate keys on.
    pub fn id(&self) -> Option<&str> {
        match self {
            Input::Event(e) => Some(e.event_id()),
            Input::Compensation(c) => Some(&c.compensation_id),
            Input::Poison { .. } => None,
        }
    }
}

fn poison(reason: &'static str, detail: impl ToString) -> Input {
    Input::Poison {
        reason,
        detail: detail.to_string(),
    }
}

/// Decodes one record. `Err` only for a registry failure (retry when it is retryable).
pub async fn decode(registry: &Registry, msg: &OwnedMessage) -> Result<Input, RegistryError> {
    let (writer, datum) = match framed::writer_of(registry, msg.payload()).await? {
        Ok(v) => v,
        Err(u) => return Ok(poison(u.reason, u.detail)),
    };
    if writer.kind == EventKind::Compensation {
        return Ok(match writer.decode::<Compensation>(datum) {
            Ok(c) => Input::Compensation(Box::new(c)),
            Err(e) => poison(reason::UNDECODABLE, e),
        });
    }
    Ok(match DeviceEvent::decode(&writer, datum) {
        Ok(e) => Input::Event(Box::new(e)),
        Err(e @ CodecError::UnknownRecord(_)) => poison(reason::NOT_A_STORE_EVENT, e),
        Err(e) => poison(reason::UNDECODABLE, e),
    })
}
