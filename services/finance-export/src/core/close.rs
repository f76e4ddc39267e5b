//! When a store-day closes: as soon as every device that traded on it has sent its
//! `StoreDayClosed`, or at the store's local cut-off plus the configured grace when one never does
//! (those devices are reported "missing close"). Pure: the caller passes the clock.
//!
//! A store's days export in date order (the caller asks about its earliest open day first), so the
//! lines of a day are never split over two day files by a later day overtaking it.

use std::collections::BTreeSet;

/// What the ledger knows about one store's business day.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StoreDay {
    pub store_id: String,
    pub business_date: i32,
    /// Devices with a sale, refund or redemption on the day.
    pub traded: BTreeSet<String>,
    /// Devices that sent a `StoreDayClosed` for the day.
    pub closed: BTreeSet<String>,
}

/// Why a store-day closed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CloseReason {
    /// Every device that traded sent its day close.
    AllDevicesClosed,
    /// The cut-off plus grace passed; these devices traded but never closed.
    Cutoff { missing: Vec<String> },
}

impl CloseReason {
    pub fn name(&self) -> &'static str {
        match self {
            CloseReason::AllDevicesClosed => "all_devices_closed",
            CloseReason::Cutoff { .. } => "cutoff",
        }
    }
}

/// The decision to close a store-day.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CloseDecision {
    pub reason: CloseReason,
}

/// The UTC instant (ms) of `business_date`'s cut-off: the next calendar day at `cutoff` (`HH:MM`,
/// local time of `tz`). `None` when `cutoff` is not `HH:MM`.
pub fn cutoff_ms(business_date: i32, tz: &jiff::tz::TimeZone, cutoff: &str) -> Option<i64> {
    let (h, m) = cutoff.split_once(':')?;
    let (h, m): (i8, i8) = (h.parse().ok()?, m.parse().ok()?);
    let day = jiff::civil::date(1970, 1, 1)
        .checked_add(jiff::Span::new().days(i64::from(business_date) + 1))
        .ok()?;
    let local = day.to_datetime(jiff::civil::Time::new(h, m, 0, 0).ok()?);
    let zoned = local.to_zoned(tz.clone()).ok()?;
    Some(zoned.timestamp().as_millisecond())
}

/// Whether `day` closes now: every trading device closed (a day with closes and no trading
/// closes too), or `now_ms` is at or past `cutoff_ms + grace_ms`.
pub fn close_decision(
    day: &StoreDay,
    cutoff_ms: i64,
    grace_ms: i64,
    now_ms: i64,
) -> Option<CloseDecision> {
    let known = !day.traded.is_empty() || !day.closed.is_empty();
    if known && day.traded.is_subset(&day.closed) {
        return Some(CloseDecision {
            reason: CloseReason::AllDevicesClosed,
        });
    }
    if now_ms >= cutoff_ms.saturating_add(grace_ms) {
        return Some(CloseDecision {
            reason: CloseReason::Cutoff {
                missing: day.traded.difference(&day.closed).cloned().collect(),
            },
        });
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn day(traded: &[&str], closed: &[&str]) -> StoreDay {
        StoreDay {
            store_id: "s1".into(),
            business_date: 20_759,
            traded: traded.iter().map(|s| s.to_string()).collect(),
            closed: closed.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn the_cutoff_is_the_next_local_day_in_the_stores_zone() {
        let berlin = jiff::tz::TimeZone::get("Europe/Berlin").unwrap();
        // 2026-11-02 -> cut-off 2026-11-03 04:00 CET = 03:00 UTC.
        let c = cutoff_ms(20_759, &berlin, "04:00").unwrap();
        assert_eq!(c, 1_793_674_800_000);
        let utc = cutoff_ms(20_759, &jiff::tz::TimeZone::UTC, "04:00").unwrap();
        assert_eq!(utc - c, 3_600_000);
        assert_eq!(cutoff_ms(20_759, &berlin, "4h"), None);
        assert_eq!(cutoff_ms(20_759, &berlin, "25:00"), None);
    }

    #[test]
    fn a_day_closes_when_every_trading_device_closed_or_at_cutoff_plus_grace() {
        let cutoff = 1_000_000;
        assert_eq!(
            close_decision(&day(&["a", "b"], &["a"]), cutoff, 10, 0),
            None
        );
        assert_eq!(
            close_decision(&day(&["a", "b"], &["a", "b"]), cutoff, 10, 0)
                .unwrap()
                .reason,
            CloseReason::AllDevicesClosed
        );
        // A device that closed without trading does not hold the day open.
        assert_eq!(
            close_decision(&day(&["a"], &["a", "c"]), cutoff, 10, 0)
                .unwrap()
                .reason,
            CloseReason::AllDevicesClosed
        );
        assert_eq!(
            close_decision(&day(&["a", "b"], &["a"]), cutoff, 10, cutoff + 9),
            None
        );
        assert_eq!(
            close_decision(&day(&["a", "b"], &["a"]), cutoff, 10, cutoff + 10)
                .unwrap()
                .reason,
            CloseReason::Cutoff {
                missing: vec!["b".into()]
            }
        );
        // Nothing known: only the cut-off closes it.
        assert_eq!(close_decision(&day(&[], &[]), cutoff, 10, 0), None);
    }
}
