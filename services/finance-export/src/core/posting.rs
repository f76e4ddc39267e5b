//! Posting: one event in, balanced double-entry ledger lines out (or a [`Refusal`] naming why the
//! event cannot be booked: it is dead-lettered with that reason, never half-written).
//!
//! Money is integer minor units of the event's currency, which must be the store's; every product
//! and sum is checked (an overflow is a refusal, never a wrapped number). Debits equal credits per
//! event before anything is returned. The tax basis of each amount the contracts carry is stated
//! once, in [`tax_basis`]. Pure; no delivery guarantee.

use tillstream_contracts::{
    Compensation, CompensationKind, DeviceEvent, LoyaltyRedeemed, Money, OrderCreated,
    OrderRefunded, StoreDayClosed, Tender, TenderMethod,
};

use super::chart::{Chart, Role, Store};
use super::recon::Figures;

/// Every tender method, in the order of the files' columns and of [`Figures::tenders`].
pub const TENDER_METHODS: [TenderMethod; 7] = [
    TenderMethod::Cash,
    TenderMethod::Card,
    TenderMethod::Mobile,
    TenderMethod::Voucher,
    TenderMethod::LoyaltyPoints,
    TenderMethod::StoreCredit,
    TenderMethod::Other,
];

/// The contract's name of a tender method (`CASH`, `CARD`, ...).
pub fn tender_name(method: TenderMethod) -> &'static str {
    match method {
        TenderMethod::Cash => "CASH",
        TenderMethod::Card => "CARD",
        TenderMethod::Mobile => "MOBILE",
        TenderMethod::Voucher => "VOUCHER",
        TenderMethod::LoyaltyPoints => "LOYALTY_POINTS",
        TenderMethod::StoreCredit => "STORE_CREDIT",
        TenderMethod::Other => "OTHER",
    }
}

/// Position of a method in [`TENDER_METHODS`].
pub fn tender_index(method: TenderMethod) -> usize {
    TENDER_METHODS
        .iter()
        .position(|m| *m == method)
        .expect("every method is listed")
}

/// How an amount of the contracts relates to its tax.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TaxBasis {
    /// The tax comes on top (an order line's `unit_price`: "excluding tax").
    Exclusive,
    /// The tax is part of the amount (a refund line's `amount`: "tax included").
    Inclusive,
}

/// The basis of an order line's `unit_price x qty` (see the OrderCreated Avro doc).
pub const ORDER_UNIT_PRICE_BASIS: TaxBasis = TaxBasis::Exclusive;
/// The basis of a refund line's `amount` (see the OrderRefunded Avro doc).
pub const REFUND_LINE_AMOUNT_BASIS: TaxBasis = TaxBasis::Inclusive;

/// The one tax rule: splits `amount` (stated on `basis`) with its `tax` into
/// `(excluding tax, including tax)`. `None` on overflow.
pub fn tax_basis(basis: TaxBasis, amount: i64, tax: i64) -> Option<(i64, i64)> {
    match basis {
        TaxBasis::Exclusive => Some((amount, amount.checked_add(tax)?)),
        TaxBasis::Inclusive => Some((amount.checked_sub(tax)?, amount)),
    }
}

/// What produced a ledger line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Source {
    Sale,
    Refund,
    Loyalty,
    DayClose,
    Compensation,
}

impl Source {
    pub fn name(self) -> &'static str {
        match self {
            Source::Sale => "sale",
            Source::Refund => "refund",
            Source::Loyalty => "loyalty",
            Source::DayClose => "day_close",
            Source::Compensation => "compensation",
        }
    }

    pub fn parse(text: &str) -> Option<Source> {
        [
            Source::Sale,
            Source::Refund,
            Source::Loyalty,
            Source::DayClose,
            Source::Compensation,
        ]
        .into_iter()
        .find(|s| s.name() == text)
    }
}

/// One double-entry ledger line: exactly one of `debit_minor` / `credit_minor` is non-zero.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Line {
    /// The event (or compensation) the line books.
    pub event_id: String,
    /// 1-based position within the event's lines.
    pub line_no: u32,
    pub store_id: String,
    /// The till (empty for compensations).
    pub device_id: String,
    /// The till's seq of the event (-1 for compensations).
    pub seq: i64,
    /// The business date the line belongs to (days since the epoch).
    pub business_date: i32,
    pub source: Source,
    /// Order, refund, redemption or compensation id.
    pub reference: String,
    /// The sku of a line-level amount, the reward code of a redemption; empty otherwise.
    pub sku: String,
    /// The tender method of a clearing line; empty otherwise.
    pub tender: String,
    pub role: Role,
    pub account_code: String,
    pub account_name: String,
    pub debit_minor: i64,
    pub credit_minor: i64,
    pub currency: String,
}

