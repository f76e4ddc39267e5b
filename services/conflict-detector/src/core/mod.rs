//! The pure conflict-detection core: store events and approved price lists in, [`Change`]s out
//! (a verdict raised, or a verdict that no longer holds). No I/O and no clock: every verdict is a
//! function of the state (the store's events and price lists), so the same inputs in the same
//! per-store order give the same changes, byte for byte, whatever else was interleaved.
//!
//! Delivery guarantee: none by itself. The service persists the state, the verdicts and the
//! records they produce in one database transaction per batch, with the input offsets.
//!
//! # Event time
//! Stream order is the wrong clock (an offline till's sales arrive after later receipts), so each
//! (store, sku) keeps a stock timeline ordered by `(occurred_at, device_id, seq, line)`
//! ([`stock`]). Every entry caches the event-time on-hand after it; an event that lands before the
//! end (a late one) shifts the balances after it and every verdict from its position on is
//! evaluated again, then diffed with the verdicts that held before: a new one is raised, one that no
//! longer holds is superseded ([`Change::Superseded`]: a `ConflictResolved` naming the event, and a
//! reversal of each compensation it had issued). Nothing is deleted.
//!
//! Device clocks are skewed. Where a verdict depends on the order of two events of different
//! devices closer together than `skew_tolerance_ms`, the explanation says so and the verdict is
//! classified for review instead of trusting the clocks.
//!
//! # Horizon
//! A store's watermark is the highest Kafka record time of its events. Every `prune_every_ms` of
//! watermark, whatever occurred before `watermark - horizon_ms` is folded away: a timeline's
//! oldest entries into its opening balance, old price lines and key groups dropped (their verdicts
//! stay in the database, frozen). An event that occurred before the retained history is *beyond
//! the horizon* ([`Applied::beyond_horizon`], counted by the service): its stock move is folded into
//! the opening balance (an absolute count is ignored) and no rule judges it.
//!
//! # Identity
//! A verdict's id is `uuid_v5` of its rule and its evidence: every fact its record and
//! compensations are built from (event ids, quantities, prices, the ambiguity). Same id, same bytes.
//! A verdict names only the facts its decision rests on (an oversell: its line, shortfall, policy
//! and whether it is ambiguous; not the earlier sale that took the last unit, nor the other
//! devices' sales within the skew tolerance), so a late event that leaves the decision as it was
//! leaves the verdict as it was (`identity_tests`).
//! A verdict superseded and later true again gets a new id (a generation counter per evidence).
//!
//! # Rules
//! [`stock`]: 1 oversell, 2 reservation breach, 6 stale count. [`price`]: 3 price variance.
//! [`keys`]: 4 loyalty double redemption, 5 duplicate business key. [`collision`]: 7 identity
//! collisions from the dedup, taken into the queue as they are. [`records`] renders verdicts as
//! the Avro records the service writes.
//!
//! Why one file (~1,000 lines): the detector's event dispatch, verdict diffing and replay are the
//! core's one public surface; the rules themselves are in the files named above.

pub mod collision;
#[cfg(test)]
mod identity_tests;
pub mod keys;
pub mod money;
pub mod price;
pub mod records;
pub mod stock;
#[cfg(test)]
mod tests;
pub mod text;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use rustc_hash::FxHashMap as HashMap;
use serde::{Deserialize, Serialize};
use tillstream_contracts::{
    AdjustmentKind, Compensation, CompensationKind, ConflictKind, DeviceEvent, PriceListApproved,
    Severity,
};

/// Name written into `ConflictDetected.detector` and `ConflictResolved.resolved_by`.
pub const DETECTOR: &str = "conflict-detector";

/// Why an input is refused (the dead-letter `reason`).
pub mod reason {
    pub const MONEY_OVERFLOW: &str = "money_overflow";
    pub const MONEY_OUT_OF_RANGE: &str = "money_out_of_range";
    pub const INVALID_QUANTITY: &str = "invalid_quantity";
    pub const INVALID_CURRENCY: &str = "invalid_currency";
    pub const MISSING_FIELD: &str = "missing_field";
}

/// An input the core refuses: dead-lettered by the service with `reason`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{reason}: {detail}")]
pub struct Rejected {
    pub reason: &'static str,
    pub detail: String,
}

