//! tillstream event contracts: the Avro schemas (embedded from `schemas/avro/`), the Rust types that
//! serialize to exactly those schemas, the Confluent wire format, and the schema registry client.
//!
//! `review` is the conflict detector's review API (what a list of its queue selects).
//!
//! Everything here is pure except `registry`, which talks HTTP to a Confluent-compatible registry.

pub mod catalog;
pub mod codec;
pub mod compat;
pub mod events;
pub mod registry;
pub mod review;
pub mod samples;
pub mod secret;

pub use catalog::EventKind;
pub use codec::{CodecError, DeviceEvent, WriterSchema};
pub use events::*;
pub use registry::{Registry, RegistryConfig, RegistryError};
pub use secret::Secret;
