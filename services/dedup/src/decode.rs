//! Raw record -> core [`Input`], or the reason it must be dead-lettered. Talks to the schema registry
//! only on the first sight of a schema id (then cached). No delivery guarantee of its own: a
//! registry outage is returned as retryable (the batch is decoded again later, nothing skipped).

use tillstream_contracts::{DeviceEvent, Registry, RegistryError, WriterSchema};
use tillstream_runtime::framed;
use tillstream_runtime::kafka::Rejected;

use crate::core::Input;

/// Why a record cannot be processed (the dead-letter `reason`): the reasons every consumer of
/// framed records shares.
pub use tillstream_runtime::framed::reason;

/// The outcome of decoding one record.
#[derive(Debug)]
pub enum Decoded {
    Event(Input),
    /// Dead-letter it (with whatever identity could be read before it failed).
    Bad(Rejected),
}

fn bad(reason: &'static str, detail: impl Into<String>) -> Decoded {
    Decoded::Bad(Rejected::new(reason, detail))
}

/// Decodes raw records (writer schemas cached by the registry client).
#[derive(Debug, Clone)]
pub struct Decoder {
    registry: Registry,
}

impl Decoder {
    pub fn new(registry: Registry) -> Self {
        Decoder { registry }
    }

    /// Decodes one record. `Err` only for failures that are not the record's fault (registry
    /// unreachable or refusing): retry later, never skip.
    pub async fn decode(
        &mut self,
        payload: Option<&[u8]>,
        offset: i64,
        record_time: i64,
    ) -> Result<Decoded, RegistryError> {
        Ok(match framed::writer_of(&self.registry, payload).await? {
            Ok((writer, datum)) => decode_with(&writer, datum, offset, record_time),
            Err(unreadable) => Decoded::Bad(unreadable.into()),
        })
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
        return Decoded::Bad(
            Rejected::new(reason::MISSING_EVENT_ID, "event_id is empty").with_identity(
                event.store_id(),
                Some(event.device_id()),
                None,
            ),
        );
    }
    let fingerprint = match event.fingerprint() {
        Ok(f) => f,
        Err(e) => {
            return Decoded::Bad(
                Rejected::new(reason::UNDECODABLE, format!("cannot fingerprint: {e}"))
                    .with_identity(
                        event.store_id(),
                        Some(event.device_id()),
                        Some(event.event_id()),
                    ),
            );
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