impl Rejected {
    pub fn new(reason: &'static str, detail: impl Into<String>) -> Self {
        Rejected {
            reason,
            detail: detail.into(),
        }
    }
}

/// The rules (README: policy per rule).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Rule {
    Oversell,
    ReservationBreach,
    PriceVariance,
    LoyaltyDoubleRedemption,
    DuplicateBusinessKey,
    StaleCount,
    IdentityCollision,
}

impl Rule {
    pub const ALL: [Rule; 7] = [
        Rule::Oversell,
        Rule::ReservationBreach,
        Rule::PriceVariance,
        Rule::LoyaltyDoubleRedemption,
        Rule::DuplicateBusinessKey,
        Rule::StaleCount,
        Rule::IdentityCollision,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Rule::Oversell => "oversell",
            Rule::ReservationBreach => "reservation-breach",
            Rule::PriceVariance => "price-variance",
            Rule::LoyaltyDoubleRedemption => "loyalty-double-redemption",
            Rule::DuplicateBusinessKey => "duplicate-business-key",
            Rule::StaleCount => "stale-count",
            Rule::IdentityCollision => "identity-collision",
        }
    }

    pub fn parse(s: &str) -> Option<Rule> {
        Rule::ALL.into_iter().find(|r| r.name() == s)
    }

    /// The `ConflictDetected.kind` symbol.
    pub fn kind(self) -> ConflictKind {
        match self {
            Rule::Oversell => ConflictKind::Oversold,
            Rule::ReservationBreach => ConflictKind::ReservationBreach,
            Rule::PriceVariance => ConflictKind::PriceMismatch,
            Rule::LoyaltyDoubleRedemption => ConflictKind::DoubleRedemption,
            Rule::DuplicateBusinessKey => ConflictKind::DuplicateBusinessKey,
            Rule::StaleCount => ConflictKind::StaleCount,
            Rule::IdentityCollision => ConflictKind::IdentityCollision,
        }
    }
}

/// How a conflict is handled: recorded, settled by the rule, or waiting for a person.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Triage {
    Info,
    AutoResolved,
    NeedsReview,
}

impl Triage {
    pub fn name(self) -> &'static str {
        match self {
            Triage::Info => "info",
            Triage::AutoResolved => "auto-resolved",
            Triage::NeedsReview => "needs-review",
        }
    }

    pub fn parse(s: &str) -> Option<Triage> {
        [Triage::Info, Triage::AutoResolved, Triage::NeedsReview]
            .into_iter()
            .find(|t| t.name() == s)
    }

    /// The v1 `Severity` symbol the record carries (v1 readers keep decoding it; the triage itself
    /// is in `detail["triage"]`).
    pub fn severity(self) -> Severity {
        match self {
            Triage::Info | Triage::AutoResolved => Severity::Info,
            Triage::NeedsReview => Severity::Warning,
        }
    }
}

/// Who acts on a conflict.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Owner {
    StoreOps,
    Finance,
    Merchandising,
}

impl Owner {
    pub fn name(self) -> &'static str {
        match self {
            Owner::StoreOps => "store-ops",
            Owner::Finance => "finance",
            Owner::Merchandising => "merchandising",
        }
    }
}

/// What a sale line without stock becomes (per sku, from config).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LinePolicy {
    #[default]
    Backorder,
    Substitute,
    Void,
}

impl LinePolicy {
    pub fn kind(self) -> CompensationKind {
        match self {
            LinePolicy::Backorder => CompensationKind::Backorder,
            LinePolicy::Substitute => CompensationKind::Substitute,
            LinePolicy::Void => CompensationKind::Void,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            LinePolicy::Backorder => "backorder",
            LinePolicy::Substitute => "substitute",
            LinePolicy::Void => "void",
        }
    }
}

