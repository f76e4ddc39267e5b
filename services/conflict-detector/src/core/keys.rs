//! Rules over business keys, first in event time wins: 4 loyalty double redemption (the same
//! redemption twice by one member, or a second redemption of a single-use reward), 5 duplicate
//! business key (two events with one `order_id`, `refund_id` or `redemption_id` in a store). Pure;
//! no I/O.
//!
//! A group is the store's events sharing a key, in event-time order: the first is the original,
//! each later one gets a verdict against it. An event that arrives late but happened first takes
//! the original's place: the verdicts against the old original are superseded.

use std::collections::BTreeMap;
use std::sync::Arc;

use rustc_hash::FxHashMap as HashMap;
use tillstream_contracts::{CompensationKind, Money};

use super::money;
use super::text;
use super::{
    Change, CompensationDraft, CoreConfig, Ctx, EventKey, Owner, Rule, StoreState, Triage, Trigger,
    Verdict, diff,
};

/// Which key a group shares.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Group {
    Order(Arc<str>),
    Refund(Arc<str>),
    Redemption(Arc<str>),
    /// (member, reward code) of a configured single-use reward.
    SingleUse(Arc<str>, Arc<str>),
}

impl Group {
    fn label(&self) -> String {
        match self {
            Group::Order(k) => format!("order_id {k}"),
            Group::Refund(k) => format!("refund_id {k}"),
            Group::Redemption(k) => format!("redemption_id {k}"),
            Group::SingleUse(m, r) => format!("single-use reward {r} of member {m}"),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Redemption {
    pub redemption_id: Arc<str>,
    pub member: Arc<str>,
    pub reward: Arc<str>,
    pub points: i64,
    pub value: Money,
}

#[derive(Debug, Clone)]
pub struct KeyEntry {
    pub key: EventKey,
    pub event_id: Arc<str>,
    pub redemption: Option<Redemption>,
}

impl KeyEntry {
    pub fn plain(key: EventKey, event_id: Arc<str>) -> Self {
        KeyEntry {
            key,
            event_id,
            redemption: None,
        }
    }
}

#[derive(Debug, Clone, Default)]
pub struct KeyGroup {
    pub entries: Vec<KeyEntry>,
    pub verdicts: Vec<Verdict>,
}

/// A store's key groups.
#[derive(Debug, Default)]
pub struct StoreKeys {
    pub groups: HashMap<Group, KeyGroup>,
}

impl StoreKeys {
    /// Forgets groups whose every event occurred before `cutoff` (their verdicts stay in the
    /// database).
    pub fn prune(&mut self, cutoff: i64) {
        self.groups
            .retain(|_, g| g.entries.last().is_some_and(|e| e.key.at >= cutoff));
    }
}

/// The verdicts a group's later events get against its first.
fn evaluate(group: &Group, g: &KeyGroup, ctx: &Ctx<'_>) -> Vec<Verdict> {
    let mut out = Vec::new();
    let Some(first) = g.entries.first() else {
        return out;
    };
    for (i, e) in g.entries.iter().enumerate().skip(1) {
        if e.event_id == first.event_id {
            continue;
        }
        let v = match (group, &first.redemption, &e.redemption) {
            (Group::Redemption(_), Some(a), Some(b))
                if a.member == b.member && a.reward == b.reward =>
            {
                loyalty(group, first, e, b, ctx)
            }
            (Group::SingleUse(..), Some(_), Some(b)) => {
                // The same redemption id twice is the redemption group's verdict.
                if g.entries[..i].iter().any(|x| {
                    x.redemption.as_ref().map(|r| &r.redemption_id) == Some(&b.redemption_id)
                }) {
                    continue;
                }
                loyalty(group, first, e, b, ctx)
            }
            (Group::SingleUse(..), _, _) => continue,
            _ => duplicate_key(group, first, e, ctx),
        };
        out.push(v);
    }
    out
}

fn ambiguous(first: &KeyEntry, e: &KeyEntry, tol: i64) -> bool {
    first.key.device != e.key.device && e.key.at.saturating_sub(first.key.at) <= tol
}

fn skew_words(first: &KeyEntry, e: &KeyEntry, tol: i64) -> String {
    format!(
        " The two events come from different devices {} apart, within the {} skew tolerance: which came first cannot be told from the clocks, so it goes to review.",
        text::duration(e.key.at.saturating_sub(first.key.at)),
        text::duration(tol)
    )
}

/// Rule 4.
fn loyalty(
    group: &Group,
    first: &KeyEntry,
    e: &KeyEntry,
    r: &Redemption,
    ctx: &Ctx<'_>,
) -> Verdict {
    let tol = ctx.cfg.skew_tolerance_ms;
    let amb = ambiguous(first, e, tol);
    let key = format!(
        "{}|first={}|second={}|amb={amb}",
        group.label(),
        first.event_id,
        e.event_id
    );
    let what = match group {
        Group::SingleUse(..) => format!(
            "member {} redeemed the single-use reward {} twice",
            r.member, r.reward
        ),
        _ => format!(
            "member {} redeemed redemption {} (reward {}) twice",
            r.member, r.redemption_id, r.reward
        ),
    };
    let explanation = format!(
        "Loyalty double redemption (rule 4, first wins): {what}: first {}, again {}. The first stands; the second's {} point(s) worth {} become a POINTS_CLAWBACK receivable.{}",
        text::event(&first.event_id, &first.key.device, first.key.at),
        text::event(&e.event_id, &e.key.device, e.key.at),
        r.points,
        money::show(&r.value),
        if amb {
            skew_words(first, e, tol)
        } else {
            String::new()
        }
    );
    let detail = BTreeMap::from([
        ("member_id".to_string(), r.member.to_string()),
        ("reward_code".to_string(), r.reward.to_string()),
        ("redemption_id".to_string(), r.redemption_id.to_string()),
        ("points".to_string(), r.points.to_string()),
        ("value_minor".to_string(), r.value.amount_minor.to_string()),
        ("skew_ambiguous".to_string(), amb.to_string()),
    ]);
    ctx.verdict(
        Rule::LoyaltyDoubleRedemption,
        &key,
        if amb {
            Triage::NeedsReview
        } else {
            Triage::AutoResolved
        },
        Owner::Finance,
        None,
        vec![
            (e.event_id.clone(), e.key.at),
            (first.event_id.clone(), first.key.at),
        ],
        detail,
        explanation,
        format!("points clawback {} from member {}", r.points, r.member),
        vec![CompensationDraft {
            kind: CompensationKind::PointsClawback,
            qty: r.points,
            money: Some(r.value.clone()),
            reason: format!("second redemption of {} by member {}", r.reward, r.member),
        }],
    )
}

/// Rule 5.
fn duplicate_key(group: &Group, first: &KeyEntry, e: &KeyEntry, ctx: &Ctx<'_>) -> Verdict {
    let key = format!(
        "{}|first={}|second={}",
        group.label(),
        first.event_id,
        e.event_id
    );
    let same_device = if first.key.device == e.key.device {
        " Both come from the same device: typically a device reset that restarted its numbering."
    } else {
        ""
    };
    let explanation = format!(
        "Duplicate business key (rule 5): {} is carried by two different events in this store: first {}, again {}. Both are kept as recorded (different event ids); store ops decide which is genuine.{same_device}",
        group.label(),
        text::event(&first.event_id, &first.key.device, first.key.at),
        text::event(&e.event_id, &e.key.device, e.key.at),
    );
    let (field, value) = match group {
        Group::Order(k) => ("order_id", k.to_string()),
        Group::Refund(k) => ("refund_id", k.to_string()),
        Group::Redemption(k) => ("redemption_id", k.to_string()),
        Group::SingleUse(m, r) => ("single_use", format!("{m}/{r}")),
    };
    let detail = BTreeMap::from([
        ("key_field".to_string(), field.to_string()),
        ("key".to_string(), value),
    ]);
    ctx.verdict(
        Rule::DuplicateBusinessKey,
        &key,
        Triage::NeedsReview,
        Owner::StoreOps,
        None,
        vec![
            (e.event_id.clone(), e.key.at),
            (first.event_id.clone(), first.key.at),
        ],
        detail,
        explanation,
        format!("{field} reused"),
        Vec::new(),
    )
}

fn reevaluate(
    group: &Group,
    g: &mut KeyGroup,
    cfg: &CoreConfig,
    store: &str,
    generations: &mut HashMap<String, u32>,
    trigger: &Trigger,
    out: &mut Vec<Change>,
) {
    let new = {
        let ctx = Ctx {
            cfg,
            store,
            generations,
        };
        evaluate(group, g, &ctx)
    };
    let old = std::mem::take(&mut g.verdicts);
    diff(old, &new, trigger, generations, out);
    g.verdicts = new;
}

/// Adds an event to its key group and judges the group.
pub(crate) fn add(
    st: &mut StoreState,
    cfg: &CoreConfig,
    group: Group,
    entry: KeyEntry,
    eval: bool,
    trigger: &Trigger,
    out: &mut Vec<Change>,
) {
    let StoreState {
        id,
        keys,
        generations,
        ..
    } = st;
    match keys.groups.get_mut(&group) {
        Some(g) => {
            let i = g.entries.partition_point(|e| e.key <= entry.key);
            g.entries.insert(i, entry);
            if eval {
                reevaluate(&group, g, cfg, id, generations, trigger, out);
            }
        }
        // Most keys are seen once: one exact allocation, nothing to judge.
        None => {
            keys.groups.insert(
                group,
                KeyGroup {
                    entries: vec![entry],
                    verdicts: Vec::new(),
                },
            );
        }
    }
}

/// Judges every group of the store (after a restore), in key order.
pub(crate) fn reevaluate_all(
    st: &mut StoreState,
    cfg: &CoreConfig,
    trigger: &Trigger,
    out: &mut Vec<Change>,
) {
    let StoreState {
        id,
        keys,
        generations,
        ..
    } = st;
    let mut names: Vec<Group> = keys
        .groups
        .iter()
        .filter(|(_, g)| g.entries.len() > 1)
        .map(|(k, _)| k.clone())
        .collect();
    names.sort();
    for name in names {
        if let Some(g) = keys.groups.get_mut(&name) {
            reevaluate(&name, g, cfg, id, generations, trigger, out);
        }
    }
}
