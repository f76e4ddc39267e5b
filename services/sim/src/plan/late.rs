//! Late tills: a till per store (the first `late_tills` stores) that trades on the first business
//! date — a receipt of a sku no other till sells, then two sales of it — and closes that day like
//! every till, but whose uplink comes up only after the store's day was exported. Its sales and
//! its day close are what the finance export must deliver as adjustment lines of a later export;
//! its own sku keeps it out of every other till's stock and conflict verdicts. Pure.

use super::fleet::{FleetGenerator, PlannedDevice, sku_name, store_name};
use super::timeline::Timeline;

const MINUTE_MS: i64 = 60_000;

impl FleetGenerator {
    /// Adds the late tills and records their trading (their day close comes with everyone's).
    pub(super) fn trade_late(&mut self, timeline: &Timeline) {
        let date = timeline.first_business_date();
        let close = timeline.close_time(date);
        for s in 0..self.spec.late_tills.min(self.spec.stores) {
            let n = self.spec.devices_per_store + 1;
            self.devices
                .push(PlannedDevice::new(store_name(s), n, 2, 0, true));
            let d = self.devices.len() - 1;
            let sku = self.spec.skus + s;
            let receipt = self.receipt(d, close - 40 * MINUTE_MS, vec![(sku_name(sku), 10)]);
            self.record(d, receipt);
            for (k, qty) in [(1i64, 1), (2, 2)] {
                let order =
                    self.order_created(d, close - (30 - 5 * k) * MINUTE_MS, date, vec![(sku, qty)]);
                self.record(d, order);
            }
        }
    }
}