/// The rules' parameters (part of the verdict function: changing one changes verdicts).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct CoreConfig {
    /// Two events of different devices closer than this in `occurred_at` have no trustworthy
    /// order (the simulator skews clocks by up to 2 h).
    pub skew_tolerance_ms: i64,
    /// History kept per store, behind its watermark (Kafka record time).
    pub horizon_ms: i64,
    /// How often (in watermark time) a store's history is pruned to the horizon.
    pub prune_every_ms: i64,
    /// Price variance per unit accepted without review: the larger of this many minor units and
    /// `price_tolerance_bp` basis points of the approved price.
    pub price_tolerance_minor: i64,
    pub price_tolerance_bp: i64,
    /// A stale count whose difference is above this many units (absolute) goes to review.
    pub stale_count_review_units: i64,
    /// Reward codes a member may redeem once (a second redemption is a double redemption).
    pub single_use_rewards: BTreeSet<String>,
    /// What an oversold line of a sku becomes; skus not listed get `default_policy`.
    pub sku_policy: BTreeMap<String, LinePolicy>,
    pub default_policy: LinePolicy,
}

impl Default for CoreConfig {
    fn default() -> Self {
        CoreConfig {
            skew_tolerance_ms: 2 * 3_600_000,
            horizon_ms: 7 * 86_400_000,
            prune_every_ms: 3_600_000,
            price_tolerance_minor: 5,
            price_tolerance_bp: 100,
            stale_count_review_units: 2,
            single_use_rewards: BTreeSet::new(),
            sku_policy: BTreeMap::new(),
            default_policy: LinePolicy::Backorder,
        }
    }
}

impl CoreConfig {
    pub fn policy(&self, sku: &str) -> LinePolicy {
        self.sku_policy
            .get(sku)
            .copied()
            .unwrap_or(self.default_policy)
    }

    pub fn validate(&self) -> Result<(), String> {
        if self.skew_tolerance_ms < 0
            || self.horizon_ms <= 0
            || self.prune_every_ms <= 0
            || self.price_tolerance_minor < 0
            || self.price_tolerance_bp < 0
            || self.stale_count_review_units < 0
        {
            return Err(
                "detector: tolerances must be >= 0, horizon_ms and prune_every_ms > 0".into(),
            );
        }
        Ok(())
    }
}

/// A conflict the rules found: everything its records are built from. Serialized into the
/// database so a restarted service can supersede it (and reverse its compensations) later.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Verdict {
    pub conflict_id: String,
    /// `uuid_v5(rule, evidence)`: the id of the verdict's first generation.
    pub base_id: String,
    pub generation: u32,
    pub rule: Rule,
    pub triage: Triage,
    pub owner: Owner,
    pub store_id: String,
    pub sku: Option<String>,
    /// The events the verdict rests on (the one it is about first).
    pub evidence: Vec<String>,
    /// `occurred_at` of the event the verdict is about (the horizon freezes older verdicts).
    pub anchor_at: i64,
    /// Latest `occurred_at` among the evidence: the record's `detected_at` (event time, so a
    /// replay writes the same bytes).
    pub detected_at: i64,
    /// The rule's figures (strings, as in the record's `detail` map).
    pub detail: BTreeMap<String, String>,
    /// One paragraph naming the events, the rule and the outcome.
    pub explanation: String,
    /// What an auto resolution says it did (e.g. `backorder 1 x SKU-7`).
    pub outcome: String,
    pub compensations: Vec<Compensation>,
}

/// What the core decided about one input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// A new verdict: its conflict, its compensations, and (auto-resolved) its resolution.
    Raised(Verdict),
    /// A verdict that no longer holds since input `by` (an event or price list id), which
    /// occurred at `at`: resolved as superseded, its compensations reversed.
    Superseded {
        verdict: Verdict,
        by: String,
        at: i64,
    },
}

/// The input that caused an evaluation (named by supersede records).
#[derive(Debug, Clone)]
pub(crate) struct Trigger {
    pub id: Arc<str>,
    pub at: i64,
}

/// What one input did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Applied {
    pub changes: Vec<Change>,
    /// The event occurred before the store's retained history: folded, not judged.
    pub beyond_horizon: bool,
    /// The event landed before the end of some timeline (re-evaluation ran from its position).
    pub late: bool,
    /// The event is of a kind no rule reads (health, day close).
    pub ignored: bool,
}

