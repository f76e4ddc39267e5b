//! Held verdicts: a raised verdict waits until its partition's stream has moved on by
//! `detector.hold_ms` of record time before it is written, and one that a later input supersedes
//! while it waits is withdrawn without a trace. Pure (no I/O, no clock of its own: callers pass the
//! wall time).
//!
//! Why: a store's tills deliver their backlogs side by side after an outage, each in its own order,
//! so a verdict about one till's sale keeps changing while another till's earlier sales arrive
//! (every one of them shifts the balances after it). Written at once, each change was a conflict
//! record, a resolution, compensations and their reversals, published, read back and booked by the
//! finance export: at 1M events 1.8M verdicts for ~160k that held (BENCHMARKS.md, issue 16).
//! Waiting until the stream has moved on nets those changes out.
//!
//! The wait is measured in the partition's record time (its watermark: the highest Kafka timestamp
//! of its events so far) and a verdict is written at the first event that moves the watermark past
//! its due time, so what is written, and in which order, is a function of the partition's records,
//! whatever the detector's lag and batching (reprocessing gives the same records). A partition
//! whose stream stops has nothing more to wait for: what waits is written once no event came for
//! `hold_ms` of wall time.
//!
//! A batch builds a [`Plan`] over what is held (nothing changes until the batch commits, then
//! [`HeldVerdicts::accept`]); a failed batch drops its plan and rebuilds its partitions.
//!
//! Delivery guarantee: none by itself; held verdicts live only in memory. That is safe because the
//! restore's reconcile (after a crash, a partition move or a failed batch) finds every verdict that
//! holds and is not in the database, and writes it. A verdict withdrawn while held leaves its
//! evidence's generation bumped in the core; the database then has a gap in that evidence's
//! generations, which the restore reads from the verdicts that hold as well as from the superseded
//! ones (`Db::verdicts`).

use std::collections::{BTreeMap, BTreeSet};

use rustc_hash::{FxHashMap as HashMap, FxHashSet as HashSet};

use crate::core::{Change, Verdict};

/// One change decided, with the partition its records go to.
#[derive(Debug, Clone)]
pub struct Decided {
    pub partition: i32,
    pub change: Change,
}

/// A verdict waiting to be written.
#[derive(Debug, Clone)]
struct Held {
    partition: i32,
    verdict: Verdict,
    /// Partition record time from which it may be written.
    due_at: i64,
}

/// One partition's waiting verdicts and stream position.
#[derive(Debug, Default)]
struct Partition {
    /// Highest record time taken in (committed batches).
    watermark: Option<i64>,
    /// (due_at, conflict id) of its waiting verdicts.
    by_due: BTreeSet<(i64, String)>,
    /// Wall time its last event was taken in (for the idle rule).
    last_event_at: i64,
}

/// The verdicts waiting, by conflict id and per partition in due order.
#[derive(Debug, Default)]
pub struct HeldVerdicts {
    hold_ms: i64,
    held: HashMap<String, Held>,
    partitions: BTreeMap<i32, Partition>,
}

/// What one batch does to the held verdicts, in stream order (see the module doc).
#[derive(Debug, Default)]
pub struct Plan {
    /// Written in the batch's transaction, in this order: supersedes of written verdicts, held
    /// verdicts that came due (and, with `hold_ms` 0, every change).
    pub write: Vec<Decided>,
    /// Raised verdicts that start waiting, with their due time.
    hold: Vec<(i32, Verdict, i64)>,
    /// Held verdicts a change of this batch superseded: dropped unwritten.
    withdraw: HashSet<String>,
    /// Held verdicts this batch writes.
    released: HashSet<String>,
    /// Verdicts this batch raised and superseded itself (never waited).
    netted: usize,
    /// Partition watermarks after this batch.
    marks: BTreeMap<i32, i64>,
}

impl Plan {
    /// Verdicts withdrawn before they were written (waiting ones, and ones this batch raised).
    pub fn withdrawn(&self) -> usize {
        self.withdraw.len() + self.netted
    }
}

impl HeldVerdicts {
    /// `hold_ms` 0 writes every change at once (no waiting).
    pub fn new(hold_ms: u64) -> HeldVerdicts {
        HeldVerdicts {
            hold_ms: hold_ms as i64,
            ..Default::default()
        }
    }

