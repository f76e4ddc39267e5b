//! Unit tests of the pure core and the changelog format.
//!
//! Why one file (~700 lines): the state machine's cases read as one specification (order, gaps,
//! epochs, horizon, changelog), all on the same builders.

use std::collections::{BTreeMap, BTreeSet};

use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use tillstream_contracts::{ConflictKind, GapStatus, SequenceGap};

use super::*;
use crate::changelog::{self, Assembler, ChangelogError};

const T0: i64 = 1_793_872_800_000;

fn input(device: &str, seq: i64, offset: i64) -> Input {
    Input {
        offset,
        record_time: T0 + offset,
        event_type: "OrderCreated",
        event_id: format!("{device}/{seq}"),
        device_id: device.to_string(),
        store_id: format!("store-of-{}", &device[..2]),
        seq,
        occurred_at: T0 + seq * 10,
        fingerprint: id_key(&format!("content {device}/{seq}")),
    }
}

/// Drives one partition's core: assigns offsets, keeps every gap record and emitted id.
struct H {
    d: PartitionDedup,
    offset: i64,
    gaps: Vec<SequenceGap>,
    emitted: Vec<String>,
    conflicts: Vec<ConflictDetected>,
    deltas: Vec<Delta>,
    stats: BatchStats,
}

impl H {
    fn new() -> Self {
        Self::with(CoreConfig::default())
    }
    fn with(c: CoreConfig) -> Self {
        H {
            d: PartitionDedup::new(0, c),
            offset: 0,
            gaps: vec![],
            emitted: vec![],
            conflicts: vec![],
            deltas: vec![],
            stats: BatchStats::default(),
        }
    }
    /// Feeds inputs (their offsets are rewritten to be consecutive) as one batch.
    fn batch(&mut self, mut inputs: Vec<Input>) -> Decisions {
        for i in &mut inputs {
            i.offset = self.offset;
            i.record_time = i.record_time.max(T0 + self.offset);
            self.offset += 1;
        }
        let d = self.d.process(&inputs, self.offset - 1);
        for (i, v) in d.verdicts.iter().enumerate() {
            if matches!(v, Verdict::Emit { .. }) {
                self.emitted.push(inputs[i].event_id.clone());
            }
        }
        self.gaps.extend(d.delta.gaps.iter().cloned());
        self.conflicts.extend(d.conflicts.iter().cloned());
        self.deltas.push(d.delta.clone());
        self.stats.add(&d.stats);
        d
    }
    fn seqs(&mut self, device: &str, seqs: &[i64]) -> Decisions {
        self.batch(seqs.iter().map(|s| input(device, *s, 0)).collect())
    }
}

/// Latest record per gap id -> missing (device, seq) of the gaps still open.
fn open_missing(gaps: &[SequenceGap]) -> BTreeSet<(String, i64)> {
    let mut latest: BTreeMap<&str, &SequenceGap> = BTreeMap::new();
    for g in gaps {
        latest.insert(&g.gap_id, g);
    }
    let mut out = BTreeSet::new();
    for g in latest.values() {
        if matches!(g.status, GapStatus::Opened | GapStatus::PartiallyFilled) {
            assert_eq!(g.still_missing, g.to_seq - g.from_seq + 1, "{g:?}");
            for s in g.from_seq..=g.to_seq {
                assert!(
                    out.insert((g.device_id.clone(), s)),
                    "seq {s} in two open gaps"
                );
            }
        }
    }
    out
}

fn statuses(gaps: &[SequenceGap]) -> Vec<(GapStatus, i64, i64, i64)> {
    gaps.iter()
        .map(|g| (g.status, g.from_seq, g.to_seq, g.still_missing))
        .collect()
}

#[test]
fn in_order_events_are_emitted_once_without_gap_records() {
    let mut h = H::new();
    h.seqs("d1", &[1, 2, 3]);
    h.seqs("d1", &[4, 5]);
    assert_eq!(h.emitted.len(), 5);
    assert!(h.gaps.is_empty());
    let s = h.d.device("d1").unwrap();
    assert_eq!((s.base, s.high, s.gaps.len()), (1, 5, 0));
    assert_eq!(h.stats.baselines, 0);
}

