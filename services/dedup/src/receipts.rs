//! Sync receipts, the pure part: a device's [`DeviceReceipt`] from its sequence state, and the
//! [`ReceiptThrottle`] that bounds their cost (at most one per device per batch, and per device at
//! most one per `interval_ms`; the newest state of a device held back goes out once its interval has
//! passed). No I/O, no clock of its own: times are passed in.
//!
//! Delivery guarantee: none by itself. The processor offers receipts only for batches whose changelog
//! delta is delivered, so a receipt never covers an event the log could still lose; the sender
//! (`receipt_sender`) publishes them at-least-once, in order per device.

use std::collections::{BTreeMap, HashMap};

use tillstream_contracts::{DeviceReceipt, SeqRange};

use crate::core::DeviceState;

/// The receipt that describes `state` (the device's epoch, baseline, highest seq and open gaps).
pub fn receipt_of(device_id: &str, state: &DeviceState, issued_at: i64) -> DeviceReceipt {
    DeviceReceipt {
        device_id: device_id.to_string(),
        store_id: state.store_id.clone(),
        epoch: state.epoch as i32,
        epoch_started_at: state.epoch_key,
        from_seq: state.base,
        acked_through_seq: state.high,
        missing: state
            .gaps
            .iter()
            .map(|(from, r)| SeqRange {
                from_seq: *from,
                to_seq: r.to,
            })
            .collect(),
        issued_at,
    }
}

/// Rate limit per device, newest state wins.
#[derive(Debug)]
pub struct ReceiptThrottle {
    /// Least time between two receipts of one device (wall clock, ms).
    interval_ms: i64,
    /// When each device's last receipt was released.
    last_released: HashMap<String, i64>,
    /// Receipts held back, newest per device.
    held: BTreeMap<String, DeviceReceipt>,
}

impl ReceiptThrottle {
    pub fn new(interval_ms: u64) -> Self {
        ReceiptThrottle {
            interval_ms: interval_ms as i64,
            last_released: HashMap::new(),
            held: BTreeMap::new(),
        }
    }

    /// Offers the newest receipts (one per device); returns those to publish now. The rest are held
    /// (replacing any older held receipt of the same device).
    pub fn offer(&mut self, receipts: Vec<DeviceReceipt>, now: i64) -> Vec<DeviceReceipt> {
        for r in receipts {
            self.held.insert(r.device_id.clone(), r);
        }
        self.due(now)
    }

    /// Releases every held receipt whose device's interval has passed.
    pub fn due(&mut self, now: i64) -> Vec<DeviceReceipt> {
        let ready: Vec<String> = self
            .held
            .keys()
            .filter(|d| self.may_release(d, now))
            .cloned()
            .collect();
        ready
            .into_iter()
            .filter_map(|d| {
                self.last_released.insert(d.clone(), now);
                self.held.remove(&d)
            })
            .collect()
    }

    /// Everything held, regardless of the interval (at shutdown).
    pub fn drain(&mut self) -> Vec<DeviceReceipt> {
        std::mem::take(&mut self.held).into_values().collect()
    }

    /// Puts back receipts that could not be published (they stay newest unless replaced).
    pub fn put_back(&mut self, receipts: Vec<DeviceReceipt>) {
        for r in receipts {
            self.held.entry(r.device_id.clone()).or_insert(r);
        }
    }

    /// When the earliest held receipt may go out (`None` when nothing is held).
    pub fn next_due(&self) -> Option<i64> {
        self.held
            .keys()
            .map(|d| {
                self.last_released
                    .get(d)
                    .map_or(i64::MIN, |t| t + self.interval_ms)
            })
            .min()
    }

    pub fn held(&self) -> usize {
        self.held.len()
    }

    fn may_release(&self, device: &str, now: i64) -> bool {
        self.last_released
            .get(device)
            .is_none_or(|t| now >= t + self.interval_ms)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::core::GapRange;

    fn state(base: i64, high: i64, gaps: &[(i64, i64)]) -> DeviceState {
        DeviceState {
            store_id: "s1".into(),
            epoch: 2,
            epoch_key: 1_000,
            base,
            high,
            gaps: gaps
                .iter()
                .map(|(f, t)| {
                    (
                        *f,
                        GapRange {
                            to: *t,
                            opened_at: 0,
                            published: None,
                        },
                    )
                })
                .collect::<BTreeMap<_, _>>(),
            last_seen: 0,
            updated_offset: 0,
            logged_at: 0,
        }
    }

    fn rec(device: &str, high: i64) -> DeviceReceipt {
        receipt_of(device, &state(1, high, &[]), 0)
    }

    #[test]
    fn a_receipt_covers_what_the_state_holds_and_nothing_else() {
        let r = receipt_of("d1", &state(3, 20, &[(5, 6), (9, 9)]), 77);
        assert_eq!((r.epoch, r.epoch_started_at, r.issued_at), (2, 1_000, 77));
        let covered: Vec<i64> = (0..25).filter(|s| r.covers(*s)).collect();
        assert_eq!(
            covered,
            vec![3, 4, 7, 8, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20]
        );
        assert_eq!(
            r.missing,
            vec![
                SeqRange {
                    from_seq: 5,
                    to_seq: 6
                },
                SeqRange {
                    from_seq: 9,
                    to_seq: 9
                }
            ]
        );
    }

    #[test]
    fn one_receipt_per_device_per_interval_newest_wins() {
        let mut t = ReceiptThrottle::new(1_000);
        // First sight of two devices: both go out at once.
        let out = t.offer(vec![rec("a", 1), rec("b", 1)], 10_000);
        assert_eq!(out.len(), 2);
        // Within the interval: held; a newer one replaces the held one.
        assert!(t.offer(vec![rec("a", 2)], 10_100).is_empty());
        assert!(t.offer(vec![rec("a", 3)], 10_200).is_empty());
        assert_eq!(t.held(), 1);
        assert_eq!(t.next_due(), Some(11_000));
        assert!(t.due(10_999).is_empty());
        let out = t.due(11_000);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].acked_through_seq, 3, "the newest state is released");
        assert_eq!(t.next_due(), None);
        // Failed publishes are put back, but never over a newer held receipt.
        t.offer(vec![rec("b", 9)], 10_500);
        t.put_back(vec![rec("b", 5), rec("c", 4)]);
        let mut drained = t.drain();
        drained.sort_by(|x, y| x.device_id.cmp(&y.device_id));
        assert_eq!(
            drained
                .iter()
                .map(|r| (r.device_id.as_str(), r.acked_through_seq))
                .collect::<Vec<_>>(),
            vec![("b", 9), ("c", 4)]
        );
    }
}
