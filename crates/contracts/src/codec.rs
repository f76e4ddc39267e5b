//! Avro encoding and decoding of events, schema resolution between versions, the Confluent wire
//! format (magic byte 0 + 4-byte big-endian schema id + Avro datum) and the canonical fingerprint
//! used to tell a true duplicate from an identity collision. Pure functions; no I/O.

use std::sync::OnceLock;

use apache_avro::Schema;
use apache_avro::reader::datum::GenericDatumReader;
use apache_avro::writer::datum::GenericDatumWriter;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::catalog::EventKind;
use crate::events::*;

#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    #[error("not Confluent wire format: {0}")]
    NotFramed(String),
    #[error("{kind} v{version} is not a shipped schema version")]
    UnknownVersion { kind: EventKind, version: u32 },
    #[error("record {0} is not a tillstream event")]
    UnknownRecord(String),
    #[error("cannot encode {kind}: {source}")]
    Encode {
        kind: EventKind,
        #[source]
        source: apache_avro::Error,
    },
    #[error("{count} trailing bytes after a {kind} record")]
    TrailingBytes { kind: EventKind, count: usize },
    #[error("cannot decode {kind}: {source}")]
    Decode {
        kind: EventKind,
        #[source]
        source: apache_avro::Error,
    },
}

/// Magic byte of the Confluent wire format.
pub const MAGIC: u8 = 0;

/// Prefixes an Avro datum with the Confluent header.
pub fn frame(schema_id: u32, datum: Vec<u8>) -> Vec<u8> {
    schema_registry_converter::schema_registry_common::get_payload(schema_id, datum)
}

/// Splits a Confluent-framed payload into (schema id, datum).
pub fn unframe(bytes: &[u8]) -> Result<(u32, &[u8]), CodecError> {
    match bytes {
        [MAGIC, a, b, c, d, rest @ ..] => Ok((u32::from_be_bytes([*a, *b, *c, *d]), rest)),
        [] => Err(CodecError::NotFramed("empty payload".into())),
        [m, ..] if *m != MAGIC => Err(CodecError::NotFramed(format!(
            "magic byte is {m:#04x}, expected 0x00"
        ))),
        _ => Err(CodecError::NotFramed(format!(
            "{} bytes is shorter than the 5-byte header",
            bytes.len()
        ))),
    }
}

/// Encodes `value` with `kind`'s schema `version`.
///
/// The latest version goes through apache-avro's schema-aware serializer (no intermediate `Value`);
/// older versions go through `Value` + schema resolution so fields added later are dropped.
pub fn encode<T: Serialize>(
    kind: EventKind,
    version: u32,
    value: &T,
) -> Result<Vec<u8>, CodecError> {
    let enc = |source| CodecError::Encode { kind, source };
    let (schema, writer) = datum_writer(kind, version)?;
    if version == kind.latest_version() {
        writer.write_ser_to_vec(value).map_err(enc)
    } else {
        let v = apache_avro::to_value(value).map_err(enc)?;
        let v = v.resolve(schema).map_err(enc)?;
        writer.write_value_to_vec(v).map_err(enc)
    }
}

type CachedWriter = (&'static Schema, GenericDatumWriter<'static>);

/// Datum writers for the embedded schemas, built once (building one resolves every named type).
fn datum_writer(kind: EventKind, version: u32) -> Result<&'static CachedWriter, CodecError> {
    static WRITERS: OnceLock<Vec<(EventKind, u32, CachedWriter)>> = OnceLock::new();
    let all = WRITERS.get_or_init(|| {
        EventKind::ALL
            .into_iter()
            .flat_map(|k| k.versions().into_iter().map(move |v| (k, v)))
            .filter_map(|(k, v)| {
                let schema = k.schema(v)?;
                let writer = GenericDatumWriter::builder(schema).build().ok()?;
                Some((k, v, (schema, writer)))
            })
            .collect()
    });
    all.iter()
        .find(|(k, v, _)| *k == kind && *v == version)
        .map(|(_, _, w)| w)
        .ok_or(CodecError::UnknownVersion { kind, version })
}

/// A schema some producer wrote with (fetched from the registry by id), prepared for decoding into
/// the Rust type of its kind. Built once per schema id; schemas are leaked on purpose: a process
/// meets a handful of ids in its life, and a `'static` schema lets the prepared reader be cached.
pub struct WriterSchema {
    pub id: u32,
    pub kind: EventKind,
    /// The shipped version this schema is identical to, if any.
    pub version: Option<u32>,
    schema: &'static Schema,
    /// Reads datums straight into the Rust type (writer = reader, no resolution needed).
    direct: Option<GenericDatumReader<'static>>,
    /// Reads into a `Value` resolved to the latest schema (writer differs from reader).
    resolving: Option<GenericDatumReader<'static>>,
}

