//! Shared runtime for tillstream services.
//!
//! # Layout
//! - `config`: configuration from defaults, a TOML file and the environment; the ops address.
//! - `telemetry`: tracing and the Prometheus recorder.
//! - `ops`: `/metrics`, `/healthz`, `/readyz` and [`Health`].
//! - `shutdown`: SIGTERM / Ctrl-C as a [`CancellationToken`].
//! - `service`: the shape of a started service ([`service::Running`]) and the staged
//!   [`service::ShutdownGuard`] that owns its tasks.
//! - `error`: [`ErrorClass`] (retryable / fatal / poison) and [`Classify`].
//! - `fault`: fault-injection holds that tests kill a service in.
//! - `retry`: the one back-off every retry loop uses; running blocking work from async code.
//! - `framed`: a framed Kafka value up to its writer schema, with the dead-letter reasons every
//!   consumer shares for what can go wrong there.
//! - `mqtt`: an MQTT client's address and transport (plaintext, or TLS with its own certificate).
//! - `kafka`: consumer (group or static assignment), offsets, producer, dead letters, reads.
//! - `sql` (feature `sql`): the database side of services with SQL state: `[database]` config,
//!   connecting (PostgreSQL or SQLite), error classes, waiting out an outage, migrations in a
//!   service's own record table, multi-row statements, offsets per (topic, partition).
//! - `binary`: [`service_main!`], the whole `main` of a service binary.
//! - `cli`: the arguments the command-line tools share (`--brokers`, `--registry`).
//! - `clock`, `ids`: wall-clock milliseconds; deterministic UUIDv5 identities.
//!
//! Delivery guarantee: none by itself; the Kafka helpers implement the house rule that an offset is
//! stored only after the work it covers is durable, and committed on revoke and shutdown; the SQL
//! helpers carry the exactly-once pattern (gate, effects and offsets in one transaction).

pub mod binary;
pub mod cli;
pub mod clock;
pub mod config;
pub mod error;
pub mod fault;
pub mod framed;
pub mod ids;
pub mod kafka;
pub mod mqtt;
pub mod ops;
pub mod retry;
pub mod service;
pub mod shutdown;
#[cfg(feature = "sql")]
pub mod sql;
pub mod telemetry;

pub use error::{Classify, ErrorClass};
pub use ops::Health;
pub use tokio_util::sync::CancellationToken;