#[test]
fn same_id_same_content_is_a_dropped_duplicate() {
    let mut h = H::new();
    h.seqs("d1", &[1, 2]);
    let d = h.seqs("d1", &[2, 1, 3]);
    assert_eq!(
        d.verdicts,
        vec![
            Verdict::Duplicate,
            Verdict::Duplicate,
            Verdict::Emit {
                beyond_horizon: false
            }
        ]
    );
    assert_eq!(h.stats.duplicates, 2);
    // A duplicate within one batch too.
    let d = h.seqs("d1", &[4, 4]);
    assert_eq!(d.verdicts[1], Verdict::Duplicate);
    assert_eq!(h.emitted, vec!["d1/1", "d1/2", "d1/3", "d1/4"]);
}

#[test]
fn same_id_other_content_is_a_collision_reported_once_per_content() {
    let mut h = H::new();
    h.seqs("d1", &[1]);
    let mut altered = input("d1", 1, 0);
    altered.fingerprint ^= 1;
    let d = h.batch(vec![altered.clone()]);
    assert_eq!(d.verdicts, vec![Verdict::Collision]);
    assert_eq!(d.conflicts.len(), 1);
    let c = &d.conflicts[0];
    assert_eq!(c.kind, ConflictKind::IdentityCollision);
    assert_eq!(c.event_ids, vec!["d1/1".to_string()]);
    assert_eq!(c.store_id, "store-of-d1");
    let first = id_key("content d1/1");
    assert_eq!(c.conflict_id, conflict_id("d1/1", first, first ^ 1));
    assert_eq!(c.detail["first_fingerprint"], format!("{first:032x}"));
    // The same colliding content again: not reported again, not emitted.
    let d = h.batch(vec![altered.clone()]);
    assert_eq!(d.verdicts, vec![Verdict::Collision]);
    assert!(d.conflicts.is_empty());
    // A third content is a new collision; the original is still a plain duplicate.
    let mut third = altered.clone();
    third.fingerprint ^= 2;
    let d = h.batch(vec![third, input("d1", 1, 0)]);
    assert_eq!(d.verdicts, vec![Verdict::Collision, Verdict::Duplicate]);
    assert_eq!(d.conflicts.len(), 1);
    assert_eq!(h.emitted, vec!["d1/1"]);
    assert_eq!(h.stats.collisions, 2);
    assert_eq!(h.stats.collisions_repeated, 1);
    // Collisions never touch sequence accounting.
    assert!(h.gaps.is_empty());
}

#[test]
fn collision_in_the_same_batch_as_the_original_is_logged_with_every_fingerprint() {
    let mut h = H::new();
    let mut altered = input("d1", 1, 0);
    altered.fingerprint ^= 7;
    let d = h.batch(vec![input("d1", 1, 0), altered]);
    assert_eq!(d.conflicts.len(), 1);
    assert_eq!(d.delta.ids.len(), 1, "one entry per key");
    assert_eq!(d.delta.ids[0].fingerprints.len(), 2);
}

