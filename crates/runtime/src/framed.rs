//! Reading a framed Kafka value up to its writer schema: the step every consumer takes before it
//! decodes the Avro datum as what it expects, with one set of dead-letter reasons for what can go
//! wrong there. A registry that cannot answer is not the record's fault and is returned apart, to be
//! retried; everything else about the record is poison.

use std::sync::Arc;

use tillstream_contracts::codec::{self, WriterSchema};
use tillstream_contracts::{Registry, RegistryError};

use crate::{Classify, ErrorClass};

/// Dead-letter reasons (`DeadLetter.reason`) shared by every consumer of framed records.
pub mod reason {
    /// The record has no value.
    pub const EMPTY_PAYLOAD: &str = "empty_payload";
    /// The value is not in the Confluent wire format (magic byte + schema id).
    pub const NOT_FRAMED: &str = "not_framed";
    /// The registry does not know the schema id.
    pub const UNKNOWN_SCHEMA_ID: &str = "unknown_schema_id";
    /// The registry knows the id but its schema cannot be used (does not parse, not ours).
    pub const UNUSABLE_SCHEMA: &str = "unusable_schema";
    /// The schema is not one of the store-event records.
    pub const NOT_A_STORE_EVENT: &str = "not_a_store_event";
    /// The datum does not decode with its writer schema.
    pub const UNDECODABLE: &str = "undecodable";
    /// The event decoded but has no event id (every sink is keyed on it).
    pub const MISSING_EVENT_ID: &str = "missing_event_id";
}

/// Why a record cannot be read: a dead-letter reason and a detail for people.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unreadable {
    pub reason: &'static str,
    pub detail: String,
}

impl Unreadable {
    pub fn new(reason: &'static str, detail: impl ToString) -> Unreadable {
        Unreadable {
            reason,
            detail: detail.to_string(),
        }
    }
}

/// The writer schema of a framed value and its Avro datum. `Ok(Err(_))`: the record is poison
/// (empty, not framed, unknown or unusable schema); `Err(_)`: the registry could not answer (its
/// class says whether to retry), nothing is known about the record yet.
pub async fn writer_of<'a>(
    registry: &Registry,
    payload: Option<&'a [u8]>,
) -> Result<Result<(Arc<WriterSchema>, &'a [u8]), Unreadable>, RegistryError> {
    let bytes = match payload {
        None | Some([]) => {
            return Ok(Err(Unreadable::new(
                reason::EMPTY_PAYLOAD,
                "record has no value",
            )));
        }
        Some(b) => b,
    };
    let (id, datum) = match codec::unframe(bytes) {
        Ok(x) => x,
        Err(e) => return Ok(Err(Unreadable::new(reason::NOT_FRAMED, e))),
    };
    match registry.writer_schema(id).await {
        Ok(w) => Ok(Ok((w, datum))),
        Err(e @ RegistryError::UnknownId(_)) => {
            Ok(Err(Unreadable::new(reason::UNKNOWN_SCHEMA_ID, e)))
        }
        Err(e) if e.class() == ErrorClass::Poison => {
            Ok(Err(Unreadable::new(reason::UNUSABLE_SCHEMA, e)))
        }
        Err(e) => Err(e),
    }
}