    /// Takes one input's changes into `plan`: its record time moves the partition's watermark,
    /// a raised verdict starts waiting, a superseded one is withdrawn if it waits (written as a
    /// supersede otherwise); then whatever the new watermark makes due is written.
    pub fn offer(
        &self,
        plan: &mut Plan,
        partition: i32,
        record_time: Option<i64>,
        changes: Vec<Change>,
    ) {
        let mark = self.mark(plan, partition);
        let mark = match (mark, record_time) {
            (Some(m), Some(t)) => Some(m.max(t)),
            (m, t) => m.or(t),
        };
        if let Some(m) = mark {
            plan.marks.insert(partition, m);
        }
        for change in changes {
            match change {
                Change::Raised(v) if self.hold_ms > 0 => {
                    let due_at = mark.unwrap_or(i64::MIN).saturating_add(self.hold_ms);
                    plan.hold.push((partition, v, due_at));
                }
                Change::Superseded { verdict, by, at } if self.hold_ms > 0 => {
                    if let Some(i) = plan
                        .hold
                        .iter()
                        .position(|(_, h, _)| h.conflict_id == verdict.conflict_id)
                    {
                        plan.hold.remove(i);
                        plan.netted += 1;
                    } else if self.held.contains_key(&verdict.conflict_id)
                        && !plan.released.contains(&verdict.conflict_id)
                    {
                        plan.withdraw.insert(verdict.conflict_id);
                    } else {
                        plan.write.push(Decided {
                            partition,
                            change: Change::Superseded { verdict, by, at },
                        });
                    }
                }
                change => plan.write.push(Decided { partition, change }),
            }
        }
        if let Some(m) = mark {
            self.release(plan, partition, m);
        }
    }

    /// Writes (into `plan`) the partition's waiting verdicts due at watermark `mark`, in
    /// (due time, id) order.
    fn release(&self, plan: &mut Plan, partition: i32, mark: i64) {
        let mut due: Vec<(i64, String, Verdict)> = Vec::new();
        if let Some(part) = self.partitions.get(&partition) {
            for (due_at, id) in part.by_due.iter() {
                if *due_at > mark {
                    break;
                }
                if plan.withdraw.contains(id) || plan.released.contains(id) {
                    continue;
                }
                if let Some(h) = self.held.get(id) {
                    due.push((*due_at, id.clone(), h.verdict.clone()));
                }
            }
        }
        let mut i = 0;
        while i < plan.hold.len() {
            if plan.hold[i].0 == partition && plan.hold[i].2 <= mark {
                let (_, v, due_at) = plan.hold.remove(i);
                due.push((due_at, v.conflict_id.clone(), v));
            } else {
                i += 1;
            }
        }
        due.sort_by(|a, b| (a.0, &a.1).cmp(&(b.0, &b.1)));
        for (_, id, verdict) in due {
            if self.held.contains_key(&id) {
                plan.released.insert(id);
            }
            plan.write.push(Decided {
                partition,
                change: Change::Raised(verdict),
            });
        }
    }

    fn mark(&self, plan: &Plan, partition: i32) -> Option<i64> {
        plan.marks
            .get(&partition)
            .copied()
            .or_else(|| self.partitions.get(&partition).and_then(|p| p.watermark))
    }

    /// Takes a committed plan in. `now` is the wall time: the partitions it took events of are
    /// not idle.
    pub fn accept(&mut self, plan: Plan, now: i64) {
        for id in plan.withdraw.iter().chain(plan.released.iter()) {
            self.remove(id);
        }
        for (partition, verdict, due_at) in plan.hold {
            if self.held.contains_key(&verdict.conflict_id) {
                continue; // waiting already (the core raises an id once until it supersedes it)
            }
            self.partitions
                .entry(partition)
                .or_default()
                .by_due
                .insert((due_at, verdict.conflict_id.clone()));
            self.held.insert(
                verdict.conflict_id.clone(),
                Held {
                    partition,
                    verdict,
                    due_at,
                },
            );
        }
        for (p, m) in plan.marks {
            let part = self.partitions.entry(p).or_default();
            part.watermark = Some(m);
            part.last_event_at = now;
        }
    }

