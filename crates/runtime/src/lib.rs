//! Shared runtime for tillstream services: configuration (file + environment), telemetry
//! (tracing + Prometheus), the ops HTTP endpoints (`/metrics`, `/healthz`, `/readyz`), shutdown on
//! SIGTERM, error classification and the Kafka plumbing every consumer and producer uses.
//!
//! Delivery guarantee: none by itself; the Kafka helpers here implement the house rule that an offset
//! is stored only after the work it covers is durable, and committed on revoke and shutdown.

pub mod config;
pub mod error;
pub mod kafka;
pub mod ops;
pub mod shutdown;
pub mod telemetry;

pub use error::{Classify, ErrorClass};
pub use ops::Health;
pub use tokio_util::sync::CancellationToken;