/// Identity of a verdict: `(base id, conflict id)` for a generation.
pub(crate) fn verdict_ids(
    rule: Rule,
    store: &str,
    evidence_key: &str,
    generation: u32,
) -> (String, String) {
    let base = tillstream_runtime::ids::uuid_v5(&format!("{}|{store}|{evidence_key}", rule.name()));
    let id = if generation == 0 {
        base.clone()
    } else {
        tillstream_runtime::ids::uuid_v5(&format!("{base}#{generation}"))
    };
    (base, id)
}

/// Where a rule builds its verdicts: config, store, and the generation of each superseded evidence.
pub(crate) struct Ctx<'a> {
    pub cfg: &'a CoreConfig,
    pub store: &'a str,
    pub generations: &'a HashMap<String, u32>,
}

impl Ctx<'_> {
    /// Builds a verdict; `evidence_key` must cover every fact the other arguments derive from.
    #[allow(clippy::too_many_arguments)]
    pub fn verdict(
        &self,
        rule: Rule,
        evidence_key: &str,
        triage: Triage,
        owner: Owner,
        sku: Option<&str>,
        evidence: Vec<(Arc<str>, i64)>,
        detail: BTreeMap<String, String>,
        explanation: String,
        outcome: String,
        compensations: Vec<CompensationDraft>,
    ) -> Verdict {
        let base0 = tillstream_runtime::ids::uuid_v5(&format!(
            "{}|{}|{evidence_key}",
            rule.name(),
            self.store
        ));
        let generation = self.generations.get(&base0).copied().unwrap_or(0);
        let (base_id, conflict_id) = verdict_ids(rule, self.store, evidence_key, generation);
        let anchor_at = evidence.first().map(|(_, t)| *t).unwrap_or(0);
        let detected_at = evidence.iter().map(|(_, t)| *t).max().unwrap_or(0);
        let mut ids: Vec<String> = Vec::with_capacity(evidence.len());
        for (e, _) in &evidence {
            if !ids.iter().any(|x| x.as_str() == &**e) {
                ids.push(e.to_string());
            }
        }
        let compensations = compensations
            .into_iter()
            .enumerate()
            .map(|(i, d)| Compensation {
                compensation_id: tillstream_runtime::ids::uuid_v5(&format!(
                    "{conflict_id}|comp|{i}"
                )),
                conflict_id: conflict_id.clone(),
                kind: d.kind,
                store_id: self.store.to_string(),
                sku: sku.map(str::to_string),
                qty: d.qty,
                money: d.money,
                evidence_event_ids: ids.clone(),
                reason: d.reason,
                reverses: None,
                effective_at: detected_at,
                issued_by: DETECTOR.to_string(),
            })
            .collect();
        Verdict {
            conflict_id,
            base_id,
            generation,
            rule,
            triage,
            owner,
            store_id: self.store.to_string(),
            sku: sku.map(str::to_string),
            evidence: ids,
            anchor_at,
            detected_at,
            detail,
            explanation,
            outcome,
            compensations,
        }
    }
}

/// A compensation before it has its ids.
#[derive(Debug, Clone)]
pub(crate) struct CompensationDraft {
    pub kind: CompensationKind,
    pub qty: i64,
    pub money: Option<tillstream_contracts::Money>,
    pub reason: String,
}

/// Diffs the verdicts that held in a scope with those that hold now (both in any order): each old
/// one missing now is superseded (and its evidence's generation bumped), each new one raised.
pub(crate) fn diff(
    old: Vec<Verdict>,
    new: &[Verdict],
    trigger: &Trigger,
    generations: &mut HashMap<String, u32>,
    out: &mut Vec<Change>,
) {
    if old.is_empty() && new.is_empty() {
        return;
    }
    let old_ids: Vec<String> = old.iter().map(|v| v.conflict_id.clone()).collect();
    for v in old {
        if !new.iter().any(|n| n.conflict_id == v.conflict_id) {
            let g = generations.entry(v.base_id.clone()).or_insert(0);
            *g = (*g).max(v.generation + 1);
            out.push(Change::Superseded {
                verdict: v,
                by: trigger.id.to_string(),
                at: trigger.at,
            });
        }
    }
    for v in new {
        if !old_ids.contains(&v.conflict_id) {
            out.push(Change::Raised(v.clone()));
        }
    }
}

