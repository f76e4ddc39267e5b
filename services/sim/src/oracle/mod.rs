//! The correctness oracle: reads what the pipeline produced (the deduplicated topic, conflicts, gaps,
//! dead letters and device health from Kafka; stock, sales and store days from the projection's
//! database; the price lists the bridge's downlink left retained on each store's MQTT catalog topic)
//! and compares it with the ground truth of a simulated run. Every difference is listed; nothing is
//! sampled. Read-only.
//!
//! # Layout
//! - `observe`: the I/O (topics, database, MQTT) into the `*Observed` types below; read errors are
//!   errors.
//! - `compare` (pure): truth + observations -> [`Report`], one row per fact of the truth.
//! - `observe_conflicts`: the conflict detector's records (I/O); `conflicts` (pure): its rows, one
//!   per rule and one for its records.
//! - `observe_finance`: the finance export's day files as an independent reader (pyarrow) reads
//!   them (I/O); `finance` (pure): its rows (store-day and device-day totals, balance,
//!   reconciliation, late adjustments).
//! - `report`: [`CheckResult`], [`Report`] and its table.

mod compare;
mod conflicts;
mod finance;
mod observe;
mod observe_conflicts;
mod observe_finance;
mod report;

use std::collections::{BTreeMap, BTreeSet};

use tillstream_runtime::kafka;

pub use compare::{compare, compare_with};
pub use finance::iso_date;
pub use observe::{
    DbQueries, DrainWait, MqttAccess, Progress, observe_catalog, observe_db, observe_kafka,
    progress, wait_drained,
};
pub use observe_conflicts::{
    ConflictsProgress, observe_conflict_queue, observe_conflicts, wait_conflicts_drained,
};
pub use observe_finance::{FinanceAccess, observe_finance, wait_finance_exported};
pub use report::{CheckResult, Report};

use crate::truth::Gap;

/// What the pipeline's Kafka outputs hold.
#[derive(Debug, Clone, Default)]
pub struct KafkaObserved {
    /// Event id -> copies on the deduplicated topic.
    pub deduped: BTreeMap<String, u64>,
    pub collisions: BTreeSet<String>,
    /// Gaps still open at the end (the latest record of each gap id).
    pub open_gaps: BTreeSet<Gap>,
    /// Gaps that were opened and are filled at the end: events that went missing in transit and
    /// arrived later (late, or re-sent because a receipt listed them missing).
    pub closed_gaps: BTreeSet<Gap>,
    pub dead_letters: BTreeMap<String, u64>,
    /// Distinct heartbeat event ids on the device-health topic.
    pub health_events: BTreeSet<String>,
}

/// What the projection's database holds.
#[derive(Debug, Clone, Default)]
pub struct DbObserved {
    pub stock: BTreeMap<String, BTreeMap<String, i64>>,
    /// store -> sku -> (qty, net), summed over hours.
    pub sku_sales: BTreeMap<String, BTreeMap<String, (i64, i64)>>,
    /// store -> [`hour_key`](crate::truth::hour_key) -> (qty, net).
    pub hourly_sales: BTreeMap<String, BTreeMap<String, (i64, i64)>>,
    /// store -> business date -> (orders, refunds).
    pub store_days: BTreeMap<String, BTreeMap<String, (u64, u64)>>,
    pub ledger_lines: u64,
}

/// What the stores' MQTT catalog topics hold (retained): store -> `price_list_id` of the document on
/// `store/{store}/catalog/price-list`.
#[derive(Debug, Clone, Default)]
pub struct CatalogObserved {
    pub price_lists: BTreeMap<String, String>,
    /// Documents on one store's topic that name another store (or do not parse).
    pub misplaced: Vec<String>,
}

/// One `ConflictDetected` of the conflict detector (its `detail` names rule and triage).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ObservedConflict {
    pub rule: String,
    pub triage: String,
    pub store_id: String,
    pub sku: Option<String>,
    /// Evidence; the event the verdict is about first.
    pub event_ids: Vec<String>,
}

/// One `Compensation` (a reversal names the compensation it undoes).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ObservedCompensation {
    pub conflict_id: String,
    pub reverses: Option<String>,
}

/// What the conflict detector wrote on the conflicts and compensations topics.
#[derive(Debug, Clone, Default)]
pub struct ConflictsObserved {
    /// Conflict id -> the detector's record.
    pub detected: BTreeMap<String, ObservedConflict>,
    /// Conflicts resolved as superseded (a later event changed the verdict).
    pub superseded: BTreeSet<String>,
    /// Record id (`tillstream-event-id`) -> copies, for every record the detector wrote on both
    /// topics.
    pub copies: BTreeMap<String, u64>,
    /// Compensation id -> what it compensates.
    pub compensations: BTreeMap<String, ObservedCompensation>,
    /// Event ids of the dedup's identity collisions: what the detector's queue takes in (rule 7).
    pub dedup_collisions: BTreeSet<String>,
    /// Event ids of the identity collisions in the detector's review queue (its database); `None`
    /// when the database was not read (rule 7 is then checked on the topic's records).
    pub queued_collisions: Option<BTreeSet<String>>,
}

