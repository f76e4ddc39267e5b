//! Raw record -> core [`Input`], or the reason it must be dead-lettered. Talks to the schema registry
//! only on the first sight of a schema id (then cached). No delivery guarantee of its own: a
//! registry outage is returned as retryable (the batch is decoded again later, nothing skipped).

use std::collections::HashMap;
use std::sync::Arc;

use tillstream_contracts::{DeviceEvent, Registry, RegistryError, WriterSchema, codec};
use tillstream_runtime::{Classify, ErrorClass};

use crate::core::Input;

/// Why a record cannot be processed (the dead-letter `reason`).
pub mod reason {
    pub const EMPTY_PAYLOAD: &str = "empty_payload";
    pub const NOT_FRAMED: &str = "not_framed";
    pub const UNKNOWN_SCHEMA_ID: &str = "unknown_schema_id";
    pub const UNUSABLE_SCHEMA: &str = "unusable_schema";
    pub const NOT_A_STORE_EVENT: &str = "not_a_store_event";
    pub const UNDECODABLE: &str = "undecodable";
    pub const MISSING_EVENT_ID: &str = "missing_event_id";
}

/// The outcome of decoding one record.
#[derive(Debug)]
pub enum Decoded {
    Event(Input),
    Bad {
        reason: &'static str,
        detail: String,
        /// Whatever identity could be read before it failed.
        store_id: Option<String>,
        device_id: Option<String>,
        event_id: Option<String>,
    },
}

fn bad(reason: &'static str, detail: impl Into<String>) -> Decoded {
    Decoded::Bad {
        reason,
        detail: detail.into(),
        store_id: None,
        device_id: None,
        event_id: None,
    }
}

/// Decodes raw records through a local cache of writer schemas.
#[derive(Debug, Clone)]
pub struct Decoder {
    registry: Registry,
    cache: HashMap<u32, Arc<WriterSchema>>,
}

impl Decoder {
    pub fn new(registry: Registry) -> Self {
        Decoder {
            registry,
            cache: HashMap::new(),
        }
    }

    /// Decodes one record. `Err` only for failures that are not the record's fault (registry
    /// unreachable or refusing): retry later, never skip.
    pub async fn decode(
        &mut self,
        payload: Option<&[u8]>,
        offset: i64,
        record_time: i64,
    ) -> Result<Decoded, RegistryError> {
        let bytes = match payload {
            None | Some([]) => return Ok(bad(reason::EMPTY_PAYLOAD, "record has no value")),
            Some(b) => b,
        };
        let (id, datum) = match codec::unframe(bytes) {
            Ok(x) => x,
            Err(e) => return Ok(bad(reason::NOT_FRAMED, e.to_string())),
        };
        let writer = match self.cache.get(&id) {
            Some(w) => w.clone(),
            None => match self.registry.writer_schema(id).await {
                Ok(w) => {
                    self.cache.insert(id, w.clone());
                    w
                }
                Err(e) if e.class() == ErrorClass::Poison => {
                    let r = match e {
                        RegistryError::UnknownId(_) => reason::UNKNOWN_SCHEMA_ID,
                        _ => reason::UNUSABLE_SCHEMA,
                    };
                    return Ok(bad(r, e.to_string()));
                }
                Err(e) => return Err(e),
            },
        };
        Ok(decode_with(&writer, datum, offset, record_time))
    }
}

/// Decodes a datum written with `writer` (pure).
pub fn decode_with(writer: &WriterSchema, datum: &[u8], offset: i64, record_time: i64) -> Decoded {
    if !writer.kind.is_store_event() {
        return bad(
            reason::NOT_A_STORE_EVENT,
            format!("schema {} is {}", writer.id, writer.kind.full_name()),
        );
    }
    let event = match DeviceEvent::decode(writer, datum) {
        Ok(e) => e,
        Err(e) => return bad(reason::UNDECODABLE, e.to_string()),
    };
    if event.event_id().is_empty() {
        return Decoded::Bad {
            reason: reason::MISSING_EVENT_ID,
            detail: "event_id is empty".into(),
            store_id: Some(event.store_id().to_string()),
            device_id: Some(event.device_id().to_string()),
            event_id: None,
        };
    }
    let fingerprint = match event.fingerprint() {
        Ok(f) => f,
        Err(e) => {
            return Decoded::Bad {
                reason: reason::UNDECODABLE,
                detail: format!("cannot fingerprint: {e}"),
                store_id: Some(event.store_id().to_string()),
                device_id: Some(event.device_id().to_string()),
                event_id: Some(event.event_id().to_string()),
            };
        }
    };
    Decoded::Event(Input {
        offset,
        record_time,
        event_type: event.kind().name(),
        event_id: event.event_id().to_string(),
        device_id: event.device_id().to_string(),
        store_id: event.store_id().to_string(),
        seq: event.seq(),
        occurred_at: event.occurred_at(),
        fingerprint,
    })
}
