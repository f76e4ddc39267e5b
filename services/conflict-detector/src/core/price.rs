//! Rule 3, price variance: every sale line's `unit_price` against the approved price in force for
//! its store at its `occurred_at`. Pure; no I/O.
//!
//! The list in force at `t` is the one with the latest `effective_from <= t` (ties: the later
//! approval, then the list id). A line priced as a list whose validity starts or ends within the
//! skew tolerance of the sale is ambiguous: the device may have sold under that list by the true
//! time. A new list re-evaluates the store's lines from `effective_from - tolerance` on.

use std::collections::BTreeMap;
use std::sync::Arc;

use rustc_hash::{FxHashMap as HashMap, FxHashSet as HashSet};
use tillstream_contracts::{CompensationKind, PriceListApproved};

use super::money::{self, Amount, Overflow};
use super::text;
use super::{
    Change, CompensationDraft, CoreConfig, Ctx, EventKey, Owner, Rejected, Rule, StoreState,
    Triage, Trigger, Verdict, diff,
};

/// One approved list of one store.
#[derive(Debug, Clone)]
pub struct PriceList {
    pub effective_from: i64,
    pub approved_at: i64,
    pub list_id: String,
    pub event_id: String,
    pub approved_by: String,
    pub prices: HashMap<String, Amount>,
}

impl PriceList {
    fn order_key(&self) -> (i64, i64, &str) {
        (self.effective_from, self.approved_at, &self.list_id)
    }
}

/// A store's approved lists, ordered by when they take effect.
#[derive(Debug, Clone, Default)]
pub struct PriceHistory {
    lists: Vec<PriceList>,
    seen: HashSet<String>,
}

impl PriceHistory {
    /// Adds a list; false if this approval (event id) is already known.
    pub fn insert(&mut self, l: &PriceListApproved) -> bool {
        if !self.seen.insert(l.event_id.clone()) {
            return false;
        }
        let list = PriceList {
            effective_from: l.effective_from,
            approved_at: l.occurred_at,
            list_id: l.price_list_id.clone(),
            event_id: l.event_id.clone(),
            approved_by: l.approved_by.clone(),
            prices: l
                .items
                .iter()
                .map(|i| (i.sku.clone(), Amount::of(&i.price)))
                .collect(),
        };
        let i = self
            .lists
            .partition_point(|x| x.order_key() <= list.order_key());
        self.lists.insert(i, list);
        true
    }

    pub fn len(&self) -> usize {
        self.lists.len()
    }

    pub fn is_empty(&self) -> bool {
        self.lists.is_empty()
    }

    /// Index of the list in force at `t`.
    fn in_force(&self, t: i64) -> Option<usize> {
        let i = self.lists.partition_point(|l| l.effective_from <= t);
        i.checked_sub(1)
    }

    /// The approved price of `sku` at `t` and the list it comes from.
    pub fn price_at(&self, sku: &str, t: i64) -> Option<(&PriceList, &Amount)> {
        let l = &self.lists[self.in_force(t)?];
        l.prices.get(sku).map(|p| (l, p))
    }

    /// Every list in force at some moment of `[t - tol, t + tol]` that prices `sku`.
    fn in_force_around(&self, sku: &str, t: i64, tol: i64) -> Vec<(&PriceList, &Amount)> {
        let lo = self.in_force(t.saturating_sub(tol)).unwrap_or(0);
        let hi = self
            .lists
            .partition_point(|l| l.effective_from <= t.saturating_add(tol));
        self.lists[lo.min(hi)..hi]
            .iter()
            .filter_map(|l| l.prices.get(sku).map(|p| (l, p)))
            .collect()
    }
}

/// One sale line, kept for re-evaluation when a list arrives.
#[derive(Debug, Clone)]
pub struct PriceLine {
    pub key: EventKey,
    pub event_id: Arc<str>,
    pub sku: Arc<str>,
    pub qty: i64,
    pub unit_price: Amount,
}

