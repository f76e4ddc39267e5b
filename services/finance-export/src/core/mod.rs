//! The pure core of the finance export: events in, decisions out. No I/O, no clock (the caller
//! passes `now_ms`), so every rule is unit-tested on hand-made events.
//!
//! - `chart`: the chart of accounts ([`Chart`]) and the store master data ([`Stores`]);
//! - `posting`: one event -> balanced ledger lines ([`post_event`], [`post_compensation`]), with
//!   the tax basis written once ([`tax_basis`]) and every sum overflow-checked;
//! - `close`: when a store-day closes ([`close_decision`]) and when it is a store's turn to export;
//! - `recon`: a device's own day totals against the ledger ([`reconcile`]).
//!
//! Delivery guarantee: none of its own; the same inputs always give the same outputs, which is
//! what makes the ledger and the day files reproducible.

pub mod chart;
pub mod close;
pub mod posting;
pub mod recon;

pub use chart::{Account, Chart, ChartError, Role, Store, Stores};
pub use close::{CloseDecision, CloseReason, StoreDay, close_decision, cutoff_ms};
pub use posting::{
    DayFacts, Line, Posting, Refusal, Source, TENDER_METHODS, post_compensation, post_event,
    tax_basis, tender_name,
};
pub use recon::{
    CloseFigures, DeviceDay as DeviceDayInput, Difference, Figures, ReconRecord, ReconStatus,
    reconcile,
};

/// Days since 1970-01-01 as an ISO date (`2026-11-02`).
pub fn iso_date(days: i32) -> String {
    let date = jiff::civil::date(1970, 1, 1)
        .checked_add(jiff::Span::new().days(i64::from(days)))
        .unwrap_or(jiff::civil::date(1970, 1, 1));
    date.to_string()
}

/// An ISO date (`2026-11-02`) as days since 1970-01-01.
pub fn parse_iso_date(text: &str) -> Option<i32> {
    let date: jiff::civil::Date = text.parse().ok()?;
    let span = jiff::civil::date(1970, 1, 1)
        .until((jiff::Unit::Day, date))
        .ok()?;
    Some(span.get_days())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iso_dates_round_trip() {
        assert_eq!(iso_date(0), "1970-01-01");
        assert_eq!(iso_date(20_759), "2026-11-02");
        assert_eq!(parse_iso_date("2026-11-02"), Some(20_759));
        assert_eq!(parse_iso_date("nope"), None);
    }
}
