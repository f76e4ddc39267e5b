//! Reconciliation: each device's own day totals (its `StoreDayClosed`) against what the ledger
//! booked for that device-day. One [`ReconRecord`] per device-day: matched, mismatched (every
//! differing figure, the sequence gaps inside the close's seq range and the booked events outside
//! it that explain the difference), missing close, or conflicting closes (the device closed the
//! day twice with different figures). Pure; no delivery guarantee.
//!
//! The figures follow the till's day book: counts of sales and refunds, gross (unit price x qty,
//! tax excluded), discounts, tax and net of the sales, refunds (refund line amounts, tax included)
//! and the sales' tenders per method (refund tenders are not in the till's tender totals).

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};
use tillstream_contracts::StoreDayClosed;

use super::posting::{TENDER_METHODS, tender_index, tender_name};

/// A device-day's totals, as the till declares them or as the ledger booked them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Figures {
    pub order_count: i64,
    pub refund_count: i64,
    pub gross: i64,
    pub discounts: i64,
    pub tax: i64,
    pub net: i64,
    pub refunds: i64,
    /// Sales tenders per method, in [`TENDER_METHODS`] order.
    pub tenders: [i64; 7],
}

impl Figures {
    /// The sum of two sets of figures; `None` on overflow.
    pub fn checked_add(&self, other: &Figures) -> Option<Figures> {
        let mut tenders = [0i64; 7];
        for (i, t) in tenders.iter_mut().enumerate() {
            *t = self.tenders[i].checked_add(other.tenders[i])?;
        }
        Some(Figures {
            order_count: self.order_count.checked_add(other.order_count)?,
            refund_count: self.refund_count.checked_add(other.refund_count)?,
            gross: self.gross.checked_add(other.gross)?,
            discounts: self.discounts.checked_add(other.discounts)?,
            tax: self.tax.checked_add(other.tax)?,
            net: self.net.checked_add(other.net)?,
            refunds: self.refunds.checked_add(other.refunds)?,
            tenders,
        })
    }

    /// What a till declared in its day close.
    pub fn declared(c: &StoreDayClosed) -> Figures {
        let mut tenders = [0i64; 7];
        for t in &c.tender_totals {
            let slot = &mut tenders[tender_index(t.method)];
            *slot = slot.saturating_add(t.amount.amount_minor);
        }
        Figures {
            order_count: i64::from(c.order_count),
            refund_count: i64::from(c.refund_count),
            gross: c.gross.amount_minor,
            discounts: c.discounts.amount_minor,
            tax: c.tax.amount_minor,
            net: c.net.amount_minor,
            refunds: c.refunds.amount_minor,
            tenders,
        }
    }

    /// (name, value) of every figure, in report order.
    pub fn named(&self) -> Vec<(String, i64)> {
        let mut v = vec![
            ("order_count".to_string(), self.order_count),
            ("refund_count".to_string(), self.refund_count),
            ("gross".to_string(), self.gross),
            ("discounts".to_string(), self.discounts),
            ("tax".to_string(), self.tax),
            ("net".to_string(), self.net),
            ("refunds".to_string(), self.refunds),
        ];
        for m in TENDER_METHODS {
            v.push((
                format!("tender_{}", tender_name(m).to_ascii_lowercase()),
                self.tenders[tender_index(m)],
            ));
        }
        v
    }
}

/// One `StoreDayClosed` of a device-day.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CloseFigures {
    pub event_id: String,
    pub seq: i64,
    pub first_seq: i64,
    pub last_seq: i64,
    pub figures: Figures,
}

/// The outcome for a device-day.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReconStatus {
    Matched,
    Mismatched,
    MissingClose,
    ConflictingClose,
}

impl ReconStatus {
    pub fn name(self) -> &'static str {
        match self {
            ReconStatus::Matched => "matched",
            ReconStatus::Mismatched => "mismatched",
            ReconStatus::MissingClose => "missing_close",
            ReconStatus::ConflictingClose => "conflicting_close",
        }
    }

    pub const ALL: [ReconStatus; 4] = [
        ReconStatus::Matched,
        ReconStatus::Mismatched,
        ReconStatus::MissingClose,
        ReconStatus::ConflictingClose,
    ];
}

/// A figure the till and the ledger disagree on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Difference {
    pub figure: String,
    pub device: i64,
    pub ledger: i64,
}

