//! Raw record -> what the detector reads (a store event, a dedup conflict, a price list), or the
//! reason it must be dead-lettered. Talks to the schema registry only on the first sight of a
//! schema id. No delivery guarantee of its own: a registry outage is returned as an error to retry
//! (the batch is decoded again later, nothing skipped).

use rustc_hash::FxHashMap as HashMap;
use std::sync::Arc;

use tillstream_contracts::{
    ConflictDetected, DeviceEvent, EventKind, PriceListApproved, Registry, RegistryError,
    WriterSchema, codec,
};
use tillstream_runtime::{Classify, ErrorClass};

/// Why a record cannot be processed (the dead-letter `reason`).
pub mod reason {
    pub const EMPTY_PAYLOAD: &str = "empty_payload";
    pub const NOT_FRAMED: &str = "not_framed";
    pub const UNKNOWN_SCHEMA_ID: &str = "unknown_schema_id";
    pub const UNUSABLE_SCHEMA: &str = "unusable_schema";
    pub const UNEXPECTED_RECORD: &str = "unexpected_record";
    pub const UNDECODABLE: &str = "undecodable";
    pub const MISSING_EVENT_ID: &str = "missing_event_id";
}

/// A record that cannot be processed, with whatever identity could be read.
#[derive(Debug, Clone)]
pub struct Bad {
    pub reason: &'static str,
    pub detail: String,
    pub store_id: Option<String>,
    pub device_id: Option<String>,
    pub event_id: Option<String>,
}

fn bad(reason: &'static str, detail: impl Into<String>) -> Bad {
    Bad {
        reason,
        detail: detail.into(),
        store_id: None,
        device_id: None,
        event_id: None,
    }
}

/// A decoded store event and the schema it was written with (kept for the restore log).
#[derive(Debug, Clone)]
pub struct StoreEvent {
    pub event: DeviceEvent,
    pub schema_id: u32,
}

/// Decodes through a local cache of writer schemas.
#[derive(Debug, Clone)]
pub struct Decoder {
    registry: Registry,
    cache: HashMap<u32, Arc<WriterSchema>>,
}

impl Decoder {
    pub fn new(registry: Registry) -> Self {
        Decoder {
            registry,
            cache: HashMap::default(),
        }
    }

    /// The writer schema of a framed payload, or why the record is unusable. `Err` only when the
    /// registry cannot answer (retry, never skip).
    async fn writer<'a>(
        &mut self,
        payload: Option<&'a [u8]>,
    ) -> Result<Result<(Arc<WriterSchema>, &'a [u8]), Bad>, RegistryError> {
        let bytes = match payload {
            None | Some([]) => return Ok(Err(bad(reason::EMPTY_PAYLOAD, "record has no value"))),
            Some(b) => b,
        };
        let (id, datum) = match codec::unframe(bytes) {
            Ok(x) => x,
            Err(e) => return Ok(Err(bad(reason::NOT_FRAMED, e.to_string()))),
        };
        if let Some(w) = self.cache.get(&id) {
            return Ok(Ok((w.clone(), datum)));
        }
        match self.registry.writer_schema(id).await {
            Ok(w) => {
                self.cache.insert(id, w.clone());
                Ok(Ok((w, datum)))
            }
            Err(e) if e.class() == ErrorClass::Poison => {
                let r = match e {
                    RegistryError::UnknownId(_) => reason::UNKNOWN_SCHEMA_ID,
                    _ => reason::UNUSABLE_SCHEMA,
                };
                Ok(Err(bad(r, e.to_string())))
            }
            Err(e) => Err(e),
        }
    }

    /// A store event from `tillstream.store-events`.
    pub async fn store_event(
        &mut self,
        payload: Option<&[u8]>,
    ) -> Result<Result<StoreEvent, Bad>, RegistryError> {
        let (w, datum) = match self.writer(payload).await? {
            Ok(x) => x,
            Err(b) => return Ok(Err(b)),
        };
        Ok(store_event_with(&w, datum))
    }

    /// The writer schema of a stored event (restore).
    pub async fn schema(&mut self, id: u32) -> Result<Arc<WriterSchema>, RegistryError> {
        if let Some(w) = self.cache.get(&id) {
            return Ok(w.clone());
        }
        let w = self.registry.writer_schema(id).await?;
        self.cache.insert(id, w.clone());
        Ok(w)
    }

    /// A record of `tillstream.conflicts`: `Some` for a `ConflictDetected`, `None` for the
    /// resolutions that share the topic.
    pub async fn conflict(
        &mut self,
        payload: Option<&[u8]>,
    ) -> Result<Result<Option<ConflictDetected>, Bad>, RegistryError> {
        let (w, datum) = match self.writer(payload).await? {
            Ok(x) => x,
            Err(b) => return Ok(Err(b)),
        };
        Ok(match w.kind {
            EventKind::ConflictDetected => w
                .decode::<ConflictDetected>(datum)
                .map(Some)
                .map_err(|e| bad(reason::UNDECODABLE, e.to_string())),
            EventKind::ConflictResolved => Ok(None),
            other => Err(bad(
                reason::UNEXPECTED_RECORD,
                format!("{other} on the conflicts topic"),
            )),
        })
    }

    /// A record of the price-list history topic.
    pub async fn price_list(
        &mut self,
        payload: Option<&[u8]>,
    ) -> Result<Result<PriceListApproved, Bad>, RegistryError> {
        let (w, datum) = match self.writer(payload).await? {
            Ok(x) => x,
            Err(b) => return Ok(Err(b)),
        };
        if w.kind != EventKind::PriceListApproved {
            return Ok(Err(bad(
                reason::UNEXPECTED_RECORD,
                format!("{} on the price-list history topic", w.kind),
            )));
        }
        Ok(w.decode::<PriceListApproved>(datum)
            .map_err(|e| bad(reason::UNDECODABLE, e.to_string())))
    }
}

/// Decodes a store event's datum written with `w` (pure).
pub fn store_event_with(w: &WriterSchema, datum: &[u8]) -> Result<StoreEvent, Bad> {
    if !w.kind.is_store_event() {
        return Err(bad(
            reason::UNEXPECTED_RECORD,
            format!(
                "schema {} is {}, not a store event",
                w.id,
                w.kind.full_name()
            ),
        ));
    }
    let event =
        DeviceEvent::decode(w, datum).map_err(|e| bad(reason::UNDECODABLE, e.to_string()))?;
    if event.event_id().is_empty() {
        return Err(Bad {
            reason: reason::MISSING_EVENT_ID,
            detail: "event_id is empty".into(),
            store_id: Some(event.store_id().to_string()),
            device_id: Some(event.device_id().to_string()),
            event_id: None,
        });
    }
    Ok(StoreEvent {
        event,
        schema_id: w.id,
    })
}
