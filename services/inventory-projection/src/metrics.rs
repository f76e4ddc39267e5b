//! Every metric this service emits, by name, and the emit functions that record them (the only
//! place in the crate that calls the `metrics` macros). Owns no data; no delivery guarantee: metric
//! names and labels are defined here only, so dashboards have one place to look.

use crate::db::Applied;

/// Counter: events applied to the database (admitted by the idempotency gate), labelled `kind`.
pub const EVENTS_APPLIED_TOTAL: &str = "tillstream_inventory_projection_events_applied_total";
/// Counter: events read but not applied, labelled `reason` (`duplicate` = refused by the gate,
/// `below_db_offset` = redelivered below the offset the database holds, `dead_lettered`).
pub const EVENTS_SKIPPED_TOTAL: &str = "tillstream_inventory_projection_events_skipped_total";
/// Histogram: records per batch transaction.
pub const BATCH_SIZE_EVENTS: &str = "tillstream_inventory_projection_batch_size_events";
/// Histogram: seconds per batch transaction (BEGIN .. COMMIT), labelled `backend`.
pub const DB_SECONDS: &str = "tillstream_inventory_projection_db_seconds";
/// Counter: batch transactions that failed, labelled `class` (retryable / poison / fatal).
pub const DB_ERRORS_TOTAL: &str = "tillstream_inventory_projection_db_errors_total";
/// Counter: waits for a database that was unavailable (a retryable error, then a back-off),
/// labelled `operation` (`open` = connect and create the views, `start_offsets` = read where
/// assigned partitions start, `batch` = the batch transaction).
pub const DB_RETRIES_TOTAL: &str = "tillstream_inventory_projection_db_retries_total";
/// Gauge: records in the topic not yet applied, labelled `partition`.
pub const LAG_MESSAGES: &str = "tillstream_inventory_projection_lag_messages";
/// Counter: stock rows a batch left below zero (recorded and flagged; the conflict detector decides).
pub const NEGATIVE_STOCK_TOTAL: &str = "tillstream_inventory_projection_negative_stock_total";
/// Counter: inputs sent to the dead-letter topic, labelled `reason`.
pub const DEAD_LETTERS_TOTAL: &str = "tillstream_inventory_projection_dead_letters_total";
/// Gauge: events replayed by the running rebuild.
pub const REBUILD_EVENTS: &str = "tillstream_inventory_projection_rebuild_events";

/// One live batch transaction of `records` records committed: its size and time, the events it
/// applied by type, the duplicates the gate refused, the stock rows it left below zero.
pub fn batch_applied(records: usize, backend: &'static str, applied: &Applied) {
    metrics::histogram!(BATCH_SIZE_EVENTS).record(records as f64);
    metrics::histogram!(DB_SECONDS, "backend" => backend).record(applied.db_time.as_secs_f64());
    for (kind, n) in &applied.by_kind {
        metrics::counter!(EVENTS_APPLIED_TOTAL, "kind" => *kind).increment(*n);
    }
    skipped("duplicate", applied.duplicates as u64);
    if applied.negative_rows > 0 {
        metrics::counter!(NEGATIVE_STOCK_TOTAL).increment(applied.negative_rows as u64);
    }
}

/// `n` events read and not applied, for `reason`.
pub fn skipped(reason: &'static str, n: u64) {
    if n > 0 {
        metrics::counter!(EVENTS_SKIPPED_TOTAL, "reason" => reason).increment(n);
    }
}

/// A batch transaction failed with an error of `class`.
pub fn db_error(class: &'static str) {
    metrics::counter!(DB_ERRORS_TOTAL, "class" => class).increment(1);
}

/// The database is unavailable during `operation`: the projection backs off and tries again.
pub fn db_retry(operation: &'static str) {
    metrics::counter!(DB_RETRIES_TOTAL, "operation" => operation).increment(1);
}

/// `messages` records of `partition` not yet applied.
pub fn lag(partition: i32, messages: i64) {
    metrics::gauge!(LAG_MESSAGES, "partition" => partition.to_string()).set(messages as f64);
}

/// The running rebuild has replayed `events` events.
pub fn rebuild_progress(events: u64) {
    metrics::gauge!(REBUILD_EVENTS).set(events as f64);
}
