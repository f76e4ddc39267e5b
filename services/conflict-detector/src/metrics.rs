//! Metric names of the conflict detector and the only functions that record them. Owns no data; no
//! delivery guarantee.
//!
//! Labels are low-cardinality: `rule` (7), `severity` (the triage: info, auto-resolved,
//! needs-review), `owner` (3), `kind`, `reason`, and `store` (allowed by the house rules).

/// Gauge: records of the input topics not yet committed by the group (labels topic, partition).
pub const CONSUMER_LAG: &str = "tillstream_conflict_detector_consumer_lag_records";
/// Records read from the input topics, by `topic`.
pub const RECORDS_IN: &str = "tillstream_conflict_detector_records_in_total";
/// Store events the rules took in (first copies).
pub const EVENTS_APPLIED: &str = "tillstream_conflict_detector_events_applied_total";
/// Copies of an event id already taken in (not applied again).
pub const DUPLICATES: &str = "tillstream_conflict_detector_duplicates_skipped_total";
/// Events that landed before the end of a timeline (re-evaluated from their position).
pub const LATE_EVENTS: &str = "tillstream_conflict_detector_late_events_total";
/// Events that occurred before the retained history (folded, not judged), by `store`.
pub const BEYOND_HORIZON: &str = "tillstream_conflict_detector_events_beyond_horizon_total";
/// Conflicts raised, by `rule`, `severity` and `store`.
pub const CONFLICTS: &str = "tillstream_conflict_detector_conflicts_total";
/// Verdicts superseded by a later input, by `rule`.
pub const SUPERSEDED: &str = "tillstream_conflict_detector_superseded_total";
/// Compensations written (reversals included), by `kind`.
pub const COMPENSATIONS: &str = "tillstream_conflict_detector_compensations_total";
/// Identity collisions taken from the dedup into the queue.
pub const COLLISIONS: &str = "tillstream_conflict_detector_collisions_queued_total";
/// Price lists taken from the history topic.
pub const PRICE_LISTS: &str = "tillstream_conflict_detector_price_lists_total";
/// Open conflicts in the review queue, by `owner`.
pub const QUEUE_OPEN: &str = "tillstream_conflict_detector_queue_open_conflicts";
/// Age of the oldest open conflict (now minus when it entered the queue).
pub const QUEUE_OLDEST_AGE: &str = "tillstream_conflict_detector_queue_oldest_open_age_seconds";
/// Reviewer resolutions, by `action` and `outcome` (resolved, noop, refused).
pub const RESOLUTIONS: &str = "tillstream_conflict_detector_resolutions_total";
/// Raised verdicts waiting for their store's stream to move on (`detector.hold_ms`).
pub const HELD: &str = "tillstream_conflict_detector_verdicts_held";
/// Held verdicts a later input superseded before they were written (never published).
pub const WITHDRAWN: &str = "tillstream_conflict_detector_verdicts_withdrawn_total";
/// Records waiting in the outbox.
pub const OUTBOX_PENDING: &str = "tillstream_conflict_detector_outbox_pending_records";
/// Records published from the outbox, and those skipped at start because the topic had them.
pub const PUBLISHED: &str = "tillstream_conflict_detector_records_published_total";
pub const ALREADY_PUBLISHED: &str = "tillstream_conflict_detector_records_already_published_total";
/// Inputs dead-lettered, by `reason` (`DeadLetters` increments it).
pub const DEAD_LETTERS: &str = "tillstream_conflict_detector_dead_letters_total";
/// Wall time of one batch (decode, decide, commit).
pub const BATCH_SECONDS: &str = "tillstream_conflict_detector_batch_seconds";
/// Records per batch.
pub const BATCH_EVENTS: &str = "tillstream_conflict_detector_batch_events";
/// Wall time of restoring one partition, and the events replayed.
pub const RESTORE_SECONDS: &str = "tillstream_conflict_detector_restore_seconds";
pub const RESTORE_EVENTS: &str = "tillstream_conflict_detector_restore_events_total";
/// Verdict changes a restore found (state that changed while no instance evaluated it).
pub const RECONCILED: &str = "tillstream_conflict_detector_reconciled_changes_total";
/// Batch transactions that failed and were retried after a restore.
pub const BATCH_RETRIES: &str = "tillstream_conflict_detector_batch_retries_total";