impl std::fmt::Debug for WriterSchema {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WriterSchema")
            .field("id", &self.id)
            .field("kind", &self.kind)
            .field("version", &self.version)
            .finish_non_exhaustive()
    }
}

impl WriterSchema {
    pub fn new(id: u32, schema: Schema) -> Result<WriterSchema, CodecError> {
        let name = match &schema {
            Schema::Record(r) => r.name.fullname(None),
            other => return Err(CodecError::UnknownRecord(format!("{other:?}"))),
        };
        let kind = EventKind::from_full_name(&name).ok_or(CodecError::UnknownRecord(name))?;
        let schema: &'static Schema = Box::leak(Box::new(schema));
        let version = kind
            .versions()
            .into_iter()
            .find(|v| kind.schema(*v).is_some_and(|s| schema_json_eq(s, schema)));
        let dec = |source| CodecError::Decode { kind, source };
        let latest = kind.latest_schema();
        let (direct, resolving) = if version == Some(kind.latest_version()) {
            (
                Some(GenericDatumReader::builder(schema).build().map_err(dec)?),
                None,
            )
        } else {
            let r = GenericDatumReader::builder(schema)
                .reader_schema(latest)
                .build()
                .map_err(dec)?;
            (None, Some(r))
        };
        Ok(WriterSchema {
            id,
            kind,
            version,
            schema,
            direct,
            resolving,
        })
    }

    /// The writer schema for a shipped (kind, version), e.g. for tests and local tools.
    pub fn shipped(id: u32, kind: EventKind, version: u32) -> Result<WriterSchema, CodecError> {
        let schema = kind
            .schema(version)
            .ok_or(CodecError::UnknownVersion { kind, version })?;
        WriterSchema::new(id, schema.clone())
    }

    pub fn schema(&self) -> &Schema {
        self.schema
    }

    /// Decodes a datum into JSON (resolved to the kind's latest schema), for inspection tools.
    pub fn decode_json(&self, datum: &[u8]) -> Result<serde_json::Value, CodecError> {
        let kind = self.kind;
        let dec = |source| CodecError::Decode { kind, source };
        let reader = self
            .resolving
            .as_ref()
            .or(self.direct.as_ref())
            .expect("one reader is always built");
        let mut input = datum;
        let value = reader.read_value(&mut input).map_err(dec)?;
        serde_json::Value::try_from(value).map_err(dec)
    }

    /// Decodes a datum into the Rust type of this schema's kind (its latest version).
    pub fn decode<T: DeserializeOwned>(&self, datum: &[u8]) -> Result<T, CodecError> {
        let kind = self.kind;
        let dec = |source| CodecError::Decode { kind, source };
        let mut input = datum;
        let out = if let Some(direct) = &self.direct {
            direct.read_deser(&mut input).map_err(dec)?
        } else if let Some(resolving) = &self.resolving {
            let value = resolving.read_value(&mut input).map_err(dec)?;
            apache_avro::from_value(&value).map_err(dec)?
        } else {
            unreachable!("one reader is always built")
        };
        if !input.is_empty() {
            return Err(CodecError::TrailingBytes {
                kind,
                count: input.len(),
            });
        }
        Ok(out)
    }
}

/// Two schemas are the same if their JSON forms are equal (defaults and docs included; Parsing
/// Canonical Form would drop defaults and is therefore not used).
pub fn schema_json_eq(a: &Schema, b: &Schema) -> bool {
    match (serde_json::to_value(a), serde_json::to_value(b)) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    }
}