/// Why an event cannot be booked (its dead-letter reason and a detail with the figures).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{reason}: {detail}")]
pub struct Refusal {
    /// Machine-readable: `mixed_currency`, `currency_not_store_currency`, `unbalanced`,
    /// `overflow`, `invalid_amount`.
    pub reason: &'static str,
    pub detail: String,
}

fn refuse(reason: &'static str, detail: impl Into<String>) -> Refusal {
    Refusal {
        reason,
        detail: detail.into(),
    }
}

fn overflow(what: &str) -> Refusal {
    refuse(
        "overflow",
        format!("{what} does not fit in 64-bit minor units"),
    )
}

/// Adds `v` to `total`, refusing the event when the sum leaves 64 bits (`what` names the total).
fn add_to(total: &mut i64, v: i64, what: &str) -> Result<(), Refusal> {
    *total = total.checked_add(v).ok_or_else(|| overflow(what))?;
    Ok(())
}

/// A line's quantity must be positive (`what` names the line: "order o1 line 2").
fn positive_qty(qty: i32, what: impl FnOnce() -> String) -> Result<(), Refusal> {
    if qty <= 0 {
        return Err(refuse("invalid_amount", format!("{}: qty {qty}", what())));
    }
    Ok(())
}

/// What a sale or refund adds to its device-day's ledger figures (for reconciliation).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DayFacts {
    pub device_id: String,
    pub business_date: i32,
    pub currency: String,
    pub figures: Figures,
}

/// The booking of one event.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Posting {
    pub lines: Vec<Line>,
    /// Sales and refunds: what they add to the device-day figures.
    pub facts: Option<DayFacts>,
    /// A refund: the order it refers to (the caller notes refunds of orders it never booked).
    pub refunds_order: Option<String>,
}

/// Builds the lines of one event, checking currency, sign, overflow and balance.
struct Builder<'a> {
    chart: &'a Chart,
    store: &'a Store,
    event_id: &'a str,
    device_id: &'a str,
    seq: i64,
    business_date: i32,
    source: Source,
    reference: &'a str,
    lines: Vec<Line>,
    debits: i64,
    credits: i64,
}

impl<'a> Builder<'a> {
    /// Checks that `money` is in the store's currency and returns its amount.
    fn amount(&self, money: &Money, what: &str) -> Result<i64, Refusal> {
        if money.currency != self.store.currency {
            let reason = if self.lines.is_empty() && what == "first" {
                "currency_not_store_currency"
            } else {
                "mixed_currency"
            };
            return Err(refuse(
                reason,
                format!(
                    "{what} is in {} but store {} trades in {}",
                    money.currency, self.store.store_id, self.store.currency
                ),
            ));
        }
        Ok(money.amount_minor)
    }

    /// Adds a line of `amount` to `role` on the debit (`debit = true`) or credit side; a negative
    /// amount goes to the other side, zero adds nothing.
    fn post(&mut self, role: Role, debit: bool, amount: i64, sku: &str) -> Result<(), Refusal> {
        if amount == 0 {
            return Ok(());
        }
        let (debit, abs) = if amount < 0 {
            (
                !debit,
                amount.checked_neg().ok_or_else(|| overflow("amount"))?,
            )
        } else {
            (debit, amount)
        };
        if debit {
            add_to(&mut self.debits, abs, "debits")?;
        } else {
            add_to(&mut self.credits, abs, "credits")?;
        }
        let account = self.chart.account(role);
        let tender = match role {
            Role::TenderClearing(m) => tender_name(m),
            _ => "",
        };
        self.lines.push(Line {
            event_id: self.event_id.to_string(),
            line_no: self.lines.len() as u32 + 1,
            store_id: self.store.store_id.clone(),
            device_id: self.device_id.to_string(),
            seq: self.seq,
            business_date: self.business_date,
            source: self.source,
            reference: self.reference.to_string(),
            sku: sku.to_string(),
            tender: tender.to_string(),
            role,
            account_code: account.code.clone(),
            account_name: account.name.clone(),
            debit_minor: if debit { abs } else { 0 },
            credit_minor: if debit { 0 } else { abs },
            currency: self.store.currency.clone(),
        });
        Ok(())
    }

    /// The lines, once debits equal credits.
    fn balanced(self) -> Result<Vec<Line>, Refusal> {
        if self.debits != self.credits {
            return Err(refuse(
                "unbalanced",
                format!(
                    "{} {}: debits {} != credits {} ({})",
                    self.source.name(),
                    self.reference,
                    self.debits,
                    self.credits,
                    self.store.currency
                ),
            ));
        }
        Ok(self.lines)
    }
}