use std::collections::BTreeMap;
use std::time::Duration;

use crate::core::Verdict;

pub fn records_in(topic: &str, n: usize) {
    metrics::counter!(RECORDS_IN, "topic" => topic.to_string()).increment(n as u64);
}

/// One batch committed.
pub fn batch_done(records: usize, applied: u64, duplicates: u64, late: u64, took: Duration) {
    metrics::counter!(EVENTS_APPLIED).increment(applied);
    metrics::counter!(DUPLICATES).increment(duplicates);
    metrics::counter!(LATE_EVENTS).increment(late);
    metrics::histogram!(BATCH_SECONDS).record(took.as_secs_f64());
    metrics::histogram!(BATCH_EVENTS).record(records as f64);
}

pub fn beyond_horizon(store: &str) {
    metrics::counter!(BEYOND_HORIZON, "store" => store.to_string()).increment(1);
}

pub fn raised(v: &Verdict) {
    metrics::counter!(
        CONFLICTS,
        "rule" => v.rule.name(),
        "severity" => v.triage.name(),
        "store" => v.store_id.clone()
    )
    .increment(1);
}

pub fn superseded(v: &Verdict) {
    metrics::counter!(SUPERSEDED, "rule" => v.rule.name()).increment(1);
}

pub fn compensation(kind: tillstream_contracts::CompensationKind) {
    metrics::counter!(COMPENSATIONS, "kind" => format!("{kind:?}")).increment(1);
}

pub fn collision_queued(store: &str) {
    metrics::counter!(COLLISIONS).increment(1);
    metrics::counter!(
        CONFLICTS,
        "rule" => crate::core::Rule::IdentityCollision.name(),
        "severity" => crate::core::Triage::NeedsReview.name(),
        "store" => store.to_string()
    )
    .increment(1);
}

pub fn price_lists(n: usize) {
    metrics::counter!(PRICE_LISTS).increment(n as u64);
}

/// The queue now: open conflicts per owner and the oldest one's age.
pub fn queue(by_owner: &BTreeMap<String, i64>, oldest_age_s: f64) {
    for owner in ["store-ops", "finance", "merchandising"] {
        let n = by_owner.get(owner).copied().unwrap_or(0);
        metrics::gauge!(QUEUE_OPEN, "owner" => owner).set(n as f64);
    }
    metrics::gauge!(QUEUE_OLDEST_AGE).set(oldest_age_s);
}

pub fn resolution(action: &str, outcome: &'static str) {
    metrics::counter!(RESOLUTIONS, "action" => action.to_string(), "outcome" => outcome)
        .increment(1);
}

pub fn held(n: usize) {
    metrics::gauge!(HELD).set(n as f64);
}

pub fn withdrawn(n: usize) {
    if n > 0 {
        metrics::counter!(WITHDRAWN).increment(n as u64);
    }
}

pub fn outbox(pending: i64) {
    metrics::gauge!(OUTBOX_PENDING).set(pending as f64);
}

pub fn published(n: usize, already: usize) {
    metrics::counter!(PUBLISHED).increment(n as u64);
    metrics::counter!(ALREADY_PUBLISHED).increment(already as u64);
}

pub fn restored(took: Duration, events: usize, changes: usize) {
    metrics::histogram!(RESTORE_SECONDS).record(took.as_secs_f64());
    metrics::counter!(RESTORE_EVENTS).increment(events as u64);
    metrics::counter!(RECONCILED).increment(changes as u64);
}

pub fn batch_retry() {
    metrics::counter!(BATCH_RETRIES).increment(1);
}