#[test]
fn a_jump_opens_a_gap_and_late_fills_shrink_split_and_close_it() {
    let mut h = H::new();
    h.seqs("d1", &[1, 2]);
    h.seqs("d1", &[10]);
    assert_eq!(statuses(&h.gaps), vec![(GapStatus::Opened, 3, 9, 7)]);
    let id = h.gaps[0].gap_id.clone();
    assert_eq!(
        id,
        gap_id("d1", 0, T0 + 10, 3, 9).to_string(),
        "deterministic id"
    );

    // Fill the low end: the same gap, narrowed.
    h.gaps.clear();
    h.seqs("d1", &[3, 4]);
    assert_eq!(
        statuses(&h.gaps),
        vec![(GapStatus::PartiallyFilled, 5, 9, 5)]
    );
    assert_eq!(h.gaps[0].gap_id, id);

    // Fill the middle: the left part keeps the id, the right part is a new gap.
    h.gaps.clear();
    h.seqs("d1", &[7]);
    assert_eq!(
        statuses(&h.gaps),
        vec![
            (GapStatus::PartiallyFilled, 5, 6, 2),
            (GapStatus::Opened, 8, 9, 2)
        ]
    );
    assert_eq!(h.gaps[0].gap_id, id);
    let right = h.gaps[1].gap_id.clone();
    assert_ne!(right, id);

    // Close both.
    h.gaps.clear();
    h.seqs("d1", &[6, 5, 9]);
    h.seqs("d1", &[8]);
    let mut got = statuses(&h.gaps);
    got.sort_by_key(|g| g.1);
    assert_eq!(
        got,
        vec![
            (GapStatus::Filled, 5, 6, 0),
            (GapStatus::PartiallyFilled, 8, 8, 1),
            // FILLED carries the range last published for the id.
            (GapStatus::Filled, 8, 8, 0)
        ]
    );
    assert!(h.d.device("d1").unwrap().gaps.is_empty());
}

#[test]
fn reordering_inside_one_batch_makes_no_gap_records() {
    let mut h = H::new();
    h.seqs("d1", &[3, 1, 5, 2, 4]);
    h.seqs("d1", &[9, 7, 6, 8]);
    assert!(h.gaps.is_empty(), "{:?}", h.gaps);
    assert_eq!(h.emitted.len(), 9);
}

#[test]
fn a_gap_opened_and_filled_in_one_batch_is_invisible_but_one_left_open_is_exact() {
    let mut h = H::new();
    h.seqs("d1", &[1]);
    h.seqs("d1", &[5, 2, 3]);
    assert_eq!(statuses(&h.gaps), vec![(GapStatus::Opened, 4, 4, 1)]);
}

#[test]
fn a_seen_seq_under_a_new_id_is_a_device_reset() {
    let mut h = H::new();
    h.seqs("d1", &[1, 2, 3]);
    h.seqs("d1", &[6]);
    assert_eq!(statuses(&h.gaps), vec![(GapStatus::Opened, 4, 5, 2)]);
    h.gaps.clear();
    // After the reset the device starts again at 1, with new ids and a later clock.
    let mut reset: Vec<Input> = (1..=3)
        .map(|s| {
            let mut i = input("d1", s, 0);
            i.event_id = format!("d1/after-reset/{s}");
            i.occurred_at = T0 + 1_000_000 + s;
            i
        })
        .collect();
    reset.reverse();
    let d = h.batch(reset);
    assert_eq!(d.stats.resets, 1);
    assert_eq!(
        statuses(&h.gaps),
        vec![
            (GapStatus::DeviceReset, 4, 5, 2),
            (GapStatus::DeviceReset, 1, 6, 0)
        ]
    );
    let s = h.d.device("d1").unwrap();
    assert_eq!((s.epoch, s.base, s.high), (1, 1, 3));
    assert!(s.gaps.is_empty());
    assert!(open_missing(&h.gaps).is_empty());
    // New epoch accounts normally; gap ids differ from the old epoch.
    h.gaps.clear();
    let mut e = input("d1", 6, 0);
    e.event_id = "d1/after-reset/6".into();
    e.occurred_at = T0 + 2_000_000;
    h.batch(vec![e]);
    assert_eq!(statuses(&h.gaps), vec![(GapStatus::Opened, 4, 5, 2)]);
    assert_eq!(
        h.gaps[0].gap_id,
        gap_id("d1", 1, T0 + 1_000_001, 4, 5).to_string()
    );
    // A straggler of the old epoch (older clock) is emitted but not accounted.
    h.gaps.clear();
    let d = h.seqs("d1", &[4]);
    assert!(matches!(d.verdicts[0], Verdict::Emit { .. }));
    assert_eq!(d.stats.stragglers, 1);
    assert!(h.gaps.is_empty());
}