macro_rules! device_events {
    ($($kind:ident),* $(,)?) => {
        /// Every event a store device (or the cloud, for a store) emits: the payload of the store
        /// event topics.
        #[derive(Debug, Clone, PartialEq, Eq)]
        pub enum DeviceEvent {
            $($kind($kind),)*
        }

        impl DeviceEvent {
            pub fn kind(&self) -> EventKind {
                match self {
                    $(DeviceEvent::$kind(_) => EventKind::$kind,)*
                }
            }

            pub fn header(&self) -> Header {
                match self {
                    $(DeviceEvent::$kind(e) => e.header(),)*
                }
            }

            pub fn event_id(&self) -> &str {
                match self {
                    $(DeviceEvent::$kind(e) => &e.event_id,)*
                }
            }

            pub fn store_id(&self) -> &str {
                match self {
                    $(DeviceEvent::$kind(e) => &e.store_id,)*
                }
            }

            pub fn device_id(&self) -> &str {
                match self {
                    $(DeviceEvent::$kind(e) => &e.device_id,)*
                }
            }

            pub fn seq(&self) -> i64 {
                match self {
                    $(DeviceEvent::$kind(e) => e.seq,)*
                }
            }

            pub fn occurred_at(&self) -> i64 {
                match self {
                    $(DeviceEvent::$kind(e) => e.occurred_at,)*
                }
            }

            /// The schema version the event declares it was written with.
            pub fn schema_version(&self) -> i32 {
                match self {
                    $(DeviceEvent::$kind(e) => e.schema_version,)*
                }
            }

            /// Encodes with the schema version the event declares.
            pub fn encode(&self) -> Result<Vec<u8>, CodecError> {
                let version = u32::try_from(self.schema_version()).unwrap_or(0);
                self.encode_as(version)
            }

            /// Encodes with an explicit schema version.
            pub fn encode_as(&self, version: u32) -> Result<Vec<u8>, CodecError> {
                match self {
                    $(DeviceEvent::$kind(e) => encode(EventKind::$kind, version, e),)*
                }
            }

            /// Decodes a datum written with `writer` (whose kind must be a store event).
            pub fn decode(writer: &WriterSchema, datum: &[u8]) -> Result<DeviceEvent, CodecError> {
                match writer.kind {
                    $(EventKind::$kind => Ok(DeviceEvent::$kind(writer.decode(datum)?)),)*
                    other => Err(CodecError::UnknownRecord(other.full_name().to_string())),
                }
            }

            /// Parses the device's JSON payload for `kind` (the contract published to POS vendors).
            pub fn from_json(kind: EventKind, json: &[u8]) -> Result<DeviceEvent, serde_json::Error> {
                match kind {
                    $(EventKind::$kind => Ok(DeviceEvent::$kind(serde_json::from_slice(json)?)),)*
                    other => Err(serde::de::Error::custom(format!("{other} is not a device event"))),
                }
            }

            pub fn to_json(&self) -> serde_json::Value {
                match self {
                    $(DeviceEvent::$kind(e) => serde_json::to_value(e).unwrap_or_default(),)*
                }
            }

            /// A fingerprint of the event's content, independent of the schema version it was written
            /// with: xxh3-128 of its encoding with the latest schema. Equal fingerprints = same payload.
            pub fn fingerprint(&self) -> Result<u128, CodecError> {
                let mut normalized = self.clone();
                normalized.set_schema_version(self.kind().latest_version() as i32);
                let bytes = normalized.encode_as(self.kind().latest_version())?;
                Ok(xxhash_rust::xxh3::xxh3_128(&bytes))
            }

            fn set_schema_version(&mut self, v: i32) {
                match self {
                    $(DeviceEvent::$kind(e) => e.schema_version = v,)*
                }
            }
        }

        $(impl From<$kind> for DeviceEvent {
            fn from(e: $kind) -> Self {
                DeviceEvent::$kind(e)
            }
        })*
    };
}

device_events!(
    OrderCreated,
    OrderRefunded,
    InventoryAdjusted,
    StockReservationRequested,
    StockReservationGranted,
    StockReservationReleased,
    PriceListApproved,
    LoyaltyRedeemed,
    DeviceHealth,
    StoreDayClosed,
);

/// Encodes a pipeline record (conflict, gap, dead letter) with its kind's latest schema.
pub fn encode_record<T: Serialize>(kind: EventKind, value: &T) -> Result<Vec<u8>, CodecError> {
    encode(kind, kind.latest_version(), value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn framing_round_trips_and_rejects_garbage() {
        let framed = frame(258, vec![1, 2, 3]);
        assert_eq!(framed, vec![0, 0, 0, 1, 2, 1, 2, 3]);
        let (id, datum) = unframe(&framed).unwrap();
        assert_eq!((id, datum), (258, &[1u8, 2, 3][..]));
        assert!(unframe(&[]).is_err());
        assert!(unframe(&[0, 0, 1]).is_err());
        assert!(
            matches!(unframe(b"{\"json\":1}"), Err(CodecError::NotFramed(m)) if m.contains("0x7b"))
        );
    }
}
