//! Metric names of the dedup service (Prometheus, via the `metrics` facade and the runtime's
//! recorder). Owns no data; no delivery guarantee.
//!
//! Labels are low-cardinality: `reason`, `status`, `partition` (input partition, at most the topic's
//! partition count) and `store` (allowed by the house rules).

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
