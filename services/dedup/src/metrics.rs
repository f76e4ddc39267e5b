//! Metric names of the dedup service (Prometheus, via the `metrics` facade and the runtime's
//! recorder). Owns no data; no delivery guarantee.
//!
//! Labels are low-cardinality: `reason`, `status`, `partition` (input partition, at most the topic's
//! partition count) and `store` (allowed by the house rules).

/// Gauge: records of the input topic not yet committed by the group (labels topic, partition).
pub const CONSUMER_LAG: &str = "tillstream_dedup_consumer_lag_records";
/// Raw records read (every record of an owned partition, decodable or not).
pub const EVENTS_IN: &str = "tillstream_dedup_events_in_total";
/// Events written to the deduplicated topic (first copies).
pub const EVENTS_OUT: &str = "tillstream_dedup_events_out_total";
/// Second and later copies with the same event_id and the same content, dropped.
pub const DUPLICATES_DROPPED: &str = "tillstream_dedup_duplicates_dropped_total";
/// Same event_id, new content: conflict records written (one per distinct colliding content).
pub const IDENTITY_COLLISIONS: &str = "tillstream_dedup_identity_collisions_total";
/// Copies of an already reported collision (not reported again, not emitted).
pub const COLLISIONS_REPEATED: &str = "tillstream_dedup_identity_collisions_repeated_total";
/// Events emitted whose `occurred_at` is older than the retention horizon (flagged with a header).
pub const BEYOND_HORIZON: &str = "tillstream_dedup_beyond_horizon_total";
/// Sequence-gap records written, by `status` (OPENED, PARTIALLY_FILLED, FILLED, DEVICE_RESET).
pub const GAP_RECORDS: &str = "tillstream_dedup_gap_records_total";
/// Open gaps (missing seq ranges) by store.
pub const OPEN_GAPS: &str = "tillstream_dedup_open_gaps";
/// Missing seqs in open gaps by store.
pub const MISSING_SEQS: &str = "tillstream_dedup_missing_seqs";
/// Age (record time of the newest event vs. when the gap opened) of the oldest open gap, by store.
pub const OLDEST_GAP_AGE: &str = "tillstream_dedup_oldest_gap_age_seconds";
/// Device resets detected (a seq seen again under a new event id).
pub const DEVICE_RESETS: &str = "tillstream_dedup_device_resets_total";
/// Devices first seen at a seq above 1 (no history: that seq becomes the baseline, no gap).
pub const SEQUENCE_BASELINES: &str = "tillstream_dedup_sequence_baselines_total";
/// Events emitted but left out of sequence accounting, by `reason`
/// (`straggler`, `unsequenced`, `beyond_horizon`).
pub const SEQUENCE_UNACCOUNTED: &str = "tillstream_dedup_sequence_unaccounted_total";
/// Gap ranges dropped from tracking because a device had too many open.
pub const GAPS_ABANDONED: &str = "tillstream_dedup_gaps_abandoned_total";
/// Event ids held in memory, by `partition`.
pub const STATE_EVENT_IDS: &str = "tillstream_dedup_state_event_ids";
/// Device sequence states held in memory, by `partition`.
pub const STATE_DEVICES: &str = "tillstream_dedup_state_devices";
/// Event ids / devices freed after the horizon.
pub const STATE_EXPIRED: &str = "tillstream_dedup_state_expired_total";
/// Wall time of one batch from receipt to offsets stored (decode, decide, deliver, changelog).
pub const BATCH_SECONDS: &str = "tillstream_dedup_batch_seconds";
/// Records per batch.
pub const BATCH_EVENTS: &str = "tillstream_dedup_batch_events";
/// Now minus the Kafka timestamp of each emitted event, at the moment it is delivered.
pub const EVENT_LAG_SECONDS: &str = "tillstream_dedup_event_lag_seconds";
/// Wall time of restoring one partition's state from the changelog.
pub const RESTORE_SECONDS: &str = "tillstream_dedup_restore_seconds";
/// Changelog records read while restoring.
pub const RESTORE_RECORDS: &str = "tillstream_dedup_restore_records_total";
/// Changelog chunk groups dropped on restore because their writer never finished them.
pub const RESTORE_INCOMPLETE: &str = "tillstream_dedup_restore_incomplete_total";
/// Changelog records written.
pub const CHANGELOG_RECORDS: &str = "tillstream_dedup_changelog_records_total";
/// Changelog bytes written.
pub const CHANGELOG_BYTES: &str = "tillstream_dedup_changelog_bytes_total";
/// Inputs dead-lettered, by `reason` (`DeadLetters` increments it).
pub const DEAD_LETTERS: &str = "tillstream_dedup_dead_letters_total";
/// Deliveries retried after a failure reported by the producer.
pub const DELIVERY_RETRIES: &str = "tillstream_dedup_delivery_retries_total";