/// The reconciliation record of one device-day.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReconRecord {
    pub store_id: String,
    pub business_date: i32,
    pub device_id: String,
    pub status: ReconStatus,
    pub differences: Vec<Difference>,
    /// Seq ranges (inclusive) inside the close's range the ledger never received from the device.
    pub gaps: Vec<(i64, i64)>,
    /// Booked events of the device-day outside the close's seq range (the till did not count them).
    pub unexplained_event_ids: Vec<String>,
    pub close_event_ids: Vec<String>,
    pub notes: Vec<String>,
}

/// What the ledger holds about one device-day.
#[derive(Debug, Clone)]
pub struct DeviceDay<'a> {
    pub store_id: &'a str,
    pub device_id: &'a str,
    pub business_date: i32,
    /// Booked figures; `None` when no sale or refund of the device-day was booked.
    pub ledger: Option<&'a Figures>,
    /// Its day closes, in seq order.
    pub closes: &'a [CloseFigures],
    /// (seq, event id) of the booked sales and refunds of the device-day.
    pub day_events: &'a [(i64, String)],
    /// Every seq of the device the ledger received within the latest close's seq range.
    pub seqs_seen: &'a BTreeSet<i64>,
    /// Facts noted while booking (e.g. a refund of an order never booked).
    pub notes: &'a [String],
}

/// Missing seq ranges of `[from, to]` given the seqs seen.
fn gaps(from: i64, to: i64, seen: &BTreeSet<i64>) -> Vec<(i64, i64)> {
    let mut out: Vec<(i64, i64)> = Vec::new();
    let mut s = from;
    while s <= to {
        if !seen.contains(&s) {
            match out.last_mut() {
                Some(last) if last.1 + 1 == s => last.1 = s,
                _ => out.push((s, s)),
            }
        }
        s += 1;
    }
    out
}

/// Reconciles one device-day.
pub fn reconcile(day: &DeviceDay<'_>) -> ReconRecord {
    let mut record = ReconRecord {
        store_id: day.store_id.to_string(),
        business_date: day.business_date,
        device_id: day.device_id.to_string(),
        status: ReconStatus::Matched,
        differences: Vec::new(),
        gaps: Vec::new(),
        unexplained_event_ids: Vec::new(),
        close_event_ids: day.closes.iter().map(|c| c.event_id.clone()).collect(),
        notes: day.notes.to_vec(),
    };
    let zero = Figures::default();
    let ledger = day.ledger.unwrap_or(&zero);
    let Some(latest) = day.closes.iter().max_by_key(|c| c.seq) else {
        record.status = ReconStatus::MissingClose;
        return record;
    };
    if day.ledger.is_none() {
        record.notes.push("day close without events".into());
    }
    let distinct: BTreeSet<String> = day
        .closes
        .iter()
        .map(|c| format!("{:?}", c.figures))
        .collect();
    if distinct.len() > 1 {
        record.status = ReconStatus::ConflictingClose;
        record.notes.push(format!(
            "closed {} times with different figures; compared with the latest (seq {})",
            day.closes.len(),
            latest.seq
        ));
    } else if day.closes.len() > 1 {
        record.notes.push(format!(
            "closed {} times with the same figures",
            day.closes.len()
        ));
    }
    for ((figure, device), (_, booked)) in latest.figures.named().into_iter().zip(ledger.named()) {
        if device != booked {
            record.differences.push(Difference {
                figure,
                device,
                ledger: booked,
            });
        }
    }
    if !record.differences.is_empty() {
        if record.status == ReconStatus::Matched {
            record.status = ReconStatus::Mismatched;
        }
        record.gaps = gaps(latest.first_seq, latest.last_seq, day.seqs_seen);
        record.unexplained_event_ids = day
            .day_events
            .iter()
            .filter(|(seq, _)| *seq < latest.first_seq || *seq > latest.last_seq)
            .map(|(_, id)| id.clone())
            .collect();
    }
    record
}

#[cfg(test)]
mod tests {
    use super::*;

    fn figures(orders: i64, gross: i64) -> Figures {
        Figures {
            order_count: orders,
            gross,
            net: gross,
            tenders: [0, gross, 0, 0, 0, 0, 0],
            ..Figures::default()
        }
    }

    fn close(id: &str, seq: i64, f: Figures) -> CloseFigures {
        CloseFigures {
            event_id: id.into(),
            seq,
            first_seq: 1,
            last_seq: seq - 1,
            figures: f,
        }
    }