/// The key of a timeline entry, a price line or a key-group entry: event-time order.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EventKey {
    pub at: i64,
    pub device: Arc<str>,
    pub seq: i64,
    pub line: i32,
}

/// One store's state.
#[derive(Debug, Default)]
pub struct StoreState {
    pub id: String,
    /// Highest Kafka record time of the store's events.
    pub watermark: i64,
    /// History before this `occurred_at` has been folded away (`i64::MIN`: nothing yet).
    pub retained_from: i64,
    /// Watermark at the last prune.
    pub pruned_at_watermark: i64,
    pub skus: HashMap<Arc<str>, stock::SkuTimeline>,
    pub prices: price::StoreLines,
    pub keys: keys::StoreKeys,
    /// reservation_id -> the order it was requested for (from `StockReservationRequested`).
    pub reservation_orders: HashMap<Arc<str>, Arc<str>>,
    /// Next generation per verdict base id (verdicts superseded at least once).
    pub generations: HashMap<String, u32>,
}

/// The detector: per-store state for the stores this instance owns, and every store's approved
/// price lists.
#[derive(Debug)]
pub struct Detector {
    cfg: Arc<CoreConfig>,
    stores: HashMap<String, StoreState>,
    price_lists: HashMap<String, price::PriceHistory>,
}

/// Evaluate rules (live) or only rebuild state (restore: verdicts come from [`Detector::reconcile`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Live,
    Replay,
}

impl Detector {
    pub fn new(cfg: CoreConfig) -> Detector {
        Detector {
            cfg: Arc::new(cfg),
            stores: HashMap::default(),
            price_lists: HashMap::default(),
        }
    }

    pub fn config(&self) -> &CoreConfig {
        &self.cfg
    }

    /// Stores held in memory.
    pub fn store_ids(&self) -> impl Iterator<Item = &str> {
        self.stores.keys().map(String::as_str)
    }

    /// Forgets a store (its partition moved elsewhere). Price lists stay.
    pub fn drop_store(&mut self, store: &str) {
        self.stores.remove(store);
    }

    pub fn store(&self, store: &str) -> Option<&StoreState> {
        self.stores.get(store)
    }