// Emit functions: the only places metrics are recorded (the rest of the crate calls these).

use std::time::Duration;

use crate::core::BatchStats;

/// One batch processed: its counts, size and wall time.
pub fn batch_done(s: &BatchStats, in_count: u64, took: Duration) {
    metrics::counter!(EVENTS_IN).increment(in_count);
    metrics::counter!(EVENTS_OUT).increment(s.emitted);
    metrics::counter!(DUPLICATES_DROPPED).increment(s.duplicates);
    metrics::counter!(IDENTITY_COLLISIONS).increment(s.collisions);
    metrics::counter!(COLLISIONS_REPEATED).increment(s.collisions_repeated);
    metrics::counter!(BEYOND_HORIZON).increment(s.beyond_horizon);
    metrics::counter!(DEVICE_RESETS).increment(s.resets);
    metrics::counter!(SEQUENCE_BASELINES).increment(s.baselines);
    metrics::counter!(SEQUENCE_UNACCOUNTED, "reason" => "straggler").increment(s.stragglers);
    metrics::counter!(SEQUENCE_UNACCOUNTED, "reason" => "unsequenced").increment(s.unsequenced);
    metrics::counter!(SEQUENCE_UNACCOUNTED, "reason" => "beyond_horizon")
        .increment(s.beyond_horizon_unaccounted);
    metrics::counter!(GAPS_ABANDONED).increment(s.gaps_abandoned);
    metrics::counter!(STATE_EXPIRED, "kind" => "event_id").increment(s.ids_expired);
    metrics::counter!(STATE_EXPIRED, "kind" => "device").increment(s.devices_expired);
    metrics::histogram!(BATCH_SECONDS).record(took.as_secs_f64());
    metrics::histogram!(BATCH_EVENTS).record(in_count as f64);
}

/// An emitted event was delivered `lag_s` seconds after its Kafka timestamp.
pub fn event_delivered(lag_s: f64) {
    metrics::histogram!(EVENT_LAG_SECONDS).record(lag_s);
}

pub fn changelog_written(records: usize, bytes: usize) {
    metrics::counter!(CHANGELOG_RECORDS).increment(records as u64);
    metrics::counter!(CHANGELOG_BYTES).increment(bytes as u64);
}

pub fn gap_record_written(status: &'static str) {
    metrics::counter!(GAP_RECORDS, "status" => status).increment(1);
}

pub fn delivery_retried() {
    metrics::counter!(DELIVERY_RETRIES).increment(1);
}

/// A restore of some partitions took `took`.
pub fn restore_done(took: Duration) {
    metrics::histogram!(RESTORE_SECONDS).record(took.as_secs_f64());
}

/// One partition's restore read `records` changelog records, `incomplete` of them unusable.
pub fn partition_restored(records: u64, incomplete: u64) {
    metrics::counter!(RESTORE_RECORDS).increment(records);
    metrics::counter!(RESTORE_INCOMPLETE).increment(incomplete);
}

/// State held for one owned input partition.
pub fn state_size(partition: i32, event_ids: usize, devices: usize) {
    let label = partition.to_string();
    metrics::gauge!(STATE_EVENT_IDS, "partition" => label.clone()).set(event_ids as f64);
    metrics::gauge!(STATE_DEVICES, "partition" => label).set(devices as f64);
}

/// A store's open gaps (all zero once it has none).
pub fn store_gaps(store: &str, open: u64, missing: i64, oldest_age_s: f64) {
    metrics::gauge!(OPEN_GAPS, "store" => store.to_string()).set(open as f64);
    metrics::gauge!(MISSING_SEQS, "store" => store.to_string()).set(missing as f64);
    metrics::gauge!(OLDEST_GAP_AGE, "store" => store.to_string()).set(oldest_age_s);
}

/// Sync receipts published to devices.
pub const RECEIPTS: &str = "tillstream_dedup_receipts_total";
/// Receipts held back by the per-device rate limit.
pub const RECEIPTS_HELD: &str = "tillstream_dedup_receipts_held";

pub fn receipts_published(n: usize) {
    metrics::counter!(RECEIPTS).increment(n as u64);
}

pub fn receipts_held(n: usize) {
    metrics::gauge!(RECEIPTS_HELD).set(n as f64);
}