/// Books one store event. Events without money (stock, reservations, health) give no lines.
pub fn post_event(event: &DeviceEvent, store: &Store, chart: &Chart) -> Result<Posting, Refusal> {
    match event {
        DeviceEvent::OrderCreated(o) => post_sale(o, store, chart),
        DeviceEvent::OrderRefunded(r) => post_refund(r, store, chart),
        DeviceEvent::LoyaltyRedeemed(l) => post_loyalty(l, store, chart),
        DeviceEvent::StoreDayClosed(c) => post_day_close(c, store, chart),
        _ => Ok(Posting::default()),
    }
}

// The event's coordinates, each a field of every line it books.
#[allow(clippy::too_many_arguments)]
fn builder<'a>(
    chart: &'a Chart,
    store: &'a Store,
    event_id: &'a str,
    device_id: &'a str,
    seq: i64,
    business_date: i32,
    source: Source,
    reference: &'a str,
) -> Builder<'a> {
    Builder {
        chart,
        store,
        event_id,
        device_id,
        seq,
        business_date,
        source,
        reference,
        lines: Vec::new(),
        debits: 0,
        credits: 0,
    }
}

/// Checks the first amount of an event against the store's currency (`currency_not_store_currency`)
/// before the others (`mixed_currency`).
fn first_currency(b: &Builder<'_>, first: Option<&Money>) -> Result<(), Refusal> {
    match first {
        Some(m) => b.amount(m, "first").map(|_| ()),
        None => Ok(()),
    }
}

fn tenders(
    b: &mut Builder<'_>,
    tenders: &[Tender],
    debit: bool,
    figures: &mut Figures,
) -> Result<(), Refusal> {
    for t in tenders {
        let amount = b.amount(&t.amount, "a tender")?;
        b.post(Role::TenderClearing(t.method), debit, amount, "")?;
        add_to(
            &mut figures.tenders[tender_index(t.method)],
            amount,
            "tender total",
        )?;
    }
    Ok(())
}

fn post_sale(o: &OrderCreated, store: &Store, chart: &Chart) -> Result<Posting, Refusal> {
    let mut b = builder(
        chart,
        store,
        &o.event_id,
        &o.device_id,
        o.seq,
        o.business_date,
        Source::Sale,
        &o.order_id,
    );
    first_currency(&b, o.lines.first().map(|l| &l.unit_price))?;
    let mut f = Figures {
        order_count: 1,
        ..Figures::default()
    };
    for line in &o.lines {
        positive_qty(line.qty, || {
            format!("order {} line {}", o.order_id, line.line_no)
        })?;
        let unit = b.amount(&line.unit_price, "a unit price")?;
        let amount = unit
            .checked_mul(i64::from(line.qty))
            .ok_or_else(|| overflow("unit_price x qty"))?;
        let tax = b.amount(&line.tax, "a line tax")?;
        let (gross, _) =
            tax_basis(ORDER_UNIT_PRICE_BASIS, amount, tax).ok_or_else(|| overflow("line total"))?;
        let mut discount = 0i64;
        for d in &line.discounts {
            add_to(
                &mut discount,
                b.amount(&d.amount, "a discount")?,
                "discounts",
            )?;
        }
        b.post(Role::Revenue, false, gross, &line.sku)?;
        b.post(Role::Discounts, true, discount, &line.sku)?;
        b.post(Role::TaxPayable, false, tax, &line.sku)?;
        add_to(&mut f.gross, gross, "gross")?;
        add_to(&mut f.discounts, discount, "discounts")?;
        add_to(&mut f.tax, tax, "tax")?;
    }
    tenders(&mut b, &o.tenders, true, &mut f)?;
    f.net = f
        .gross
        .checked_sub(f.discounts)
        .and_then(|n| n.checked_add(f.tax))
        .ok_or_else(|| overflow("net"))?;
    let lines = b.balanced()?;
    Ok(Posting {
        lines,
        facts: Some(DayFacts {
            device_id: o.device_id.clone(),
            business_date: o.business_date,
            currency: store.currency.clone(),
            figures: f,
        }),
        refunds_order: None,
    })
}

