//! The Avro records a verdict becomes: its `ConflictDetected`, its compensations, the
//! `ConflictResolved` of an auto resolution, of a supersede (with the reversals of its
//! compensations) and of a reviewer's decision. Pure functions of their arguments, so a replay
//! writes the same bytes.

use tillstream_contracts::{Compensation, ConflictDetected, ConflictResolved};
use tillstream_runtime::ids::uuid_v5;

use super::money::{self, Overflow};
use super::{DETECTOR, Triage, Verdict};

/// The conflict record: kind from the rule, v1 severity from the triage, and the triage, owner,
/// rule and explanation in `detail` next to the rule's figures.
pub fn detected(v: &Verdict) -> ConflictDetected {
    let mut detail = v.detail.clone();
    detail.insert("rule".into(), v.rule.name().into());
    detail.insert("triage".into(), v.triage.name().into());
    detail.insert("owner".into(), v.owner.name().into());
    detail.insert("explanation".into(), v.explanation.clone());
    if v.generation > 0 {
        detail.insert("generation".into(), v.generation.to_string());
    }
    ConflictDetected {
        conflict_id: v.conflict_id.clone(),
        kind: v.rule.kind(),
        severity: v.triage.severity(),
        store_id: v.store_id.clone(),
        sku: v.sku.clone(),
        event_ids: v.evidence.clone(),
        detail,
        detected_at: v.detected_at,
        detector: DETECTOR.into(),
    }
}

/// The resolution of an auto-resolved verdict (none for info or review).
pub fn auto_resolution(v: &Verdict) -> Option<ConflictResolved> {
    (v.triage == Triage::AutoResolved).then(|| ConflictResolved {
        conflict_id: v.conflict_id.clone(),
        store_id: v.store_id.clone(),
        rule: v.rule.name().into(),
        resolution: format!("auto: {}", v.outcome),
        compensating_event_ids: v
            .compensations
            .iter()
            .map(|c| c.compensation_id.clone())
            .collect(),
        resolved_at: v.detected_at,
        resolved_by: DETECTOR.into(),
    })
}

/// A compensation undoing `c` because of `cause` (an event, price list or review id).
pub fn reversal(
    c: &Compensation,
    cause: &str,
    at: i64,
    issued_by: &str,
    reason: &str,
) -> Result<Compensation, Overflow> {
    Ok(Compensation {
        compensation_id: uuid_v5(&format!("{}|reversal|{cause}", c.compensation_id)),
        conflict_id: c.conflict_id.clone(),
        kind: c.kind,
        store_id: c.store_id.clone(),
        sku: c.sku.clone(),
        qty: c
            .qty
            .checked_neg()
            .ok_or_else(|| Overflow(format!("-({})", c.qty)))?,
        money: c.money.as_ref().map(money::negate).transpose()?,
        evidence_event_ids: c.evidence_event_ids.clone(),
        reason: reason.into(),
        reverses: Some(c.compensation_id.clone()),
        effective_at: at,
        issued_by: issued_by.into(),
    })
}

/// A verdict that no longer holds since `by` (occurred at `at`): its resolution and the reversal
/// of each of `to_reverse` (its compensations not reversed yet).
pub fn superseded(
    v: &Verdict,
    by: &str,
    at: i64,
    to_reverse: &[Compensation],
) -> Result<(ConflictResolved, Vec<Compensation>), Overflow> {
    let reason = format!("verdict superseded by {by}");
    let reversals = to_reverse
        .iter()
        .map(|c| reversal(c, by, at, DETECTOR, &reason))
        .collect::<Result<Vec<_>, _>>()?;
    let resolved = ConflictResolved {
        conflict_id: v.conflict_id.clone(),
        store_id: v.store_id.clone(),
        rule: v.rule.name().into(),
        resolution: format!("auto: superseded by {by}"),
        compensating_event_ids: reversals
            .iter()
            .map(|c| c.compensation_id.clone())
            .collect(),
        resolved_at: at,
        resolved_by: DETECTOR.into(),
    };
    Ok((resolved, reversals))
}

/// What a reviewer decides.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ReviewAction {
    /// The rule's outcome stands (its compensations stay).
    Accept,
    /// Not a real problem: every compensation the conflict issued is reversed.
    Reject,
}

impl ReviewAction {
    pub fn name(self) -> &'static str {
        match self {
            ReviewAction::Accept => "accept",
            ReviewAction::Reject => "reject",
        }
    }

    pub fn parse(s: &str) -> Option<ReviewAction> {
        match s {
            "accept" => Some(ReviewAction::Accept),
            "reject" => Some(ReviewAction::Reject),
            _ => None,
        }
    }
}

/// A reviewer's resolution of a conflict and the compensations it writes.
#[allow(clippy::too_many_arguments)]
pub fn reviewed(
    conflict_id: &str,
    store_id: &str,
    rule: &str,
    action: ReviewAction,
    who: &str,
    why: &str,
    at: i64,
    issued: &[Compensation],
) -> Result<(ConflictResolved, Vec<Compensation>), Overflow> {
    let review_id = uuid_v5(&format!("{conflict_id}|review|{}", action.name()));
    let issued_by = format!("review:{who}");
    let comps = match action {
        ReviewAction::Accept => Vec::new(),
        ReviewAction::Reject => issued
            .iter()
            .map(|c| {
                reversal(
                    c,
                    &review_id,
                    at,
                    &issued_by,
                    &format!("rejected by {who}: {why}"),
                )
            })
            .collect::<Result<Vec<_>, _>>()?,
    };
    let resolved = ConflictResolved {
        conflict_id: conflict_id.into(),
        store_id: store_id.into(),
        rule: rule.into(),
        resolution: format!("{}ed by {who}: {why}", action.name()),
        compensating_event_ids: comps.iter().map(|c| c.compensation_id.clone()).collect(),
        resolved_at: at,
        resolved_by: who.into(),
    };
    Ok((resolved, comps))
}

/// The id a `ConflictResolved` travels under (its `tillstream-event-id` header).
pub fn resolved_id(r: &ConflictResolved) -> String {
    uuid_v5(&format!(
        "{}|resolved|{}|{}",
        r.conflict_id, r.resolved_by, r.resolution
    ))
}
