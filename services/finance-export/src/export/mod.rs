//! The day files: rendering an export (its lines and reconciliation records, read back from the
//! ledger) into `ledger.csv`, `ledger.parquet`, `reconciliation.csv`, `summary.txt` and
//! `manifest.json`, and delivering them to a local folder or an S3-compatible bucket.
//!
//! # Layout
//! - `render` (pure): lines + records -> file bytes; the same ledger always renders the same bytes
//!   (fixed row order, no wall-clock time, a fixed Parquet `created_by`);
//! - `parquet`: the Arrow/Parquet encoding of the ledger rows;
//! - `sink`: where the files go ([`Sink`]): a local folder (temp folder, fsync, rename: an export
//!   appears whole or not at all) or an object store (one PUT per file, the manifest last).
//!
//! Delivery guarantee: delivered files never change. Delivering an export again (after a crash
//! between writing and recording it) finds the same bytes in place and succeeds; different bytes
//! in place are an error, never an overwrite.

mod parquet;
mod render;
mod sink;

use tillstream_runtime::{Classify, ErrorClass};

pub use self::render::{LEDGER_COLUMNS, Rendered, SCHEMA_VERSION, render};
pub use self::sink::{Delivery, Sink};

#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error("writing {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("object store: {0}")]
    ObjectStore(#[from] object_store::Error),
    #[error("parquet: {0}")]
    Parquet(String),
    /// Files already delivered under this name differ from what the ledger renders now.
    #[error("export {0} is already delivered with different content: refusing to overwrite")]
    Conflict(String),
    #[error("{0}")]
    Invalid(String),
}

impl Classify for ExportError {
    fn class(&self) -> ErrorClass {
        match self {
            // A full disk, a bucket that does not answer: the export is tried again.
            ExportError::Io { .. } | ExportError::ObjectStore(_) => ErrorClass::Retryable,
            _ => ErrorClass::Fatal,
        }
    }
}