fn post_refund(r: &OrderRefunded, store: &Store, chart: &Chart) -> Result<Posting, Refusal> {
    let mut b = builder(
        chart,
        store,
        &r.event_id,
        &r.device_id,
        r.seq,
        r.business_date,
        Source::Refund,
        &r.refund_id,
    );
    first_currency(&b, r.lines.first().map(|l| &l.amount))?;
    let mut f = Figures {
        refund_count: 1,
        ..Figures::default()
    };
    for line in &r.lines {
        positive_qty(line.qty, || {
            format!("refund {} line {}", r.refund_id, line.line_no)
        })?;
        let amount = b.amount(&line.amount, "a refund line")?;
        let tax = b.amount(&line.tax, "a refund line tax")?;
        let (excluding, including) = tax_basis(REFUND_LINE_AMOUNT_BASIS, amount, tax)
            .ok_or_else(|| overflow("refund line"))?;
        b.post(Role::Refunds, true, excluding, &line.sku)?;
        b.post(Role::TaxPayable, true, tax, &line.sku)?;
        add_to(&mut f.refunds, including, "refunds")?;
    }
    // Refund tenders are money going back: they are not the day close's (sales) tender totals.
    let mut refund_tenders = Figures::default();
    tenders(&mut b, &r.tenders, false, &mut refund_tenders)?;
    let lines = b.balanced()?;
    Ok(Posting {
        lines,
        facts: Some(DayFacts {
            device_id: r.device_id.clone(),
            business_date: r.business_date,
            currency: store.currency.clone(),
            figures: f,
        }),
        refunds_order: Some(r.order_id.clone()),
    })
}

fn post_loyalty(l: &LoyaltyRedeemed, store: &Store, chart: &Chart) -> Result<Posting, Refusal> {
    let mut b = builder(
        chart,
        store,
        &l.event_id,
        &l.device_id,
        l.seq,
        l.business_date,
        Source::Loyalty,
        &l.redemption_id,
    );
    first_currency(&b, Some(&l.value))?;
    let value = b.amount(&l.value, "the reward value")?;
    b.post(Role::LoyaltyLiability, true, value, &l.reward_code)?;
    // Points spent towards an order settle that order's LOYALTY_POINTS tender; a reward given
    // without an order is revenue released from the liability.
    let credit = if l.order_id.is_some() {
        Role::TenderClearing(TenderMethod::LoyaltyPoints)
    } else {
        Role::Revenue
    };
    b.post(credit, false, value, &l.reward_code)?;
    Ok(Posting {
        lines: b.balanced()?,
        ..Posting::default()
    })
}

fn post_day_close(c: &StoreDayClosed, store: &Store, chart: &Chart) -> Result<Posting, Refusal> {
    let reference = format!("close-{}", c.device_id);
    let mut b = builder(
        chart,
        store,
        &c.event_id,
        &c.device_id,
        c.seq,
        c.business_date,
        Source::DayClose,
        &reference,
    );
    first_currency(&b, Some(&c.gross))?;
    for (money, what) in [
        (&c.discounts, "discounts"),
        (&c.tax, "tax"),
        (&c.net, "net"),
        (&c.refunds, "refunds"),
    ] {
        b.amount(money, what)?;
    }
    // The till's declared sales tenders leave their clearing accounts for receivables (the
    // acquirer's settlement, the cash deposit): what stays in a clearing account is a variance.
    for t in &c.tender_totals {
        let amount = b.amount(&t.amount, "a tender total")?;
        b.post(Role::Receivables, true, amount, "")?;
        b.post(Role::TenderClearing(t.method), false, amount, "")?;
    }
    Ok(Posting {
        lines: b.balanced()?,
        ..Posting::default()
    })
}

/// Books a compensation of the conflict detector on `business_date` (the local date of its
/// `effective_at` in the store's zone, decided by the caller). Without money it books nothing.
pub fn post_compensation(
    c: &Compensation,
    business_date: i32,
    store: &Store,
    chart: &Chart,
) -> Result<Posting, Refusal> {
    let Some(money) = &c.money else {
        return Ok(Posting::default());
    };
    let mut b = builder(
        chart,
        store,
        &c.compensation_id,
        "",
        -1,
        business_date,
        Source::Compensation,
        &c.compensation_id,
    );
    first_currency(&b, Some(money))?;
    let amount = b.amount(money, "the compensation")?;
    let sku = c.sku.as_deref().unwrap_or("");
    // (debit role, credit role); a negative amount (a reversal) swaps the sides in `post`.
    let roles = match c.kind {
        CompensationKind::PriceAdjustment => Some((Role::PriceVariance, Role::Revenue)),
        CompensationKind::PointsClawback => Some((Role::Receivables, Role::LoyaltyLiability)),
        CompensationKind::Backorder => Some((Role::Revenue, Role::Backorders)),
        CompensationKind::Void => Some((Role::Refunds, Role::Receivables)),
        CompensationKind::Substitute | CompensationKind::Other => None,
    };
    if let Some((debit, credit)) = roles {
        b.post(debit, true, amount, sku)?;
        b.post(credit, false, amount, sku)?;
    }
    Ok(Posting {
        lines: b.balanced()?,
        ..Posting::default()
    })
}

#[cfg(test)]
#[path = "posting_tests.rs"]
mod tests;