    /// The waiting verdicts of partitions that had no event for `hold_ms` of wall time (`all`:
    /// every one, at shutdown), in (partition, due time, id) order. Changes nothing (the write may
    /// fail); [`take`](Self::take) removes them after the commit.
    pub fn idle_due(&self, now: i64, all: bool) -> Vec<Decided> {
        let mut out = Vec::new();
        for (p, part) in &self.partitions {
            if !all && now.saturating_sub(part.last_event_at) < self.hold_ms {
                continue;
            }
            for (_, id) in &part.by_due {
                if let Some(h) = self.held.get(id) {
                    out.push(Decided {
                        partition: *p,
                        change: Change::Raised(h.verdict.clone()),
                    });
                }
            }
        }
        out
    }

    /// Removes verdicts that were written.
    pub fn take(&mut self, written: &[Decided]) {
        for d in written {
            if let Change::Raised(v) = &d.change {
                self.remove(&v.conflict_id);
            }
        }
    }

    /// Forgets a partition: its waiting verdicts (it left, or is rebuilt: the restore writes what
    /// holds) and its stream position.
    pub fn drop_partition(&mut self, p: i32) {
        if let Some(part) = self.partitions.remove(&p) {
            for (_, id) in part.by_due {
                self.held.remove(&id);
            }
        }
    }

    /// The wall time at which the idle rule may release something next (`None`: nothing waits).
    pub fn next_idle_release(&self) -> Option<i64> {
        self.partitions
            .values()
            .filter(|p| !p.by_due.is_empty())
            .map(|p| p.last_event_at.saturating_add(self.hold_ms))
            .min()
    }

    /// Verdicts waiting.
    pub fn len(&self) -> usize {
        self.held.len()
    }

    pub fn is_empty(&self) -> bool {
        self.held.is_empty()
    }

    /// Verdicts waiting per partition, for `partitions` (0 where none wait).
    pub fn counts(&self, partitions: impl IntoIterator<Item = i32>) -> BTreeMap<i32, i64> {
        partitions
            .into_iter()
            .map(|p| {
                let n = self.partitions.get(&p).map_or(0, |x| x.by_due.len());
                (p, n as i64)
            })
            .collect()
    }

    /// What [`counts`](Self::counts) will say once `plan` is accepted, for the partitions it
    /// changes (written with the plan's batch).
    pub fn counts_after(&self, plan: &Plan) -> BTreeMap<i32, i64> {
        let mut parts: BTreeSet<i32> = plan.hold.iter().map(|(p, _, _)| *p).collect();
        let gone: Vec<i32> = plan
            .withdraw
            .iter()
            .chain(plan.released.iter())
            .filter_map(|id| self.held.get(id).map(|h| h.partition))
            .collect();
        parts.extend(gone.iter().copied());
        let mut out = self.counts(parts);
        for (p, v, _) in &plan.hold {
            if !self.held.contains_key(&v.conflict_id) {
                *out.entry(*p).or_default() += 1;
            }
        }
        for p in gone {
            *out.entry(p).or_default() -= 1;
        }
        out
    }