/// A store's sale lines and the price verdicts that hold for them.
#[derive(Debug, Default)]
pub struct StoreLines {
    pub lines: BTreeMap<EventKey, PriceLine>,
    pub verdicts: BTreeMap<EventKey, Verdict>,
}

impl StoreLines {
    pub fn prune(&mut self, cutoff: i64) {
        let first = low_key(cutoff);
        self.lines = self.lines.split_off(&first);
        self.verdicts = self.verdicts.split_off(&first);
    }
}

fn low_key(at: i64) -> EventKey {
    EventKey {
        at,
        device: Arc::from(""),
        seq: i64::MIN,
        line: i32::MIN,
    }
}

/// The verdict for one line under `lists`, if its price differs from the approved one.
fn line_verdict(
    line: &PriceLine,
    lists: &PriceHistory,
    ctx: &Ctx<'_>,
) -> Result<Option<Verdict>, Overflow> {
    let t = line.key.at;
    let Some((list, approved)) = lists.price_at(&line.sku, t) else {
        return Ok(None);
    };
    if *approved == line.unit_price {
        return Ok(None);
    }
    let tol = ctx.cfg.skew_tolerance_ms;
    let near_match = lists
        .in_force_around(&line.sku, t, tol)
        .into_iter()
        .find(|(l, p)| **p == line.unit_price && l.list_id != list.list_id)
        .map(|(l, _)| l);
    let (approved_m, charged_m) = (approved.to_money(), line.unit_price.to_money());
    let total = money::difference_times(&approved_m, &charged_m, line.qty)?;
    let per_unit = money::difference_times(&approved_m, &charged_m, 1)?;
    let allowed = approved
        .minor
        .checked_abs()
        .and_then(|a| a.checked_mul(ctx.cfg.price_tolerance_bp))
        .map(|x| x / 10_000)
        .ok_or_else(|| Overflow("price tolerance".into()))?
        .max(ctx.cfg.price_tolerance_minor);
    let within = per_unit
        .as_ref()
        .is_some_and(|d| d.amount_minor.checked_abs().is_some_and(|a| a <= allowed));
    let (triage, owner) = match (&near_match, within) {
        (None, true) => (Triage::AutoResolved, Owner::Finance),
        _ => (Triage::NeedsReview, Owner::Merchandising),
    };
    let mut key = format!(
        "{}|{}|{}|qty={}|charged={}{}|approved={}{}|list={}",
        line.event_id,
        line.key.line,
        line.sku,
        line.qty,
        line.unit_price.minor,
        line.unit_price.currency(),
        approved.minor,
        approved.currency(),
        list.event_id
    );
    if let Some(m) = near_match {
        key.push_str(&format!("|near={}", m.event_id));
    }
    let total_words = match &total {
        Some(d) => format!("(approved - charged) x {} = {}", line.qty, money::show(d)),
        None => "no difference can be computed: the currencies differ".to_string(),
    };
    let decision = if let Some(m) = near_match {
        format!(
            " The charged price is list {}'s price, in force within the {} skew tolerance of the sale (effective {}): the device may have sold under that list by the true time, so it goes to review.",
            m.list_id,
            text::duration(tol),
            text::utc(m.effective_from)
        )
    } else if within {
        format!(
            " Within the tolerance of {allowed} minor units per unit: auto-accepted and recorded for finance."
        )
    } else if per_unit.is_none() {
        " The currencies differ: review.".to_string()
    } else {
        format!(" Above the tolerance of {allowed} minor units per unit: review.")
    };
    let adjustment = if total.is_some() {
        " A PRICE_ADJUSTMENT compensation carries the difference."
    } else {
        ""
    };
    let explanation = format!(
        "Price variance (rule 3): sale {} charged {} per unit for {} x {} (line {}), but the approved price in force at its occurred_at was {} (price list {}, approved by {}, effective {}); {total_words}.{adjustment}{decision}",
        text::event(&line.event_id, &line.key.device, t),
        money::show(&charged_m),
        line.qty,
        line.sku,
        line.key.line,
        money::show(&approved_m),
        list.list_id,
        list.approved_by,
        text::utc(list.effective_from),
    );
    let mut detail = BTreeMap::from([
        ("line_no".to_string(), line.key.line.to_string()),
        ("qty".to_string(), line.qty.to_string()),
        (
            "charged_minor".to_string(),
            line.unit_price.minor.to_string(),
        ),
        ("approved_minor".to_string(), approved.minor.to_string()),
        ("currency".to_string(), approved.currency().to_string()),
        ("price_list_id".to_string(), list.list_id.clone()),
        (
            "skew_ambiguous".to_string(),
            near_match.is_some().to_string(),
        ),
    ]);
    if let Some(d) = &total {
        detail.insert("difference_minor".into(), d.amount_minor.to_string());
    }
    let compensations = match total {
        Some(d) => vec![CompensationDraft {
            kind: CompensationKind::PriceAdjustment,
            qty: line.qty,
            money: Some(d),
            reason: format!(
                "line {} charged {} per unit, approved {} (list {})",
                line.key.line,
                money::show(&charged_m),
                money::show(&approved_m),
                list.list_id
            ),
        }],
        None => Vec::new(),
    };
    let outcome = format!("price adjustment on {} x {}", line.qty, line.sku);
    Ok(Some(ctx.verdict(
        Rule::PriceVariance,
        &key,
        triage,
        owner,
        Some(&line.sku),
        vec![
            (line.event_id.clone(), t),
            (Arc::from(list.event_id.as_str()), list.approved_at.min(t)),
        ],
        detail,
        explanation,
        outcome,
        compensations,
    )))
}