#[test]
fn a_reset_inside_one_batch_is_seen_as_a_reset_not_a_gap() {
    let mut h = H::new();
    h.seqs("d1", &[1, 2, 3, 4]);
    let mut batch = vec![input("d1", 5, 0), input("d1", 6, 0)];
    for s in 1..=2 {
        let mut i = input("d1", s, 0);
        i.event_id = format!("d1/new/{s}");
        i.occurred_at = T0 + 10_000 + s;
        batch.push(i);
    }
    let d = h.batch(batch);
    assert_eq!(d.stats.resets, 1);
    assert_eq!(statuses(&h.gaps), vec![(GapStatus::DeviceReset, 1, 6, 0)]);
    let s = h.d.device("d1").unwrap();
    assert_eq!((s.epoch, s.base, s.high), (1, 1, 2));
}

#[test]
fn first_seq_above_one_is_a_baseline_and_lower_seqs_extend_it() {
    let mut h = H::new();
    h.seqs("d1", &[10, 11]);
    assert_eq!(h.stats.baselines, 1);
    assert!(h.gaps.is_empty());
    h.seqs("d1", &[7]);
    assert_eq!(statuses(&h.gaps), vec![(GapStatus::Opened, 8, 9, 2)]);
    h.seqs("d1", &[8, 9, 1]);
    let open = open_missing(&h.gaps);
    assert_eq!(
        open,
        (2..=6)
            .map(|s| ("d1".to_string(), s))
            .collect::<BTreeSet<_>>()
    );
    let s = h.d.device("d1").unwrap();
    assert_eq!((s.base, s.high), (1, 11));
    // A device starting at 1 is not a baseline.
    h.seqs("d2", &[1]);
    assert_eq!(h.stats.baselines, 1);
}

#[test]
fn events_older_than_the_horizon_are_flagged_and_only_fill_gaps() {
    let cfg = CoreConfig {
        horizon_ms: 1_000_000,
        ..CoreConfig::default()
    };
    let mut h = H::with(cfg);
    let mut a = input("d1", 1, 0);
    let mut b = input("d1", 5, 0);
    a.record_time = T0 + 10_000_000;
    b.record_time = T0 + 10_000_000;
    a.occurred_at = T0 + 9_500_000;
    b.occurred_at = T0 + 9_500_100;
    h.batch(vec![a, b]);
    assert_eq!(statuses(&h.gaps), vec![(GapStatus::Opened, 2, 4, 3)]);
    // seq 3 happened long ago (beyond the horizon): emitted, flagged, fills its gap.
    let mut old = input("d1", 3, 0);
    old.occurred_at = T0;
    let d = h.batch(vec![old]);
    assert_eq!(
        d.verdicts,
        vec![Verdict::Emit {
            beyond_horizon: true
        }]
    );
    assert_eq!(d.stats.beyond_horizon, 1);
    assert_eq!(
        statuses(&d.delta.gaps),
        vec![
            (GapStatus::PartiallyFilled, 2, 2, 1),
            (GapStatus::Opened, 4, 4, 1)
        ]
    );
    // An old event above high opens nothing and moves nothing.
    let mut old = input("d1", 50, 0);
    old.occurred_at = T0;
    let d = h.batch(vec![old.clone()]);
    assert_eq!(d.stats.beyond_horizon_unaccounted, 1);
    assert!(d.delta.gaps.is_empty());
    assert_eq!(h.d.device("d1").unwrap().high, 5);
    // ...and is still remembered: its copy is a duplicate.
    let d = h.batch(vec![old]);
    assert_eq!(d.verdicts, vec![Verdict::Duplicate]);
}