/// One export as the reader saw it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ObservedExport {
    /// `day` or `supplement`.
    pub kind: String,
    pub rows: u64,
    /// Currency -> (debit, credit) summed over the Parquet file's rows.
    pub totals: BTreeMap<String, (i64, i64)>,
}

/// One reconciliation row (the latest export's per device-day).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ObservedRecon {
    pub status: String,
    /// `figure device=X ledger=Y`, `; `-separated.
    pub differences: String,
}

/// What the finance export delivered, read back from its files by an independent reader (pyarrow
/// for the Parquet ledgers, the standard library for the CSV reports and manifests).
#[derive(Debug, Clone, Default)]
pub struct FinanceObserved {
    /// `{store}/{export name}` -> the export.
    pub exports: BTreeMap<String, ObservedExport>,
    /// `store|ISO date|device|source|account role|tender` -> (debit, credit), every line type.
    pub lines: BTreeMap<String, (i64, i64)>,
    /// `store|ISO date|device|source` -> distinct events.
    pub events: BTreeMap<String, u64>,
    /// `store|ISO date|device` -> its reconciliation row.
    pub recon: BTreeMap<String, ObservedRecon>,
    /// Event id -> the line types (`regular`, `adjustment`) of its lines.
    pub event_types: BTreeMap<String, BTreeSet<String>>,
    /// `event id#line no` in the files more than once.
    pub duplicate_lines: Vec<String>,
}

/// What a correct at-least-once pipeline may still show, and why. Each allowance is derived from
/// the fault a test injected (see [`Allowances::dedup_batches_replayed`]), never a round number.
#[derive(Debug, Clone, Default)]
pub struct Allowances {
    /// Copies on the deduplicated topic beyond the first. A dedup instance killed between
    /// delivering a batch's outputs and recording it in its changelog re-emits that batch once
    /// restarted (its at-least-once window: the one batch in flight per crash); a broker that fails
    /// an in-flight output set (after storing part of it) gets that set again. Every downstream
    /// sink is idempotent on the event id, so these copies have no effect; the projection checks
    /// must still be exact.
    pub dedup_topic_duplicates: u64,
    /// Heartbeats a crashed broker (or an abandoned broker session) may have lost: the ones it
    /// acknowledged inside the loss window. Devices do not keep heartbeats, and no receipt covers
    /// them; store events are never allowed to be lost.
    pub heartbeats_lost: u64,
    /// Event ids whose collision variant (a device bug's second content under one id) was
    /// acknowledged inside the loss window: the collision may never reach the cloud.
    pub collisions_lost: BTreeSet<String>,
}

impl Allowances {
    /// `batches` dedup batches of at most `max_batch` records each emitted twice (one per crash of
    /// the dedup, one per broker outage that failed an output set in flight).
    pub fn dedup_batches_replayed(batches: u64, max_batch: u64) -> Self {
        Allowances {
            dedup_topic_duplicates: batches * max_batch,
            ..Default::default()
        }
    }
}

/// Everything the oracle observed; `None` = that output was not checked (reported `n/a`).
#[derive(Debug, Clone, Copy, Default)]
pub struct Observed<'a> {
    pub kafka: Option<&'a KafkaObserved>,
    pub db: Option<&'a DbObserved>,
    pub catalog: Option<&'a CatalogObserved>,
    /// `None` when the run had no conflict detector (its rows are `n/a`).
    pub conflicts: Option<&'a ConflictsObserved>,
    /// `None` when the run had no finance export (its rows are `n/a`).
    pub finance: Option<&'a FinanceObserved>,
}

/// Topics the oracle reads.
#[derive(Debug, Clone)]
pub struct Topics {
    /// Store events as the bridge wrote them (duplicates included).
    pub raw: String,
    pub deduped: String,
    pub conflicts: String,
    /// The conflict detector's compensating actions.
    pub compensations: String,
    pub gaps: String,
    pub dead_letter: String,
    /// Device heartbeats as the bridge wrote them (not deduplicated).
    pub health: String,
    /// Cloud -> store documents (the simulated pricing service writes; the bridge's downlink reads).
    pub downlink: String,
}

impl Default for Topics {
    fn default() -> Self {
        Topics {
            raw: "tillstream.store-events.raw".into(),
            deduped: "tillstream.store-events".into(),
            conflicts: "tillstream.conflicts".into(),
            compensations: "tillstream.compensations".into(),
            gaps: "tillstream.sequence-gaps".into(),
            dead_letter: "tillstream.dead-letter".into(),
            health: "tillstream.device-health.raw".into(),
            downlink: "tillstream.catalog.downlink".into(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum OracleError {
    #[error(transparent)]
    Read(#[from] kafka::ReadError),
    #[error("decoding {topic}: {detail}")]
    Decode { topic: String, detail: String },
    #[error("database: {0}")]
    Db(#[from] sqlx::Error),
    #[error("mqtt: {0}")]
    Mqtt(String),
    #[error("finance exports: {0}")]
    Finance(String),
}