    /// Applies one store event with its Kafka record time.
    pub fn apply(
        &mut self,
        event: &DeviceEvent,
        record_time: i64,
        mode: Mode,
    ) -> Result<Applied, Rejected> {
        admit(event)?;
        let store_id = event.store_id();
        if !self.stores.contains_key(store_id) {
            self.stores.insert(
                store_id.to_string(),
                StoreState {
                    id: store_id.to_string(),
                    retained_from: i64::MIN,
                    watermark: i64::MIN,
                    pruned_at_watermark: i64::MIN,
                    ..Default::default()
                },
            );
        }
        let empty = price::PriceHistory::default();
        let lists = self.price_lists.get(store_id).unwrap_or(&empty);
        let st = self.stores.get_mut(store_id).expect("inserted above");
        let mut applied = Applied::default();
        let beyond = event.occurred_at() < st.retained_from;
        applied.beyond_horizon = beyond;
        let eval = mode == Mode::Live;
        let device: Arc<str> = Arc::from(event.device_id());
        let event_id: Arc<str> = Arc::from(event.event_id());
        let trigger = Trigger {
            id: event_id.clone(),
            at: event.occurred_at(),
        };
        let key = |line: i32| EventKey {
            at: event.occurred_at(),
            device: device.clone(),
            seq: event.seq(),
            line,
        };
        let cfg = self.cfg.clone();
        match event {
            DeviceEvent::OrderCreated(o) => {
                let order: Arc<str> = Arc::from(o.order_id.as_str());
                for l in &o.lines {
                    let mv = stock::Move::Sale {
                        qty: i64::from(l.qty),
                        order_id: order.clone(),
                        unit_price: money::Amount::of(&l.unit_price),
                    };
                    stock_entry(
                        st,
                        &cfg,
                        &l.sku,
                        key(l.line_no),
                        &event_id,
                        mv,
                        beyond,
                        eval,
                        &trigger,
                        &mut applied,
                    )?;
                }
                if !beyond {
                    for l in &o.lines {
                        price::add_line(
                            st,
                            &cfg,
                            lists,
                            price::PriceLine {
                                key: key(l.line_no),
                                event_id: event_id.clone(),
                                sku: Arc::from(l.sku.as_str()),
                                qty: i64::from(l.qty),
                                unit_price: money::Amount::of(&l.unit_price),
                            },
                            eval,
                            &trigger,
                            &mut applied.changes,
                        )?;
                    }
                    keys::add(
                        st,
                        &cfg,
                        keys::Group::Order(order),
                        keys::KeyEntry::plain(key(0), event_id.clone()),
                        eval,
                        &trigger,
                        &mut applied.changes,
                    );
                }
            }
            DeviceEvent::OrderRefunded(r) => {
                for l in r.lines.iter().filter(|l| l.restock) {
                    let mv = stock::Move::In {
                        qty: i64::from(l.qty),
                        what: "restocking refund",
                    };
                    stock_entry(
                        st,
                        &cfg,
                        &l.sku,
                        key(l.line_no),
                        &event_id,
                        mv,
                        beyond,
                        eval,
                        &trigger,
                        &mut applied,
                    )?;
                }
                if !beyond {
                    keys::add(
                        st,
                        &cfg,
                        keys::Group::Refund(Arc::from(r.refund_id.as_str())),
                        keys::KeyEntry::plain(key(0), event_id.clone()),
                        eval,
                        &trigger,
                        &mut applied.changes,
                    );
                }
            }
            DeviceEvent::InventoryAdjusted(a) => {
                for (i, l) in a.lines.iter().enumerate() {
                    let q = i64::from(l.quantity);
                    let mv = match (a.kind, l.expected_on_hand) {
                        (AdjustmentKind::Receipt, _) => stock::Move::In {
                            qty: q,
                            what: "receipt",
                        },
                        (AdjustmentKind::TransferIn, _) => stock::Move::In {
                            qty: q,
                            what: "transfer in",
                        },
                        (AdjustmentKind::Shrink, _) => stock::Move::Out {
                            qty: q,
                            what: "shrink",
                        },
                        (AdjustmentKind::TransferOut, _) => stock::Move::Out {
                            qty: q,
                            what: "transfer out",
                        },
                        (AdjustmentKind::Count, Some(expected)) => stock::Move::CountDelta {
                            counted: q,
                            expected: i64::from(expected),
                        },
                        (AdjustmentKind::Count, None) => stock::Move::CountAbsolute { counted: q },
                    };
                    stock_entry(
                        st,
                        &cfg,
                        &l.sku,
                        key(i as i32 + 1),
                        &event_id,
                        mv,
                        beyond,
                        eval,
                        &trigger,
                        &mut applied,
                    )?;
                }
            }
            DeviceEvent::StockReservationRequested(r) => {
                let res: Arc<str> = Arc::from(r.reservation_id.as_str());
                if let Some(order) = &r.order_ref {
                    st.reservation_orders
                        .insert(res.clone(), Arc::from(order.as_str()));
                    stock::reservation_order(
                        st,
                        &cfg,
                        &r.sku,
                        &res,
                        Arc::from(order.as_str()),
                        eval,
                        &trigger,
                        &mut applied.changes,
                    )?;
                }
            }
            DeviceEvent::StockReservationGranted(g) => {
                let res: Arc<str> = Arc::from(g.reservation_id.as_str());
                let order = st.reservation_orders.get(&res).cloned();
                stock::grant(
                    st,
                    &cfg,
                    &g.sku,
                    stock::Reservation {
                        id: res,
                        granted_event: event_id.clone(),
                        granted_device: device.clone(),
                        granted_at: g.occurred_at,
                        qty: i64::from(g.qty),
                        expires_at: g.expires_at,
                        released_at: None,
                        order_ref: order,
                        consumed_at: None,
                    },
                    eval,
                    &trigger,
                    &mut applied.changes,
                )?;
            }
            DeviceEvent::StockReservationReleased(r) => {
                stock::release(
                    st,
                    &cfg,
                    &r.sku,
                    &r.reservation_id,
                    r.occurred_at,
                    eval,
                    &trigger,
                    &mut applied.changes,
                )?;
            }
            DeviceEvent::LoyaltyRedeemed(l) => {
                if !beyond {
                    let entry = keys::KeyEntry {
                        key: key(0),
                        event_id: event_id.clone(),
                        redemption: Some(keys::Redemption {
                            redemption_id: Arc::from(l.redemption_id.as_str()),
                            member: Arc::from(l.member_id.as_str()),
                            reward: Arc::from(l.reward_code.as_str()),
                            points: l.points,
                            value: l.value.clone(),
                        }),
                    };
                    keys::add(
                        st,
                        &cfg,
                        keys::Group::Redemption(Arc::from(l.redemption_id.as_str())),
                        entry.clone(),
                        eval,
                        &trigger,
                        &mut applied.changes,
                    );
                    if cfg.single_use_rewards.contains(&l.reward_code) {
                        keys::add(
                            st,
                            &cfg,
                            keys::Group::SingleUse(
                                Arc::from(l.member_id.as_str()),
                                Arc::from(l.reward_code.as_str()),
                            ),
                            entry,
                            eval,
                            &trigger,
                            &mut applied.changes,
                        );
                    }
                }
            }
            DeviceEvent::PriceListApproved(_)
            | DeviceEvent::DeviceHealth(_)
            | DeviceEvent::StoreDayClosed(_) => applied.ignored = true,
        }
        if record_time > st.watermark {
            st.watermark = record_time;
        }
        if st.pruned_at_watermark == i64::MIN {
            st.pruned_at_watermark = st.watermark;
        }
        if st.watermark.saturating_sub(st.pruned_at_watermark) >= cfg.prune_every_ms {
            prune(st, st.watermark.saturating_sub(cfg.horizon_ms));
            st.pruned_at_watermark = st.watermark;
        }
        Ok(applied)
    }