#[test]
fn an_id_is_forgotten_after_the_horizon_of_record_time() {
    let cfg = CoreConfig {
        horizon_ms: 1_000,
        ..CoreConfig::default()
    };
    let mut h = H::with(cfg);
    h.seqs("d1", &[1]);
    let d = h.seqs("d1", &[1]);
    assert_eq!(d.verdicts, vec![Verdict::Duplicate]);
    // 2 s of record time later the id is gone: the copy is emitted again (and flagged, since
    // the event itself is that old).
    let mut late = input("d1", 1, 0);
    late.record_time = T0 + 5_000;
    let d = h.batch(vec![late]);
    assert_eq!(
        d.verdicts,
        vec![Verdict::Emit {
            beyond_horizon: true
        }]
    );
    assert_eq!(
        h.d.id_count(),
        1,
        "the forgotten entry was replaced, not added"
    );
    // Once time moves past the horizon again, memory is freed.
    let mut other = input("d2", 1, 0);
    other.record_time = T0 + 10_000;
    let d = h.batch(vec![other]);
    assert_eq!(d.stats.ids_expired, 1);
    assert_eq!(h.d.id_count(), 1);
}

#[test]
fn a_quiet_device_without_gaps_is_forgotten_but_one_with_gaps_is_kept_and_refreshed() {
    let cfg = CoreConfig {
        horizon_ms: 10_000,
        device_refresh_ms: 2_400,
        ..CoreConfig::default()
    };
    let mut h = H::with(cfg);
    h.seqs("d1", &[1, 2]);
    h.seqs("d2", &[1, 3]);
    // Time passes on the partition through another device.
    let mut later = input("d3", 1, 0);
    later.record_time = T0 + 50_000;
    later.occurred_at = T0 + 50_000;
    let d = h.batch(vec![later]);
    assert!(h.d.device("d1").is_none(), "quiet d1 forgotten");
    assert!(h.d.device("d2").is_some(), "d2 has an open gap");
    assert!(
        d.delta.devices.iter().any(|(k, _)| k == "d2"),
        "d2 refreshed into the changelog"
    );
    assert_eq!(d.stats.devices_expired, 1);
    // d1 comes back: a new baseline, no gap below it.
    let mut back = input("d1", 9, 0);
    back.record_time = T0 + 50_001;
    back.occurred_at = T0 + 50_001;
    let d = h.batch(vec![back]);
    assert_eq!(d.stats.baselines, 1);
    assert!(d.delta.gaps.is_empty());
}

#[test]
fn records_below_the_restored_next_offset_are_covered() {
    let mut h = H::new();
    h.seqs("d1", &[1, 2, 3]);
    let next = h.d.next_offset().unwrap();
    assert_eq!(next, 3);
    let mut again = input("d1", 9, 1);
    again.offset = 1;
    let mut fresh = input("d1", 4, 3);
    fresh.offset = 3;
    let d = h.d.process(&[again, fresh], 3);
    assert_eq!(
        d.verdicts,
        vec![
            Verdict::Covered,
            Verdict::Emit {
                beyond_horizon: false
            }
        ]
    );
}

#[test]
fn too_many_open_gaps_abandon_the_lowest() {
    let cfg = CoreConfig {
        max_open_gaps_per_device: 3,
        ..CoreConfig::default()
    };
    let mut h = H::with(cfg);
    h.seqs("d1", &[1, 3, 5, 7, 9, 11]);
    let s = h.d.device("d1").unwrap();
    assert_eq!(s.gaps.keys().copied().collect::<Vec<_>>(), vec![6, 8, 10]);
    assert_eq!(h.stats.gaps_abandoned, 2);
}

