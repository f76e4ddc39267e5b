//! Metric names of the finance export and the functions that emit them: the only place the
//! `metrics` macros appear in this crate. Labels are low-cardinality (`reason`, `status`, `kind`,
//! `store`). Owns no data; no delivery guarantee.

/// Gauge: records of the input topics not yet committed by the group (labels topic, partition).
pub const CONSUMER_LAG: &str = "tillstream_finance_export_consumer_lag_records";
/// Records read from the input topics.
pub const EVENTS_IN: &str = "tillstream_finance_export_events_in_total";
/// Events booked (admitted by the gate), by `kind` (sale, refund, loyalty, day_close,
/// compensation, other).
pub const EVENTS_BOOKED: &str = "tillstream_finance_export_events_booked_total";
/// Events the gate refused because the ledger already holds them (redeliveries).
pub const EVENTS_DUPLICATE: &str = "tillstream_finance_export_events_duplicate_total";
/// Ledger lines written.
pub const LINES: &str = "tillstream_finance_export_ledger_lines_total";
/// Lines booked for a store-day already exported (delivered later as adjustment lines).
pub const LATE_LINES: &str = "tillstream_finance_export_late_lines_total";
/// Dead letters, by `reason`.
pub const DEAD_LETTERS: &str = "tillstream_finance_export_dead_letters_total";
/// Batch transactions, by `outcome` (committed, retried).
pub const BATCHES: &str = "tillstream_finance_export_batches_total";
/// Duration of a batch transaction.
pub const BATCH_SECONDS: &str = "tillstream_finance_export_batch_seconds";
/// Exports delivered, by `kind` (day, supplement) and `reason`.
pub const EXPORTS: &str = "tillstream_finance_export_exports_total";
/// Duration of an export (render + write).
pub const EXPORT_SECONDS: &str = "tillstream_finance_export_export_seconds";
/// Device-day reconciliation records reported, by `status` (matched, mismatched, missing_close,
/// conflicting_close).
pub const RECONCILIATIONS: &str = "tillstream_finance_export_reconciliations_total";
/// Device-days whose latest reported reconciliation is not `matched`, by `store`.
pub const MISMATCHED_DEVICE_DAYS: &str = "tillstream_finance_export_mismatched_device_days";
/// Store-days waiting to be closed (not yet exported).
pub const OPEN_STORE_DAYS: &str = "tillstream_finance_export_open_store_days";
/// Database retries, by `operation`.
pub const DB_RETRIES: &str = "tillstream_finance_export_db_retries_total";

pub fn events_in(n: usize) {
    metrics::counter!(EVENTS_IN).increment(n as u64);
}

pub fn booked(kind: &'static str, n: u64) {
    metrics::counter!(EVENTS_BOOKED, "kind" => kind).increment(n);
}

pub fn duplicates(n: usize) {
    metrics::counter!(EVENTS_DUPLICATE).increment(n as u64);
}

pub fn lines(n: usize, late: usize) {
    metrics::counter!(LINES).increment(n as u64);
    metrics::counter!(LATE_LINES).increment(late as u64);
}

pub fn batch(outcome: &'static str, seconds: f64) {
    metrics::counter!(BATCHES, "outcome" => outcome).increment(1);
    metrics::histogram!(BATCH_SECONDS).record(seconds);
}

pub fn export(kind: &'static str, reason: &'static str, seconds: f64) {
    metrics::counter!(EXPORTS, "kind" => kind, "reason" => reason).increment(1);
    metrics::histogram!(EXPORT_SECONDS).record(seconds);
}

pub fn reconciliation(status: &'static str) {
    metrics::counter!(RECONCILIATIONS, "status" => status).increment(1);
}

pub fn mismatched_device_days(store: &str, n: u64) {
    metrics::gauge!(MISMATCHED_DEVICE_DAYS, "store" => store.to_string()).set(n as f64);
}

pub fn open_store_days(n: u64) {
    metrics::gauge!(OPEN_STORE_DAYS).set(n as f64);
}

pub fn db_retry(operation: &'static str) {
    metrics::counter!(DB_RETRIES, "operation" => operation).increment(1);
}