    fn day<'a>(
        ledger: Option<&'a Figures>,
        closes: &'a [CloseFigures],
        events: &'a [(i64, String)],
        seen: &'a BTreeSet<i64>,
    ) -> DeviceDay<'a> {
        DeviceDay {
            store_id: "s1",
            device_id: "d1",
            business_date: 1,
            ledger,
            closes,
            day_events: events,
            seqs_seen: seen,
            notes: &[],
        }
    }

    #[test]
    fn equal_figures_match() {
        let f = figures(2, 1000);
        let closes = [close("c1", 3, f.clone())];
        let seen: BTreeSet<i64> = [1, 2].into();
        let r = reconcile(&day(Some(&f), &closes, &[], &seen));
        assert_eq!(r.status, ReconStatus::Matched);
        assert!(r.differences.is_empty());
    }

    #[test]
    fn a_lost_sale_mismatches_with_each_figure_and_the_gap_that_explains_it() {
        let booked = figures(1, 400);
        let closes = [close("c1", 4, figures(2, 1000))];
        let seen: BTreeSet<i64> = [1, 3].into();
        let events = [(1, "e1".to_string())];
        let r = reconcile(&day(Some(&booked), &closes, &events, &seen));
        assert_eq!(r.status, ReconStatus::Mismatched);
        let names: Vec<&str> = r.differences.iter().map(|d| d.figure.as_str()).collect();
        assert_eq!(names, ["order_count", "gross", "net", "tender_card"]);
        assert_eq!(
            r.differences[1],
            Difference {
                figure: "gross".into(),
                device: 1000,
                ledger: 400
            }
        );
        assert_eq!(r.gaps, vec![(2, 2)]);
        assert!(r.unexplained_event_ids.is_empty());
    }

    #[test]
    fn an_event_the_till_did_not_count_is_named() {
        let booked = figures(2, 1000);
        let closes = [CloseFigures {
            first_seq: 2,
            ..close("c1", 3, figures(1, 600))
        }];
        let seen: BTreeSet<i64> = [1, 2].into();
        let events = [(1, "early".to_string()), (2, "e2".to_string())];
        let r = reconcile(&day(Some(&booked), &closes, &events, &seen));
        assert_eq!(r.status, ReconStatus::Mismatched);
        assert_eq!(r.unexplained_event_ids, vec!["early".to_string()]);
    }

    #[test]
    fn no_close_is_missing_close_and_a_close_without_events_says_so() {
        let f = figures(1, 100);
        let seen = BTreeSet::new();
        assert_eq!(
            reconcile(&day(Some(&f), &[], &[], &seen)).status,
            ReconStatus::MissingClose
        );
        let zero_close = [close("c0", 1, Figures::default())];
        let r = reconcile(&day(None, &zero_close, &[], &seen));
        assert_eq!(r.status, ReconStatus::Matched);
        assert_eq!(r.notes, vec!["day close without events".to_string()]);
        let claimed = [close("c0", 1, f.clone())];
        let r = reconcile(&day(None, &claimed, &[], &seen));
        assert_eq!(r.status, ReconStatus::Mismatched);
    }

    #[test]
    fn two_closes_with_different_figures_conflict_and_the_same_figures_are_noted() {
        let f = figures(1, 100);
        let seen: BTreeSet<i64> = [1].into();
        let twice = [close("c1", 2, f.clone()), close("c2", 3, figures(1, 90))];
        let r = reconcile(&day(Some(&f), &twice, &[], &seen));
        assert_eq!(r.status, ReconStatus::ConflictingClose);
        assert_eq!(r.close_event_ids, vec!["c1".to_string(), "c2".to_string()]);
        assert_eq!(r.differences.len(), 3, "compared with the latest close");
        let same = [close("c1", 2, f.clone()), close("c2", 3, f.clone())];
        let r = reconcile(&day(Some(&f), &same, &[], &seen));
        assert_eq!(r.status, ReconStatus::Matched);
        assert_eq!(
            r.notes,
            vec!["closed 2 times with the same figures".to_string()]
        );
    }

    #[test]
    fn gaps_merge_adjacent_seqs() {
        let seen: BTreeSet<i64> = [1, 4, 7].into();
        assert_eq!(gaps(1, 8, &seen), vec![(2, 3), (5, 6), (8, 8)]);
    }
}