    /// Adds an approved price list (from the history topic). Live: re-evaluates the store's sale
    /// lines the list can change, if the store is held. Returns `Ok(None)` for a list already known.
    pub fn apply_price_list(
        &mut self,
        list: &PriceListApproved,
        mode: Mode,
    ) -> Result<Option<Vec<Change>>, Rejected> {
        admit_price_list(list)?;
        let history = self.price_lists.entry(list.store_id.clone()).or_default();
        if !history.insert(list) {
            return Ok(None);
        }
        let mut changes = Vec::new();
        if mode == Mode::Live
            && let Some(st) = self.stores.get_mut(&list.store_id)
        {
            let trigger = Trigger {
                id: Arc::from(list.event_id.as_str()),
                at: list.occurred_at,
            };
            let from = list
                .effective_from
                .saturating_sub(self.cfg.skew_tolerance_ms);
            price::reevaluate(st, &self.cfg, history, from, &trigger, &mut changes)?;
        }
        Ok(Some(changes))
    }

    /// Price lists known for a store (oldest effective first).
    pub fn price_list_count(&self) -> usize {
        self.price_lists.values().map(|h| h.len()).sum()
    }

    /// After a restore ([`Mode::Replay`] of the store's events): evaluates every retained scope of
    /// the store and diffs the result with the verdicts the database holds as current. Persisted
    /// verdicts about events before the retained history are frozen and left out. Usually empty;
    /// not empty when state changed while no instance evaluated it (a price list that arrived
    /// while the store's partition had no owner).
    pub fn reconcile(
        &mut self,
        store: &str,
        persisted: Vec<Verdict>,
        generations: HashMap<String, u32>,
        trigger_id: &str,
    ) -> Result<Vec<Change>, Rejected> {
        let Some(st) = self.stores.get_mut(store) else {
            return Ok(Vec::new());
        };
        for (b, g) in generations {
            let e = st.generations.entry(b).or_insert(0);
            *e = (*e).max(g);
        }
        let empty = price::PriceHistory::default();
        let lists = self.price_lists.get(store).unwrap_or(&empty);
        let cfg = self.cfg.clone();
        let trigger = Trigger {
            id: Arc::from(trigger_id),
            at: st.watermark.max(0),
        };
        // Build the current verdict set without diffing (nothing is in the scopes after a replay).
        let mut fresh: Vec<Change> = Vec::new();
        stock::reevaluate_all(st, &cfg, &trigger, &mut fresh)?;
        price::reevaluate(st, &cfg, lists, i64::MIN, &trigger, &mut fresh)?;
        keys::reevaluate_all(st, &cfg, &trigger, &mut fresh);
        let now: Vec<Verdict> = fresh
            .into_iter()
            .filter_map(|c| match c {
                Change::Raised(v) => Some(v),
                Change::Superseded { .. } => None,
            })
            .collect();
        let retained_from = st.retained_from;
        let old: Vec<Verdict> = persisted
            .into_iter()
            .filter(|v| v.anchor_at >= retained_from && v.rule != Rule::IdentityCollision)
            .collect();
        let mut out = Vec::new();
        diff(old, &now, &trigger, &mut st.generations, &mut out);
        Ok(out)
    }
}

