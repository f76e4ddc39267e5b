//! The run's calendar: the store events are spread evenly over the trading days, each day's share
//! over its trading hours (06:00..20:00 of the start's time of day). Pure.

use super::{DAY_MS, FleetSpec, T0};

/// Trading hours per day: events fall between the opening time and 14 hours later.
const TRADING_MS: i64 = 14 * 3_600_000;

/// Where the n-th store event of a run falls: its time and its business date.
pub(super) struct Timeline {
    /// Opening time (UTC ms) of the first trading day.
    pub(super) start_ms: i64,
    /// Business date (days since the epoch) of the first trading day.
    first_business_date: i32,
    days: u32,
    /// Store events of the whole run (at least four per device).
    pub(super) total_events: u64,
}

impl Timeline {
    pub(super) fn new(spec: &FleetSpec, devices: usize) -> Self {
        let start_ms = spec.start_ms.unwrap_or(T0);
        Timeline {
            start_ms,
            first_business_date: start_ms.div_euclid(DAY_MS) as i32,
            days: spec.days.max(1),
            total_events: spec.events.max(devices as u64 * 4),
        }
    }

    /// The trading day (0-based) of the n-th event.
    fn day_index(&self, n: u64) -> i32 {
        (n * u64::from(self.days) / self.total_events) as i32
    }

    /// The business date of the first trading day.
    pub(super) fn first_business_date(&self) -> i32 {
        self.first_business_date
    }

    /// The business date of the n-th event.
    pub(super) fn business_date(&self, n: u64) -> i32 {
        self.first_business_date + self.day_index(n)
    }

    /// When the n-th event happens (before any device clock skew).
    pub(super) fn time_of(&self, n: u64) -> i64 {
        let day = self.day_index(n);
        let per_day = self.total_events / u64::from(self.days);
        let within = n - u64::from(day as u32) * per_day;
        self.start_ms
            + i64::from(day) * DAY_MS
            + (within as i64 * TRADING_MS) / per_day.max(1) as i64
    }

    /// When devices close `business_date`: a minute after its trading hours.
    pub(super) fn close_time(&self, business_date: i32) -> i64 {
        self.start_ms
            + i64::from(business_date - self.first_business_date) * DAY_MS
            + TRADING_MS
            + 60_000
    }
}
