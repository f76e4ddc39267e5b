//! Posting rules on hand-made events: balance, the tax basis (a full refund reverses its sale to
//! zero), currency, overflow and the other refusals.

use std::collections::BTreeMap;

use tillstream_contracts::{
    Compensation, CompensationKind, Discount, LoyaltyRedeemed, Money, OrderCreated, OrderLine,
    OrderRefunded, OrderTotals, RefundLine, StoreDayClosed, Tender, TenderMethod, TenderTotal,
};

use super::*;
use crate::core::chart::{Chart, Stores};

fn eur(m: i64) -> Money {
    Money::new(m, "EUR")
}

fn store() -> Store {
    Stores::parse("store_id,time_zone,currency,legal_entity\ns1,Europe/Berlin,EUR,E1\n")
        .unwrap()
        .get("s1")
        .unwrap()
        .clone()
}

/// Two lines: 2 x 10.00 with a 2.00 discount and 3.60 tax, 1 x 5.00 with 1.00 tax; paid by card.
pub(crate) fn sale() -> OrderCreated {
    OrderCreated {
        event_id: "e-sale".into(),
        device_id: "d1".into(),
        store_id: "s1".into(),
        seq: 1,
        occurred_at: 0,
        schema_version: 2,
        order_id: "o1".into(),
        business_date: 20_759,
        lines: vec![
            OrderLine {
                line_no: 1,
                sku: "A".into(),
                qty: 2,
                unit_price: eur(1000),
                discounts: vec![Discount {
                    code: "P".into(),
                    amount: eur(200),
                }],
                tax: eur(360),
            },
            OrderLine {
                line_no: 2,
                sku: "B".into(),
                qty: 1,
                unit_price: eur(500),
                discounts: vec![],
                tax: eur(100),
            },
        ],
        tenders: vec![Tender {
            method: TenderMethod::Card,
            amount: eur(2760),
            reference: None,
        }],
        totals: OrderTotals {
            gross: eur(2500),
            discounts: eur(200),
            tax: eur(460),
            net: eur(2760),
        },
        loyalty_member_id: None,
    }
}

/// A full refund of [`sale`] (line amounts tax included), back to the card.
fn full_refund() -> OrderRefunded {
    OrderRefunded {
        event_id: "e-refund".into(),
        device_id: "d1".into(),
        store_id: "s1".into(),
        seq: 2,
        occurred_at: 0,
        schema_version: 1,
        refund_id: "r1".into(),
        order_id: "o1".into(),
        business_date: 20_759,
        lines: vec![
            RefundLine {
                line_no: 1,
                sku: "A".into(),
                qty: 2,
                amount: eur(2160),
                tax: eur(360),
                restock: true,
            },
            RefundLine {
                line_no: 2,
                sku: "B".into(),
                qty: 1,
                amount: eur(600),
                tax: eur(100),
                restock: true,
            },
        ],
        tenders: vec![Tender {
            method: TenderMethod::Card,
            amount: eur(2760),
            reference: None,
        }],
        total: eur(2760),
        reason: "return".into(),
    }
}

fn totals(lines: &[Line]) -> (i64, i64) {
    lines
        .iter()
        .fold((0, 0), |(d, c), l| (d + l.debit_minor, c + l.credit_minor))
}

#[test]
fn a_sale_books_revenue_tax_exclusive_discounts_tax_and_its_tender() {
    let p = post_event(&sale().into(), &store(), &Chart::embedded()).unwrap();
    let by: Vec<(&str, &str, i64, i64)> = p
        .lines
        .iter()
        .map(|l| (l.role.name(), l.sku.as_str(), l.debit_minor, l.credit_minor))
        .collect();
    assert_eq!(
        by,
        vec![
            ("revenue", "A", 0, 2000),
            ("discounts", "A", 200, 0),
            ("tax_payable", "A", 0, 360),
            ("revenue", "B", 0, 500),
            ("tax_payable", "B", 0, 100),
            ("tender_clearing", "", 2760, 0),
        ]
    );
    assert_eq!(totals(&p.lines), (2960, 2960));
    assert_eq!(p.lines[5].account_code, "1020");
    let f = p.facts.unwrap().figures;
    assert_eq!(
        (f.order_count, f.gross, f.discounts, f.tax, f.net),
        (1, 2500, 200, 460, 2760)
    );
    assert_eq!(f.tenders[1], 2760);
}

#[test]
fn a_full_refund_reverses_its_sale_to_zero() {
    let chart = Chart::embedded();
    let mut lines = post_event(&sale().into(), &store(), &chart).unwrap().lines;
    let refund = post_event(&full_refund().into(), &store(), &chart).unwrap();
    assert_eq!(refund.refunds_order.as_deref(), Some("o1"));
    assert_eq!(refund.facts.as_ref().unwrap().figures.refunds, 2760);
    lines.extend(refund.lines);
    let mut balance: BTreeMap<&str, i64> = BTreeMap::new();
    for l in &lines {
        *balance.entry(l.role.name()).or_default() += l.debit_minor - l.credit_minor;
    }
    // Tax payable and the card clearing account are back to zero; revenue net of discounts and
    // refunds (the sales result) is zero.
    assert_eq!(balance["tax_payable"], 0);
    assert_eq!(balance["tender_clearing"], 0);
    assert_eq!(
        balance["revenue"] + balance["discounts"] + balance["refunds"],
        0
    );
}

#[test]
fn the_tax_rule_is_stated_once() {
    assert_eq!(
        tax_basis(ORDER_UNIT_PRICE_BASIS, 1000, 200),
        Some((1000, 1200))
    );
    assert_eq!(
        tax_basis(REFUND_LINE_AMOUNT_BASIS, 1200, 200),
        Some((1000, 1200))
    );
    assert_eq!(tax_basis(TaxBasis::Exclusive, i64::MAX, 1), None);
}

