//! A POS device's local event store, as the vendor contract asks (`schemas/json/README.md`): every
//! recorded store event is kept until a sync receipt from the cloud covers it, not merely until the
//! MQTT PUBACK. Pure: times are passed in, nothing is sent from here; the publisher sends what these
//! functions return.
//!
//! - A receipt covers seq `s` when `from_seq <= s <= acked_through_seq` and `s` is in none of its
//!   missing ranges; covered events are forgotten.
//! - The missing ranges a receipt lists are re-sent at once (what the device still holds of them),
//!   unless they were sent less than [`MISSING_DEBOUNCE`] ago (a receipt issued before the re-send
//!   arrived lists them again).
//! - When the cloud has been quiet about this device for `resend_after` (no receipt since then, nor
//!   since the last (re)connect), the device probes: it re-sends the oldest and the newest
//!   [`QUIET_PROBE`] of the events no receipt covers that were last sent at least that long ago.
//!   This recovers a loss no later seq reveals (the last events before a broker crash): the newest
//!   re-sent event makes the rest of such a loss a gap, which the next receipt lists missing; the
//!   oldest make sure the cloud's first sight of a device it never heard from is its first held
//!   event. Only a probe, not everything held: a pipeline that is only slow (a fleet-wide backlog,
//!   its receipts minutes away) holds the whole backlog already, and re-sending all of it on every
//!   quiet spell made a fleet-wide backlog carry much of itself twice (BENCHMARKS.md, "Scale").
//!   Waiting for quiet, not merely for age, keeps a device whose receipts are advancing through a
//!   backlog from probing at all. Each probe doubles the quiet wait (up to [`MAX_QUIET_WAIT`])
//!   until a receipt arrives.
//! - A receipt of an earlier numbering (its epoch started before this device's first event) is
//!   ignored.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use tillstream_contracts::DeviceReceipt;

/// Missing events are not re-sent twice within this long (a receipt may list them again before the
/// first re-send has crossed the pipeline).
pub const MISSING_DEBOUNCE: Duration = Duration::from_secs(1);

/// The longest a device waits, after re-sending on quiet, before re-sending again without a receipt.
pub const MAX_QUIET_WAIT: Duration = Duration::from_secs(300);

/// How many of its oldest, and how many of its newest, uncovered events a quiet device re-sends.
pub const QUIET_PROBE: usize = 16;

/// One recorded event the device still holds.
#[derive(Debug, Clone)]
pub struct HeldEvent {
    pub topic: String,
    pub payload: Vec<u8>,
    /// When it was last handed to the MQTT client.
    pub last_sent: Instant,
}

/// What the device holds, by seq.
#[derive(Debug)]
pub struct DeviceLedger {
    /// `occurred_at` of this device's first event (its current numbering).
    numbering_started_at: i64,
    held: BTreeMap<i64, HeldEvent>,
    resend_after: Duration,
    /// How long the current quiet must last before a re-send: `resend_after`, doubled after each
    /// re-send on quiet, back to `resend_after` with the next receipt.
    quiet_wait: Duration,
    /// The last sign of progress: an applied receipt, or a (re)connect.
    quiet_since: Instant,
    /// Receipts applied (ignored ones not counted).
    pub receipts: u64,
    /// Events re-sent because a receipt listed them missing.
    pub resent_missing: u64,
    /// Events re-sent because nothing covered them in time.
    pub resent_overdue: u64,
}

impl DeviceLedger {
    pub fn new(numbering_started_at: i64, resend_after: Duration, now: Instant) -> Self {
        DeviceLedger {
            numbering_started_at,
            held: BTreeMap::new(),
            resend_after,
            quiet_wait: resend_after,
            quiet_since: now,
            receipts: 0,
            resent_missing: 0,
            resent_overdue: 0,
        }
    }

    /// The event `seq` was handed to the MQTT client (first time or again).
    pub fn sent(&mut self, seq: i64, topic: &str, payload: &[u8], now: Instant) {
        self.held
            .entry(seq)
            .and_modify(|h| h.last_sent = now)
            .or_insert_with(|| HeldEvent {
                topic: topic.to_string(),
                payload: payload.to_vec(),
                last_sent: now,
            });
    }

    /// Applies a receipt: forgets what it covers and returns the held events it lists missing
    /// (seq, topic, payload) to re-send now, marked as sent.
    pub fn apply(&mut self, r: &DeviceReceipt, now: Instant) -> Vec<(i64, String, Vec<u8>)> {
        if r.epoch_started_at < self.numbering_started_at {
            return Vec::new();
        }
        self.receipts += 1;
        self.quiet_since = now;
        self.quiet_wait = self.resend_after;
        self.held.retain(|seq, _| !r.covers(*seq));
        let mut out = Vec::new();
        // An inverted range names nothing (and must not panic the device).
        for range in r.missing.iter().filter(|m| m.from_seq <= m.to_seq) {
            for (seq, h) in self.held.range_mut(range.from_seq..=range.to_seq) {
                if now.duration_since(h.last_sent) >= MISSING_DEBOUNCE {
                    h.last_sent = now;
                    out.push((*seq, h.topic.clone(), h.payload.clone()));
                }
            }
        }
        self.resent_missing += out.len() as u64;
        out
    }

