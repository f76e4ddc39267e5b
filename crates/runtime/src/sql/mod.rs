//! The SQL plumbing every service that keeps exactly-once state in a database shares (feature
//! `sql`): PostgreSQL in production, an embedded SQLite file by default, both through sqlx's `Any`
//! driver with one dialect (`$N` placeholders, which both servers accept; multi-row statements use
//! `?` on SQLite, see [`values_sql`]). What a service's tables hold, its gate and its queries stay
//! in the service; this module owns how it gets there.
//!
//! # Layout
//! - `config`: [`DatabaseConfig`], the `[database]` section of every such service;
//! - `connect`: [`Backend`], [`resolve_url`], [`connect`] (SQLite pragmas, folders created) and the
//!   [`Database`] handle;
//! - `error`: [`SqlError`] and how sqlx's and the migrator's failures are classified (retryable /
//!   fatal / poison), for the service's own error type to delegate to;
//! - `outage`: [`until_available`], the one retry loop for a database that is down, and the
//!   readiness check it marks ([`DATABASE_CHECK`]);
//! - `migrate`: a service's migrations recorded in a table of its own ([`migrator`]) and run so that
//!   instances starting together all come up ([`migrate`], [`migrate_with`]);
//! - `rows`: multi-row statements in chunks under the driver's bind-parameter limit
//!   ([`RowsStatement`]);
//! - `offsets`: a table of the next offset per (topic, partition) ([`OffsetTable`]).
//!
//! Delivery guarantee: none by itself. It carries the house pattern for exactly-once effects: one
//! transaction per batch that inserts the batch's event ids into the service's gate table
//! (`ON CONFLICT DO NOTHING`, so a redelivered event is refused), applies only the admitted events,
//! and advances the offsets ([`OffsetTable::advance`]) in the same transaction; the consumer starts
//! from those offsets, not from Kafka's.

mod config;
mod connect;
mod error;
mod migrate;
mod offsets;
mod outage;
mod rows;

pub use self::config::DatabaseConfig;
pub use self::connect::{Backend, Database, connect, resolve_url};
pub use self::error::{DbError, SqlError};
pub use self::migrate::{
    AppliedMigration, migrate, migrate_with, migrator, recorded_migrations, table_exists,
};
pub use self::offsets::OffsetTable;
pub use self::outage::{
    DATABASE_CHECK, RETRY_INITIAL_DELAY, mark_available, mark_unavailable, until_available,
};
pub use self::rows::{AnyQuery, RowsStatement, values_sql};