/// A stream of `devices` x `per_device` events with duplicates, altered copies and `missing` seqs
/// dropped, shuffled within each device in windows, interleaved across devices.
fn stream(
    rng: &mut ChaCha8Rng,
    devices: usize,
    per_device: i64,
    missing: usize,
) -> (Vec<Input>, BTreeSet<(String, i64)>, usize) {
    let mut dropped = BTreeSet::new();
    while dropped.len() < missing {
        let d = rng.random_range(0..devices);
        let s = rng.random_range(2..per_device);
        dropped.insert((format!("d{d:03}"), s));
    }
    let mut per: Vec<Vec<Input>> = Vec::new();
    let mut altered = 0;
    for d in 0..devices {
        let name = format!("d{d:03}");
        let mut evs: Vec<Input> = Vec::new();
        for s in 1..=per_device {
            if dropped.contains(&(name.clone(), s)) {
                continue;
            }
            let e = input(&name, s, 0);
            evs.push(e.clone());
            if rng.random_bool(0.2) {
                let mut dup = e;
                if rng.random_bool(0.1) {
                    dup.fingerprint ^= 0xff;
                    altered += 1;
                }
                evs.push(dup);
            }
        }
        // Keep the last seq last, so every dropped seq lies below the device's high.
        let last = evs.pop().unwrap();
        for w in evs.chunks_mut(17) {
            w.shuffle(rng);
        }
        evs.push(last);
        per.push(evs);
    }
    let mut out = Vec::new();
    let mut idx = vec![0usize; devices];
    while out.len() < per.iter().map(Vec::len).sum::<usize>() {
        let d = rng.random_range(0..devices);
        if idx[d] < per[d].len() {
            out.push(per[d][idx[d]].clone());
            idx[d] += 1;
        }
    }
    (out, dropped, altered)
}

fn run_in_batches(inputs: &[Input], rng: &mut ChaCha8Rng, max: usize) -> H {
    let mut h = H::new();
    let mut i = 0;
    while i < inputs.len() {
        let n = rng.random_range(1..=max).min(inputs.len() - i);
        h.batch(inputs[i..i + n].to_vec());
        i += n;
    }
    h
}

#[test]
fn model_every_event_once_collisions_reported_and_open_gaps_exactly_the_missing_seqs() {
    for seed in 0..5u64 {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let (inputs, dropped, altered) = stream(&mut rng, 40, 120, 50);
        let h = run_in_batches(&inputs, &mut rng, 300);
        let emitted: BTreeSet<&String> = h.emitted.iter().collect();
        assert_eq!(emitted.len(), h.emitted.len(), "an event emitted twice");
        assert_eq!(emitted.len(), 40 * 120 - 50);
        assert_eq!(h.conflicts.len(), altered, "seed {seed}");
        assert_eq!(open_missing(&h.gaps), dropped, "seed {seed}");
        assert_eq!(h.stats.resets, 0);
    }
}

#[test]
fn batch_boundaries_change_no_emission_and_no_final_gap() {
    let mut rng = ChaCha8Rng::seed_from_u64(42);
    let (inputs, dropped, _) = stream(&mut rng, 10, 200, 20);
    let one = run_in_batches(&inputs, &mut rng, 1);
    let big = run_in_batches(&inputs, &mut rng, 500);
    assert_eq!(one.emitted, big.emitted);
    assert_eq!(one.conflicts, big.conflicts);
    assert_eq!(open_missing(&one.gaps), dropped);
    assert_eq!(open_missing(&big.gaps), dropped);
    assert!(
        one.gaps.len() > big.gaps.len(),
        "bigger batches absorb reordering"
    );
}

#[test]
fn a_state_restored_from_its_deltas_decides_exactly_like_the_live_one() {
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    let (inputs, _, _) = stream(&mut rng, 12, 150, 15);
    let (first, rest) = inputs.split_at(inputs.len() / 2);
    let mut live = run_in_batches(first, &mut rng, 100);
    // Restore through the binary changelog format, chunked small.
    let mut restored = PartitionDedup::new(0, CoreConfig::default());
    let mut asm = Assembler::new();
    for (g, delta) in live.deltas.iter().enumerate() {
        for chunk in changelog::encode(delta, g as u64, 2048).unwrap() {
            if let Some(d) = asm.push(changelog::decode(&chunk).unwrap()) {
                restored.apply(&d);
            }
        }
    }
    restored.finish_restore();
    assert_eq!(restored.snapshot(), live.d.snapshot());
    // Same inputs after the restore point: same decisions.
    let mut rest = rest.to_vec();
    for (i, inp) in rest.iter_mut().enumerate() {
        inp.offset = live.offset + i as i64;
        inp.record_time = T0 + inp.offset;
    }
    let end = live.offset + rest.len() as i64 - 1;
    let a = live.d.process(&rest, end);
    let b = restored.process(&rest, end);
    assert_eq!(a, b);
    live.offset = end + 1;
}