/// Adds a sale line and judges it.
#[allow(clippy::too_many_arguments)]
pub(crate) fn add_line(
    st: &mut StoreState,
    cfg: &CoreConfig,
    lists: &PriceHistory,
    line: PriceLine,
    eval: bool,
    trigger: &Trigger,
    out: &mut Vec<Change>,
) -> Result<(), Rejected> {
    let key = line.key.clone();
    let verdict = if eval && !lists.is_empty() {
        let ctx = Ctx {
            cfg,
            store: &st.id,
            generations: &st.generations,
        };
        line_verdict(&line, lists, &ctx)?
    } else {
        None
    };
    st.prices.lines.insert(key.clone(), line);
    if let Some(v) = verdict {
        let old: Vec<Verdict> = st.prices.verdicts.remove(&key).into_iter().collect();
        diff(
            old,
            std::slice::from_ref(&v),
            trigger,
            &mut st.generations,
            out,
        );
        st.prices.verdicts.insert(key, v);
    }
    Ok(())
}

/// Judges the store's lines that occurred at or after `from` again (a list arrived, or a restore).
pub(crate) fn reevaluate(
    st: &mut StoreState,
    cfg: &CoreConfig,
    lists: &PriceHistory,
    from: i64,
    trigger: &Trigger,
    out: &mut Vec<Change>,
) -> Result<(), Rejected> {
    let first = low_key(from);
    let mut new: Vec<(EventKey, Verdict)> = Vec::new();
    {
        let ctx = Ctx {
            cfg,
            store: &st.id,
            generations: &st.generations,
        };
        for (k, line) in st.prices.lines.range(first.clone()..) {
            if let Some(v) = line_verdict(line, lists, &ctx)? {
                new.push((k.clone(), v));
            }
        }
    }
    let old: Vec<Verdict> = st.prices.verdicts.split_off(&first).into_values().collect();
    let new_verdicts: Vec<Verdict> = new.iter().map(|(_, v)| v.clone()).collect();
    diff(old, &new_verdicts, trigger, &mut st.generations, out);
    st.prices.verdicts.extend(new);
    Ok(())
}