    fn remove(&mut self, id: &str) {
        let Some(h) = self.held.remove(id) else {
            return;
        };
        if let Some(part) = self.partitions.get_mut(&h.partition) {
            part.by_due.remove(&(h.due_at, id.to_string()));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::{Owner, Rule, Triage};

    fn verdict(id: &str) -> Verdict {
        Verdict {
            conflict_id: id.into(),
            base_id: id.into(),
            generation: 0,
            rule: Rule::Oversell,
            triage: Triage::AutoResolved,
            owner: Owner::StoreOps,
            store_id: "s1".into(),
            sku: Some("SKU-1".into()),
            evidence: vec!["e1".into()],
            anchor_at: 0,
            detected_at: 0,
            detail: Default::default(),
            explanation: String::new(),
            outcome: String::new(),
            compensations: Vec::new(),
        }
    }

    fn raised(id: &str) -> Change {
        Change::Raised(verdict(id))
    }

    fn superseded(id: &str) -> Change {
        Change::Superseded {
            verdict: verdict(id),
            by: "late".into(),
            at: 1,
        }
    }

    fn ids(ds: &[Decided]) -> Vec<String> {
        ds.iter()
            .map(|d| match &d.change {
                Change::Raised(v) => format!("+{}", v.conflict_id),
                Change::Superseded { verdict, .. } => format!("-{}", verdict.conflict_id),
            })
            .collect()
    }

    #[test]
    fn without_a_hold_every_change_is_written_at_once() {
        let h = HeldVerdicts::new(0);
        let mut plan = Plan::default();
        h.offer(&mut plan, 0, Some(1), vec![raised("a"), superseded("a")]);
        assert_eq!(ids(&plan.write), ["+a", "-a"]);
    }

    #[test]
    fn a_verdict_superseded_while_it_waits_is_withdrawn_unwritten() {
        let mut h = HeldVerdicts::new(1_000);
        // Raised and superseded in one batch: nothing at all.
        let mut plan = Plan::default();
        h.offer(&mut plan, 0, Some(100), vec![raised("a")]);
        h.offer(&mut plan, 0, Some(200), vec![superseded("a")]);
        assert!(plan.write.is_empty() && plan.hold.is_empty());
        assert_eq!(plan.withdrawn(), 1);
        // Raised in one batch, superseded in the next.
        let mut plan = Plan::default();
        h.offer(&mut plan, 0, Some(300), vec![raised("b")]);
        h.accept(plan, 0);
        assert_eq!(h.len(), 1);
        let mut plan = Plan::default();
        h.offer(&mut plan, 0, Some(400), vec![superseded("b"), raised("c")]);
        assert!(plan.write.is_empty());
        assert_eq!(plan.withdrawn(), 1);
        assert_eq!(h.counts_after(&plan), BTreeMap::from([(0, 1)]));
        h.accept(plan, 10);
        assert_eq!(h.len(), 1);
        // A verdict that was written (not waiting) is superseded in the open.
        let mut plan = Plan::default();
        h.offer(&mut plan, 0, Some(500), vec![superseded("written-earlier")]);
        assert_eq!(ids(&plan.write), ["-written-earlier"]);
    }

    #[test]
    fn a_verdict_is_written_at_the_event_that_moves_its_partition_past_the_hold() {
        let mut h = HeldVerdicts::new(1_000);
        let mut plan = Plan::default();
        h.offer(&mut plan, 0, Some(5_000), vec![raised("a")]);
        h.offer(&mut plan, 1, Some(5_000), vec![raised("b")]);
        h.accept(plan, 0);
        // Partition 0 moves on 999 ms of record time, partition 1 1000 ms: only b is due, and it
        // is written after the supersede its event decided.
        let mut plan = Plan::default();
        h.offer(&mut plan, 0, Some(5_999), vec![]);
        h.offer(&mut plan, 1, Some(6_000), vec![superseded("x")]);
        assert_eq!(ids(&plan.write), ["-x", "+b"]);
        assert_eq!(h.counts_after(&plan), BTreeMap::from([(1, 0)]));
        h.accept(plan, 0);
        assert_eq!(h.counts([0, 1]), BTreeMap::from([(0, 1), (1, 0)]));
        // A verdict held within a batch comes due within it too; record time never goes back.
        let mut plan = Plan::default();
        h.offer(&mut plan, 0, Some(6_000), vec![raised("c")]);
        h.offer(&mut plan, 0, Some(3_000), vec![]);
        assert_eq!(ids(&plan.write), ["+a"]);
        h.offer(&mut plan, 0, Some(7_000), vec![]);
        assert_eq!(ids(&plan.write), ["+a", "+c"]);
    }

    #[test]
    fn a_quiet_partition_releases_what_waits() {
        let mut h = HeldVerdicts::new(1_000);
        let mut plan = Plan::default();
        h.offer(&mut plan, 0, Some(5_000), vec![raised("a")]);
        h.accept(plan, 100);
        assert_eq!(h.next_idle_release(), Some(1_100));
        assert!(h.idle_due(1_099, false).is_empty(), "stream quiet 999 ms");
        let due = h.idle_due(1_100, false);
        assert_eq!(ids(&due), ["+a"]);
        h.take(&due);
        assert!(h.is_empty());
        assert_eq!(h.next_idle_release(), None);
    }

    #[test]
    fn a_partition_that_leaves_takes_its_waiting_verdicts_along() {
        let mut h = HeldVerdicts::new(1_000);
        let mut plan = Plan::default();
        h.offer(&mut plan, 0, Some(0), vec![raised("a")]);
        h.offer(&mut plan, 1, Some(0), vec![raised("b")]);
        h.accept(plan, 0);
        h.drop_partition(0);
        assert_eq!(ids(&h.idle_due(0, true)), ["+b"]);
    }
}