#[test]
fn apply_ignores_an_older_device_state_and_keeps_the_highest_next_offset() {
    let mut h = H::new();
    h.seqs("d1", &[1, 2]);
    h.seqs("d1", &[5]);
    let newer = h.deltas[1].clone();
    let older = h.deltas[0].clone();
    let mut d = PartitionDedup::new(0, CoreConfig::default());
    d.apply(&newer);
    d.apply(&older); // a zombie's late record
    assert_eq!(d.device("d1").unwrap().high, 5);
    assert_eq!(d.next_offset(), Some(3));
}

#[test]
fn changelog_round_trips_and_chunks_never_exceed_the_limit() {
    let mut h = H::new();
    let mut inputs: Vec<Input> = (1..=300).map(|s| input("d1", s * 2, 0)).collect();
    inputs.push(input("d2", 1, 0));
    h.batch(inputs);
    let delta = h.deltas[0].clone();
    assert!(!delta.gaps.is_empty());
    let one = changelog::encode(&delta, 9, 1 << 20).unwrap();
    assert_eq!(one.len(), 1);
    let mut asm = Assembler::new();
    assert_eq!(
        asm.push(changelog::decode(&one[0]).unwrap()),
        Some(delta.clone())
    );

    let chunks = changelog::encode(&delta, 9, 4096).unwrap();
    assert!(chunks.len() > 1);
    // One device item (300 ranges) is bigger than 4 KiB: it gets a chunk of its own.
    let device_item = chunks.iter().filter(|c| c.len() > 4096).count();
    assert!(device_item <= 1);
    let mut got = None;
    for c in &chunks {
        got = asm.push(changelog::decode(c).unwrap());
    }
    assert_eq!(got, Some(delta));
}

#[test]
fn an_unfinished_chunk_group_is_dropped_not_half_applied() {
    let mut h = H::new();
    h.batch((1..=200).map(|s| input("d1", s, 0)).collect());
    h.seqs("d1", &[201]);
    let a = changelog::encode(&h.deltas[0], 1, 2048).unwrap();
    let b = changelog::encode(&h.deltas[1], 2, 2048).unwrap();
    assert!(a.len() > 2);
    let mut asm = Assembler::new();
    let mut done = vec![];
    // Writer 1 died after two chunks; writer 2's delta follows.
    for c in a.iter().take(2).chain(b.iter()) {
        if let Some(d) = asm.push(changelog::decode(c).unwrap()) {
            done.push(d);
        }
    }
    asm.finish();
    assert_eq!(done, vec![h.deltas[1].clone()]);
    assert_eq!(asm.incomplete, 1);
    // A group cut at the end of the partition.
    let mut asm = Assembler::new();
    assert!(asm.push(changelog::decode(&a[0]).unwrap()).is_none());
    asm.finish();
    assert_eq!(asm.incomplete, 1);
}

#[test]
fn garbage_is_not_a_changelog_record() {
    assert_eq!(changelog::decode(b"nope"), Err(ChangelogError::BadMagic));
    let mut c = changelog::encode(&Delta::default(), 1, 1024)
        .unwrap()
        .remove(0);
    c[4] = 99;
    assert_eq!(changelog::decode(&c), Err(ChangelogError::Version(99)));
    let c = changelog::encode(&Delta::default(), 1, 1024)
        .unwrap()
        .remove(0);
    assert_eq!(
        changelog::decode(&c[..c.len() - 3]),
        Err(ChangelogError::Truncated)
    );
}