/// Checks a price list before it is taken in (the history tailer dead-letters a refusal).
pub fn admit_price_list(list: &PriceListApproved) -> Result<(), Rejected> {
    for item in &list.items {
        money::admit_unit(|| format!("price list item {}", item.sku), &item.price)?;
    }
    if list.store_id.is_empty() || list.price_list_id.is_empty() || list.event_id.is_empty() {
        return Err(Rejected::new(
            reason::MISSING_FIELD,
            "price list without store_id, price_list_id or event_id",
        ));
    }
    Ok(())
}

/// Checks an event's amounts and quantities before anything is changed.
fn admit(event: &DeviceEvent) -> Result<(), Rejected> {
    match event {
        DeviceEvent::OrderCreated(o) => {
            for l in &o.lines {
                let what = || format!("order {} line {}", o.order_id, l.line_no);
                money::admit_qty(what, i64::from(l.qty), false)?;
                money::admit_unit(what, &l.unit_price)?;
                money::times(&l.unit_price, i64::from(l.qty))?;
            }
        }
        DeviceEvent::OrderRefunded(r) => {
            for l in &r.lines {
                let what = || format!("refund {} line {}", r.refund_id, l.line_no);
                money::admit_qty(what, i64::from(l.qty), false)?;
            }
        }
        DeviceEvent::InventoryAdjusted(a) => {
            for l in &a.lines {
                let what = || format!("adjustment {} sku {}", a.adjustment_id, l.sku);
                money::admit_qty(what, i64::from(l.quantity), a.kind == AdjustmentKind::Count)?;
                if let Some(e) = l.expected_on_hand {
                    // A counter may believe stock is negative; bound it like a quantity.
                    money::admit_qty(what, i64::from(e).abs(), true)?;
                }
            }
        }
        DeviceEvent::StockReservationGranted(g) => {
            let what = || format!("reservation {}", g.reservation_id);
            money::admit_qty(what, i64::from(g.qty), false)?;
        }
        DeviceEvent::LoyaltyRedeemed(l) => {
            let what = || format!("redemption {}", l.redemption_id);
            money::admit_qty(what, l.points, false)?;
            money::admit_unit(what, &l.value)?;
        }
        _ => {}
    }
    Ok(())
}

/// Adds one stock entry to its timeline (or folds it into the opening balance when beyond the
/// horizon) and evaluates what it changed.
#[allow(clippy::too_many_arguments)]
fn stock_entry(
    st: &mut StoreState,
    cfg: &CoreConfig,
    sku: &str,
    key: EventKey,
    event_id: &Arc<str>,
    mv: stock::Move,
    beyond: bool,
    eval: bool,
    trigger: &Trigger,
    applied: &mut Applied,
) -> Result<(), Rejected> {
    let late = stock::add(
        st,
        cfg,
        sku,
        key,
        event_id.clone(),
        mv,
        beyond,
        eval,
        trigger,
        &mut applied.changes,
    )?;
    applied.late |= late;
    Ok(())
}

/// Folds everything that occurred before `cutoff` out of the store's state.
fn prune(st: &mut StoreState, cutoff: i64) {
    if cutoff <= st.retained_from {
        return;
    }
    st.retained_from = cutoff;
    for t in st.skus.values_mut() {
        t.fold_before(cutoff);
    }
    st.skus.retain(|_, t| !t.is_empty());
    st.prices.prune(cutoff);
    st.keys.prune(cutoff);
}