    /// A new connection to the broker: the retained receipt is on its way.
    pub fn connected(&mut self, now: Instant) {
        self.quiet_since = now;
    }

    /// After the quiet wait (`resend_after`, doubled by each re-send on quiet), the probe: the
    /// oldest and the newest [`QUIET_PROBE`] held events last sent at least that long ago, oldest
    /// first: re-send them now.
    pub fn overdue(&mut self, now: Instant) -> Vec<(i64, String, Vec<u8>)> {
        let mut out = Vec::new();
        if now.duration_since(self.quiet_since) < self.quiet_wait {
            return out;
        }
        let wait = self.quiet_wait;
        let due: Vec<i64> = self
            .held
            .iter()
            .filter(|(_, h)| now.duration_since(h.last_sent) >= wait)
            .map(|(seq, _)| *seq)
            .collect();
        let probe: Vec<i64> = if due.len() <= 2 * QUIET_PROBE {
            due
        } else {
            let newest = &due[due.len() - QUIET_PROBE..];
            due[..QUIET_PROBE].iter().chain(newest).copied().collect()
        };
        for seq in probe {
            if let Some(h) = self.held.get_mut(&seq) {
                h.last_sent = now;
                out.push((seq, h.topic.clone(), h.payload.clone()));
            }
        }
        if !out.is_empty() {
            self.quiet_wait = (self.quiet_wait * 2).min(MAX_QUIET_WAIT.max(self.resend_after));
        }
        self.resent_overdue += out.len() as u64;
        out
    }

    pub fn is_empty(&self) -> bool {
        self.held.is_empty()
    }

    pub fn held(&self) -> usize {
        self.held.len()
    }

    /// The seqs still held (not covered by any receipt).
    pub fn held_seqs(&self) -> Vec<i64> {
        self.held.keys().copied().collect()
    }
}

#[cfg(test)]
mod tests {
    use tillstream_contracts::SeqRange;

    use super::*;

    fn receipt(
        from: i64,
        through: i64,
        missing: &[(i64, i64)],
        epoch_started_at: i64,
    ) -> DeviceReceipt {
        DeviceReceipt {
            device_id: "d1".into(),
            store_id: "s1".into(),
            epoch: 0,
            epoch_started_at,
            from_seq: from,
            acked_through_seq: through,
            missing: missing
                .iter()
                .map(|(f, t)| SeqRange {
                    from_seq: *f,
                    to_seq: *t,
                })
                .collect(),
            issued_at: 0,
        }
    }

    fn ledger_with(seqs: impl IntoIterator<Item = i64>, at: Instant) -> DeviceLedger {
        let mut l = DeviceLedger::new(1_000, Duration::from_secs(5), at);
        for s in seqs {
            l.sent(
                s,
                "store/s1/pos/order.created",
                format!("e{s}").as_bytes(),
                at,
            );
        }
        l
    }

    #[test]
    fn a_device_re_sends_exactly_the_ranges_a_receipt_reports_missing() {
        let t0 = Instant::now();
        let mut l = ledger_with(1..=20, t0);
        // The log holds 1..=20 except 4..=6 and 15 (lost in transit); the device holds all of them.
        let later = t0 + Duration::from_secs(2);
        let resend = l.apply(&receipt(1, 20, &[(4, 6), (15, 15)], 1_000), later);
        let seqs: Vec<i64> = resend.iter().map(|(s, _, _)| *s).collect();
        assert_eq!(seqs, vec![4, 5, 6, 15], "exactly the missing ranges");
        assert_eq!(resend[0].2, b"e4".to_vec(), "the event's own bytes");
        assert_eq!(
            l.held_seqs(),
            vec![4, 5, 6, 15],
            "covered events are forgotten"
        );
        // The same receipt again right away: nothing re-sent twice within the debounce.
        assert!(
            l.apply(&receipt(1, 20, &[(4, 6), (15, 15)], 1_000), later)
                .is_empty()
        );
        // The re-sends arrived: a receipt covering everything empties the device.
        l.apply(&receipt(1, 20, &[], 1_000), later + Duration::from_secs(1));
        assert!(l.is_empty());
        assert_eq!((l.receipts, l.resent_missing), (3, 4));
    }

