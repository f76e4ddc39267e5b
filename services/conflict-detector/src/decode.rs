//! Raw record -> what the detector reads (a store event, a dedup conflict, a price list), or the
//! reason it must be dead-lettered. Talks to the schema registry only on the first sight of a
//! schema id. No delivery guarantee of its own: a registry outage is returned as an error to retry
//! (the batch is decoded again later, nothing skipped).

use std::sync::Arc;

use tillstream_contracts::{
    ConflictDetected, DeviceEvent, EventKind, PriceListApproved, Registry, RegistryError,
    WriterSchema,
};
use tillstream_runtime::framed;
use tillstream_runtime::kafka::Rejected;

/// Why a record cannot be processed (the dead-letter `reason`): the reasons every consumer of
/// framed records shares, and the detector's own.
pub mod reason {
    pub use tillstream_runtime::framed::reason::{
        EMPTY_PAYLOAD, MISSING_EVENT_ID, NOT_FRAMED, UNDECODABLE, UNKNOWN_SCHEMA_ID,
        UNUSABLE_SCHEMA,
    };
    /// A record of a kind that does not belong on the topic it came from.
    pub const UNEXPECTED_RECORD: &str = "unexpected_record";
}

/// A decoded store event and the schema it was written with (kept for the restore log).
#[derive(Debug, Clone)]
pub struct StoreEvent {
    pub event: DeviceEvent,
    pub schema_id: u32,
}

/// Decodes records (writer schemas cached by the registry client).
#[derive(Debug, Clone)]
pub struct Decoder {
    registry: Registry,
}

impl Decoder {
    pub fn new(registry: Registry) -> Self {
        Decoder { registry }
    }

    /// The writer schema of a framed payload, or why the record is unusable. `Err` only when the
    /// registry cannot answer (retry, never skip).
    async fn writer<'a>(
        &mut self,
        payload: Option<&'a [u8]>,
    ) -> Result<Result<(Arc<WriterSchema>, &'a [u8]), Rejected>, RegistryError> {
        Ok(framed::writer_of(&self.registry, payload)
            .await?
            .map_err(Rejected::from))
    }

    /// A store event from `tillstream.store-events`.
    pub async fn store_event(
        &mut self,
        payload: Option<&[u8]>,
    ) -> Result<Result<StoreEvent, Rejected>, RegistryError> {
        let (w, datum) = match self.writer(payload).await? {
            Ok(x) => x,
            Err(b) => return Ok(Err(b)),
        };
        Ok(store_event_with(&w, datum))
    }

    /// The writer schema of a stored event (restore).
    pub async fn schema(&mut self, id: u32) -> Result<Arc<WriterSchema>, RegistryError> {
        self.registry.writer_schema(id).await
    }

    /// A record of `tillstream.conflicts`: `Some` for a `ConflictDetected`, `None` for the
    /// resolutions that share the topic.
    pub async fn conflict(
        &mut self,
        payload: Option<&[u8]>,
    ) -> Result<Result<Option<ConflictDetected>, Rejected>, RegistryError> {
        let (w, datum) = match self.writer(payload).await? {
            Ok(x) => x,
            Err(b) => return Ok(Err(b)),
        };
        Ok(match w.kind {
            EventKind::ConflictDetected => w
                .decode::<ConflictDetected>(datum)
                .map(Some)
                .map_err(|e| Rejected::new(reason::UNDECODABLE, e.to_string())),
            EventKind::ConflictResolved => Ok(None),
            other => Err(Rejected::new(
                reason::UNEXPECTED_RECORD,
                format!("{other} on the conflicts topic"),
            )),
        })
    }

    /// A record of the price-list history topic.
    pub async fn price_list(
        &mut self,
        payload: Option<&[u8]>,
    ) -> Result<Result<PriceListApproved, Rejected>, RegistryError> {
        let (w, datum) = match self.writer(payload).await? {
            Ok(x) => x,
            Err(b) => return Ok(Err(b)),
        };
        if w.kind != EventKind::PriceListApproved {
            return Ok(Err(Rejected::new(
                reason::UNEXPECTED_RECORD,
                format!("{} on the price-list history topic", w.kind),
            )));
        }
        Ok(w.decode::<PriceListApproved>(datum)
            .map_err(|e| Rejected::new(reason::UNDECODABLE, e.to_string())))
    }
}

/// Decodes a store event's datum written with `w` (pure).
pub fn store_event_with(w: &WriterSchema, datum: &[u8]) -> Result<StoreEvent, Rejected> {
    if !w.kind.is_store_event() {
        return Err(Rejected::new(
            reason::UNEXPECTED_RECORD,
            format!(
                "schema {} is {}, not a store event",
                w.id,
                w.kind.full_name()
            ),
        ));
    }
    let event = DeviceEvent::decode(w, datum)
        .map_err(|e| Rejected::new(reason::UNDECODABLE, e.to_string()))?;
    if event.event_id().is_empty() {
        return Err(
            Rejected::new(reason::MISSING_EVENT_ID, "event_id is empty").with_identity(
                event.store_id(),
                Some(event.device_id()),
                None,
            ),
        );
    }
    Ok(StoreEvent {
        event,
        schema_id: w.id,
    })
}
