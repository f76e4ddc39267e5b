//! Money and quantity arithmetic of the rules: integer minor units, every operation checked. An
//! input whose amounts would overflow is refused at admission ([`Rejected`], dead-lettered by the
//! service with the reason), never wrapped. Pure; no I/O.
//!
//! The admission bounds make every later computation fit by construction: a price difference
//! times a quantity is at most `2 * MAX_UNIT_MINOR * MAX_QTY`, far below `i64::MAX`. The rules still
//! use `checked_*` and turn a failure into [`Overflow`] instead of trusting the bound.

use tillstream_contracts::Money;

use super::Rejected;

/// Largest unit price (absolute, minor units) a sale line or price list item may carry: ten billion
/// in major units. Above it the input is refused (`money_out_of_range`).
pub const MAX_UNIT_MINOR: i64 = 1_000_000_000_000;
/// Largest quantity of one line (units or points).
pub const MAX_QTY: i64 = 1_000_000;

const _: () = assert!(
    (2 * MAX_UNIT_MINOR as i128) * (MAX_QTY as i128) < i64::MAX as i128,
    "the admission bounds must keep every rule computation inside i64"
);

/// A price as the rules keep it: minor units and a three-letter currency, no allocation (the
/// contract's [`Money`] is converted once, when an event is taken in).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Amount {
    pub minor: i64,
    pub currency: [u8; 3],
}

impl Amount {
    /// From an admitted `Money` (its currency has three letters; anything else is kept as `???`).
    pub fn of(m: &Money) -> Amount {
        let currency = m.currency.as_bytes().try_into().unwrap_or(*b"???");
        Amount {
            minor: m.amount_minor,
            currency,
        }
    }

    pub fn currency(&self) -> &str {
        std::str::from_utf8(&self.currency).unwrap_or("???")
    }

    pub fn to_money(self) -> Money {
        Money::new(self.minor, self.currency())
    }
}

/// A checked computation that did not fit.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("arithmetic overflow: {0}")]
pub struct Overflow(pub String);

impl From<Overflow> for Rejected {
    fn from(o: Overflow) -> Self {
        Rejected::new(super::reason::MONEY_OVERFLOW, o.0)
    }
}

/// Checks a unit price at admission (`what` names it in a refusal; only called then).
pub fn admit_unit(what: impl Fn() -> String, m: &Money) -> Result<(), Rejected> {
    if m.amount_minor
        .checked_abs()
        .is_none_or(|a| a > MAX_UNIT_MINOR)
    {
        return Err(Rejected::new(
            super::reason::MONEY_OUT_OF_RANGE,
            format!(
                "{}: {} minor units is beyond the bound of {MAX_UNIT_MINOR}",
                what(),
                m.amount_minor
            ),
        ));
    }
    if m.currency.len() != 3 {
        return Err(Rejected::new(
            super::reason::INVALID_CURRENCY,
            format!(
                "{}: currency {:?} is not an ISO 4217 code",
                what(),
                m.currency
            ),
        ));
    }
    Ok(())
}

/// Checks a quantity at admission: `1..=MAX_QTY` (or `0..=` when `zero_ok`).
pub fn admit_qty(what: impl Fn() -> String, qty: i64, zero_ok: bool) -> Result<(), Rejected> {
    let low = if zero_ok { 0 } else { 1 };
    if qty < low || qty > MAX_QTY {
        return Err(Rejected::new(
            super::reason::INVALID_QUANTITY,
            format!("{}: quantity {qty} is outside {low}..={MAX_QTY}", what()),
        ));
    }
    Ok(())
}

/// `unit * qty`, checked.
pub fn times(unit: &Money, qty: i64) -> Result<Money, Overflow> {
    unit.amount_minor
        .checked_mul(qty)
        .map(|a| Money::new(a, &unit.currency))
        .ok_or_else(|| Overflow(format!("{} x {qty}", unit.amount_minor)))
}

/// `(approved - charged) * qty`, checked; `None` when the currencies differ.
pub fn difference_times(
    approved: &Money,
    charged: &Money,
    qty: i64,
) -> Result<Option<Money>, Overflow> {
    let Some(diff) = approved.checked_sub(charged) else {
        if approved.currency != charged.currency {
            return Ok(None);
        }
        return Err(Overflow(format!(
            "{} - {}",
            approved.amount_minor, charged.amount_minor
        )));
    };
    times(&diff, qty).map(Some)
}

/// `-m`, checked.
pub fn negate(m: &Money) -> Result<Money, Overflow> {
    m.amount_minor
        .checked_neg()
        .map(|a| Money::new(a, &m.currency))
        .ok_or_else(|| Overflow(format!("-({})", m.amount_minor)))
}

/// `a + b` for stock quantities, checked.
pub fn add_qty(a: i64, b: i64) -> Result<i64, Overflow> {
    a.checked_add(b)
        .ok_or_else(|| Overflow(format!("{a} + {b}")))
}

/// `a - b` for stock quantities, checked.
pub fn sub_qty(a: i64, b: i64) -> Result<i64, Overflow> {
    a.checked_sub(b)
        .ok_or_else(|| Overflow(format!("{a} - {b}")))
}

/// `12.99 EUR`.
pub fn show(m: &Money) -> String {
    format!("{} {}", m.to_decimal_string(), m.currency)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arithmetic_is_checked_never_wrapped() {
        let big = Money::new(i64::MAX / 2 + 1, "EUR");
        assert!(times(&big, 2).is_err());
        assert_eq!(
            times(&Money::new(499, "EUR"), 3).unwrap().amount_minor,
            1497
        );
        assert!(negate(&Money::new(i64::MIN, "EUR")).is_err());
        assert!(difference_times(&Money::new(i64::MIN, "EUR"), &Money::new(1, "EUR"), 1).is_err());
        assert_eq!(
            difference_times(&Money::new(500, "EUR"), &Money::new(450, "EUR"), 3)
                .unwrap()
                .unwrap()
                .amount_minor,
            150
        );
        assert_eq!(
            difference_times(&Money::new(500, "EUR"), &Money::new(450, "USD"), 3).unwrap(),
            None,
            "currencies never mix"
        );
        assert!(add_qty(i64::MAX, 1).is_err());
        assert!(sub_qty(i64::MIN, 1).is_err());
    }

    #[test]
    fn admission_bounds() {
        let x = || "x".to_string();
        assert!(admit_unit(x, &Money::new(MAX_UNIT_MINOR, "EUR")).is_ok());
        let r = admit_unit(x, &Money::new(MAX_UNIT_MINOR + 1, "EUR")).unwrap_err();
        assert_eq!(r.reason, crate::core::reason::MONEY_OUT_OF_RANGE);
        assert!(r.detail.starts_with("x: "));
        assert!(admit_unit(x, &Money::new(i64::MIN, "EUR")).is_err());
        assert!(admit_unit(x, &Money::new(1, "EURO")).is_err());
        assert!(admit_qty(x, 0, false).is_err());
        assert!(admit_qty(x, 0, true).is_ok());
        assert!(admit_qty(x, MAX_QTY + 1, true).is_err());
        assert_eq!(show(&Money::new(-1299, "EUR")), "-12.99 EUR");
    }
}