#[test]
fn a_tender_in_another_currency_is_refused_as_mixed_currency() {
    let mut o = sale();
    o.tenders[0].amount = Money::new(2760, "USD");
    let r = post_event(&o.into(), &store(), &Chart::embedded()).unwrap_err();
    assert_eq!(r.reason, "mixed_currency");
    let mut o = sale();
    for l in &mut o.lines {
        l.unit_price.currency = "USD".into();
    }
    let r = post_event(&o.into(), &store(), &Chart::embedded()).unwrap_err();
    assert_eq!(r.reason, "currency_not_store_currency");
}

#[test]
fn tenders_that_do_not_pay_the_lines_are_refused_with_the_figures() {
    let mut o = sale();
    o.tenders[0].amount = eur(2700);
    let r = post_event(&o.into(), &store(), &Chart::embedded()).unwrap_err();
    assert_eq!(r.reason, "unbalanced");
    assert!(
        r.detail.contains("2900") && r.detail.contains("2960"),
        "{}",
        r.detail
    );
}

#[test]
fn an_overflow_is_refused_never_wrapped() {
    let mut o = sale();
    o.lines[0].unit_price = eur(i64::MAX / 2 + 1);
    let r = post_event(&o.into(), &store(), &Chart::embedded()).unwrap_err();
    assert_eq!(r.reason, "overflow");
    let mut o = sale();
    o.lines[1].unit_price = eur(i64::MAX - 10);
    let r = post_event(&o.into(), &store(), &Chart::embedded()).unwrap_err();
    assert_eq!(r.reason, "overflow");
    let mut o = sale();
    o.lines[0].qty = 0;
    assert_eq!(
        post_event(&o.into(), &store(), &Chart::embedded())
            .unwrap_err()
            .reason,
        "invalid_amount"
    );
}

#[test]
fn a_redemption_releases_the_liability_and_a_day_close_settles_the_clearing_accounts() {
    let chart = Chart::embedded();
    let redeemed = LoyaltyRedeemed {
        event_id: "e-l".into(),
        device_id: "d1".into(),
        store_id: "s1".into(),
        seq: 3,
        occurred_at: 0,
        schema_version: 1,
        redemption_id: "lr1".into(),
        member_id: "M1".into(),
        points: 500,
        reward_code: "COFFEE".into(),
        value: eur(350),
        order_id: None,
        business_date: 20_759,
    };
    let p = post_event(&redeemed.clone().into(), &store(), &chart).unwrap();
    let roles: Vec<&str> = p.lines.iter().map(|l| l.role.name()).collect();
    assert_eq!(roles, ["loyalty_liability", "revenue"]);
    let towards_order = LoyaltyRedeemed {
        order_id: Some("o1".into()),
        ..redeemed
    };
    let p = post_event(&towards_order.into(), &store(), &chart).unwrap();
    assert_eq!(p.lines[1].tender, "LOYALTY_POINTS");

    let close = StoreDayClosed {
        event_id: "e-c".into(),
        device_id: "d1".into(),
        store_id: "s1".into(),
        seq: 4,
        occurred_at: 0,
        schema_version: 1,
        business_date: 20_759,
        order_count: 1,
        refund_count: 0,
        gross: eur(2500),
        discounts: eur(200),
        tax: eur(460),
        net: eur(2760),
        refunds: eur(0),
        tender_totals: vec![TenderTotal {
            method: TenderMethod::Card,
            amount: eur(2760),
        }],
        first_seq: 1,
        last_seq: 3,
    };
    let p = post_event(&close.clone().into(), &store(), &chart).unwrap();
    assert_eq!(totals(&p.lines), (2760, 2760));
    assert_eq!(p.lines[1].tender, "CARD");
    let mut usd = close;
    usd.tax = Money::new(460, "USD");
    assert_eq!(
        post_event(&usd.into(), &store(), &chart)
            .unwrap_err()
            .reason,
        "mixed_currency"
    );
}

#[test]
fn compensations_post_by_kind_and_a_reversal_swaps_the_sides() {
    let chart = Chart::embedded();
    let c = Compensation {
        compensation_id: "cmp1".into(),
        conflict_id: "cf1".into(),
        kind: CompensationKind::PriceAdjustment,
        store_id: "s1".into(),
        sku: Some("A".into()),
        qty: 1,
        money: Some(eur(150)),
        evidence_event_ids: vec![],
        reason: "price".into(),
        reverses: None,
        effective_at: 0,
        issued_by: "conflict-detector".into(),
    };
    let p = post_compensation(&c, 20_759, &store(), &chart).unwrap();
    let sides: Vec<(&str, i64, i64)> = p
        .lines
        .iter()
        .map(|l| (l.role.name(), l.debit_minor, l.credit_minor))
        .collect();
    assert_eq!(sides, vec![("price_variance", 150, 0), ("revenue", 0, 150)]);
    let reversal = Compensation {
        money: Some(eur(-150)),
        reverses: Some("cmp1".into()),
        ..c.clone()
    };
    let p = post_compensation(&reversal, 20_759, &store(), &chart).unwrap();
    assert_eq!(
        (p.lines[0].credit_minor, p.lines[1].debit_minor),
        (150, 150)
    );
    let substitute = Compensation {
        kind: CompensationKind::Substitute,
        ..c.clone()
    };
    assert!(
        post_compensation(&substitute, 1, &store(), &chart)
            .unwrap()
            .lines
            .is_empty()
    );
    let no_money = Compensation { money: None, ..c };
    assert!(
        post_compensation(&no_money, 1, &store(), &chart)
            .unwrap()
            .lines
            .is_empty()
    );
}