    #[test]
    fn what_no_receipt_covers_is_re_sent_after_the_timeout() {
        let t0 = Instant::now();
        let mut l = ledger_with(1..=10, t0);
        // The broker lost 9 and 10 and nothing later reveals it: the receipt ends at 8.
        let r1 = t0 + Duration::from_secs(3);
        assert!(l.apply(&receipt(1, 8, &[], 1_000), r1).is_empty());
        assert_eq!(l.held_seqs(), vec![9, 10]);
        // Sent 5 s ago, but the last receipt is only 2 s old: the cloud is still talking.
        assert!(l.overdue(t0 + Duration::from_secs(5)).is_empty());
        let again: Vec<i64> = l
            .overdue(r1 + Duration::from_secs(5))
            .iter()
            .map(|(s, _, _)| *s)
            .collect();
        assert_eq!(again, vec![9, 10]);
        // Just re-sent: not again before another full timeout.
        assert!(l.overdue(r1 + Duration::from_secs(6)).is_empty());
        assert_eq!(l.resent_overdue, 2);
        // A reconnect restarts the quiet period; the wait is now doubled (10 s) by the re-send.
        l.connected(r1 + Duration::from_secs(9));
        assert!(l.overdue(r1 + Duration::from_secs(14)).is_empty());
        assert!(l.overdue(r1 + Duration::from_secs(18)).is_empty());
        assert_eq!(l.overdue(r1 + Duration::from_secs(19)).len(), 2);
    }

    #[test]
    fn a_quiet_cloud_gets_each_event_again_ever_more_rarely_until_a_receipt_comes() {
        let t0 = Instant::now();
        let mut l = ledger_with(1..=3, t0);
        // A pipeline minutes behind (no receipt yet): re-sends at 5, 15, 35, 75 s... not every 5 s.
        let mut sent_at = Vec::new();
        for s in 1..=200u64 {
            let now = t0 + Duration::from_secs(s);
            if !l.overdue(now).is_empty() {
                sent_at.push(s);
            }
        }
        assert_eq!(sent_at, vec![5, 15, 35, 75, 155]);
        // The wait never exceeds the cap.
        for s in 201..=3_000u64 {
            l.overdue(t0 + Duration::from_secs(s));
        }
        assert!(l.quiet_wait <= MAX_QUIET_WAIT);
        // A receipt brings the wait back to resend_after.
        let now = t0 + Duration::from_secs(3_001);
        l.apply(&receipt(1, 1, &[], 1_000), now);
        assert_eq!(l.quiet_wait, Duration::from_secs(5));
        assert_eq!(l.overdue(now + Duration::from_secs(5)).len(), 2);
    }

    #[test]
    fn a_quiet_device_probes_with_its_oldest_and_newest_events_not_its_whole_backlog() {
        let t0 = Instant::now();
        let mut l = ledger_with(1..=1_000, t0);
        let probe: Vec<i64> = l
            .overdue(t0 + Duration::from_secs(5))
            .iter()
            .map(|(s, _, _)| *s)
            .collect();
        let n = QUIET_PROBE as i64;
        let expected: Vec<i64> = (1..=n).chain(1_001 - n..=1_000).collect();
        assert_eq!(probe, expected, "the oldest first, then the newest");
        assert_eq!(l.resent_overdue, 2 * QUIET_PROBE as u64);
        assert_eq!(l.held(), 1_000, "a probe forgets nothing");
        // The broker had lost 900..=1000: the newest re-sent events reveal the rest as a gap, and
        // the receipt that follows lists it missing, which re-sends it at once.
        let r = t0 + Duration::from_secs(7);
        let missing: Vec<i64> = l
            .apply(&receipt(1, 1_000, &[(900, 1_000 - n)], 1_000), r)
            .iter()
            .map(|(s, _, _)| *s)
            .collect();
        assert_eq!(missing, (900..=1_000 - n).collect::<Vec<_>>());
        // A short backlog is re-sent whole.
        let mut l = ledger_with(1..=10, t0);
        assert_eq!(l.overdue(t0 + Duration::from_secs(5)).len(), 10);
    }

    #[test]
    fn an_inverted_missing_range_names_nothing() {
        let t0 = Instant::now();
        let mut l = ledger_with(1..=5, t0);
        let later = t0 + Duration::from_secs(2);
        assert!(l.apply(&receipt(1, 3, &[(5, 4)], 1_000), later).is_empty());
        assert_eq!(l.held_seqs(), vec![4, 5]);
    }

    #[test]
    fn below_the_baseline_is_not_covered_and_old_numberings_are_ignored() {
        let t0 = Instant::now();
        let mut l = ledger_with(1..=5, t0);
        // The cloud's first sight of this device was seq 3 (1 and 2 were late or lost).
        l.apply(&receipt(3, 5, &[], 1_000), t0);
        assert_eq!(l.held_seqs(), vec![1, 2]);
        // A receipt of a numbering that started before this device's first event: ignored.
        let mut l = ledger_with(1..=5, t0);
        assert!(l.apply(&receipt(1, 500, &[(2, 2)], 999), t0).is_empty());
        assert_eq!(l.held(), 5);
        assert_eq!(l.receipts, 0);
    }
}
