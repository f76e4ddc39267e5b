//! Lost events: the store events devices never publish (each one sequence gap the dedup must
//! report), and the truth recomputed from scratch without them. Pure.

use rand::seq::SliceRandom;
use tillstream_contracts::DeviceEvent;

use super::CURRENCY;
use super::fleet::FleetGenerator;
use crate::truth::{Gap, Truth};

impl FleetGenerator {
    /// Marks `spec.missing` events lost, drawn from the candidates: never the first or last events
    /// of a device, never constructed ones (or the one after), never a day close, and never adjacent
    /// to each other, so each loss is exactly one gap of one seq.
    pub(super) fn lose_events(&mut self) {
        let mut candidates: Vec<(usize, usize)> = Vec::new();
        for (d, dev) in self.devices.iter().enumerate().filter(|(_, dev)| !dev.late) {
            for i in (2..dev.events.len().saturating_sub(2)).step_by(3) {
                if !dev.events[i].force_offline
                    && !dev.events[i - 1].force_offline
                    && !matches!(dev.events[i].event, DeviceEvent::StoreDayClosed(_))
                {
                    candidates.push((d, i));
                }
            }
        }
        candidates.shuffle(&mut self.rng);
        let mut lost: Vec<(usize, usize)> = candidates
            .into_iter()
            .take(self.spec.missing as usize)
            .collect();
        lost.sort();
        for (d, i) in &lost {
            let planned = &mut self.devices[*d].events[*i];
            planned.missing = true;
            let e = &planned.event;
            self.truth.gaps.insert(Gap {
                device_id: e.device_id().to_string(),
                store_id: e.store_id().to_string(),
                from_seq: e.seq(),
                to_seq: e.seq(),
            });
        }
    }

    /// The truth was applied for every event as it was recorded: take the lost ones back out by
    /// recomputing it from the published events and heartbeats, keeping what planning recorded
    /// beside the events (gaps, oversells, constructed conflicts, price lists).
    pub(super) fn recompute_truth_without_lost_events(&mut self) {
        let mut truth = Truth::new(CURRENCY);
        truth.gaps = std::mem::take(&mut self.truth.gaps);
        truth.oversold = std::mem::take(&mut self.truth.oversold);
        truth.conflicts = std::mem::take(&mut self.truth.conflicts);
        truth.price_lists = std::mem::take(&mut self.truth.price_lists);
        truth.late_events = std::mem::take(&mut self.truth.late_events);
        for dev in &self.devices {
            for p in dev.events.iter().filter(|p| !p.missing) {
                truth.apply(&p.event);
            }
            for heartbeat in &dev.heartbeats {
                truth.apply(&heartbeat.event);
            }
        }
        truth.settle_reconciliation();
        self.truth = truth;
    }
}
