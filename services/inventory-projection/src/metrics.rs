//! Every metric this service emits, by name, plus the helpers that record them. Owns no data;
//! guarantee: metric names and labels are defined here only, so dashboards have one place to look.

use std::time::Duration;

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
/// Gauge: records in the topic not yet applied, labelled `partition`.
pub const LAG_MESSAGES: &str = "tillstream_inventory_projection_lag_messages";
/// Counter: stock rows a batch left below zero (recorded and flagged; the conflict detector decides).
pub const NEGATIVE_STOCK_TOTAL: &str = "tillstream_inventory_projection_negative_stock_total";
/// Counter: inputs sent to the dead-letter topic, labelled `reason`.
pub const DEAD_LETTERS_TOTAL: &str = "tillstream_inventory_projection_dead_letters_total";
/// Gauge: events replayed by the running rebuild.
pub const REBUILD_EVENTS: &str = "tillstream_inventory_projection_rebuild_events";

pub fn applied(kind: &'static str, n: u64) {
    metrics::counter!(EVENTS_APPLIED_TOTAL, "kind" => kind).increment(n);
}

pub fn skipped(reason: &'static str, n: u64) {
    if n > 0 {
        metrics::counter!(EVENTS_SKIPPED_TOTAL, "reason" => reason).increment(n);
    }
}

pub fn batch(size: usize, backend: &'static str, elapsed: Duration) {
    metrics::histogram!(BATCH_SIZE_EVENTS).record(size as f64);
    metrics::histogram!(DB_SECONDS, "backend" => backend).record(elapsed.as_secs_f64());
}

pub fn db_error(class: &'static str) {
    metrics::counter!(DB_ERRORS_TOTAL, "class" => class).increment(1);
}

pub fn lag(partition: i32, messages: i64) {
    metrics::gauge!(LAG_MESSAGES, "partition" => partition.to_string()).set(messages as f64);
}

pub fn negative_stock(rows: usize) {
    if rows > 0 {
        metrics::counter!(NEGATIVE_STOCK_TOTAL).increment(rows as u64);
    }
}

pub fn rebuild_progress(events: u64) {
    metrics::gauge!(REBUILD_EVENTS).set(events as f64);
}
