//! Rule 7: identity collisions found by the dedup (same event id, different content) enter the
//! review queue as they are: the dedup's record is the verdict, nothing is re-judged or re-written.
//! Pure; no I/O.

use tillstream_contracts::{ConflictDetected, ConflictKind};

use super::{Owner, Rule, Triage, Verdict};

/// Whether a record read from the conflicts topic is the dedup's identity collision (the queue
/// takes those; the detector's own records and resolutions are skipped).
pub fn is_dedup_collision(c: &ConflictDetected) -> bool {
    c.kind == ConflictKind::IdentityCollision && c.detector != super::DETECTOR
}

/// The queue entry for a dedup collision.
pub fn queue_entry(c: &ConflictDetected) -> Verdict {
    let d = |k: &str| c.detail.get(k).map(String::as_str).unwrap_or("?");
    let explanation = format!(
        "Identity collision (rule 7, found by {}): event id {} arrived twice with different content (event type {}, device {}, seq {}; fingerprints {} then {}). The dedup kept the first copy and dropped the later one; the queue takes it as it is: store ops find out which copy is genuine (a device bug or a tampered retry).",
        c.detector,
        c.event_ids.first().map(String::as_str).unwrap_or("?"),
        d("event_type"),
        d("device_id"),
        d("seq"),
        d("first_fingerprint"),
        d("new_fingerprint"),
    );
    Verdict {
        conflict_id: c.conflict_id.clone(),
        base_id: c.conflict_id.clone(),
        generation: 0,
        rule: Rule::IdentityCollision,
        triage: Triage::NeedsReview,
        owner: Owner::StoreOps,
        store_id: c.store_id.clone(),
        sku: c.sku.clone(),
        evidence: c.event_ids.clone(),
        anchor_at: c.detected_at,
        detected_at: c.detected_at,
        detail: c.detail.clone(),
        explanation,
        outcome: "second copy dropped by the dedup".into(),
        compensations: Vec::new(),
    }
}
