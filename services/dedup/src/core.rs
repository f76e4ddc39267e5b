//! The pure dedup core: one [`PartitionDedup`] per input partition turns a batch of decoded events into
//! [`Decisions`] (emit / drop as duplicate / identity collision, sequence-gap records, and the
//! changelog [`Delta`] that makes the new state durable). No I/O, no clock: every decision is a
//! function of the state and the input records (their offsets and Kafka timestamps), so a replay
//! of the same batch from the same state gives byte-identical decisions.
//!
//! Delivery guarantee: none by itself. The service applies the decisions in the order "outputs
//! delivered -> changelog delta delivered -> gap records -> offsets stored" (see `service.rs`).
//!
//! # Identity
//! Identity is `event_id`, kept as the xxh3-128 hash of its bytes (16 bytes a key). Same id and same
//! [`DeviceEvent::fingerprint`](tillstream_contracts::DeviceEvent::fingerprint) = duplicate (dropped,
//! counted). Same id and a different fingerprint = identity collision: a `ConflictDetected
//! {kind: IDENTITY_COLLISION}` record, the event is never emitted; each distinct colliding
//! fingerprint is reported once (its id is `uuid_v5(event_id, first fp, new fp)`, so a replay reports
//! the same id again, never a new one).
//!
//! # Time and the retention horizon
//! Time is *record time*: the partition watermark is the highest Kafka timestamp seen so far,
//! advanced record by record. An event id is remembered for `horizon_ms` (default 7 days) after it was
//! first seen; after that it is logically gone (checked on every lookup, so when the memory is
//! actually freed does not change any decision). An event whose own `occurred_at` is older than
//! `watermark - horizon` is *beyond the horizon*: an earlier copy of it may already have been
//! forgotten, so the dedup service can no longer promise it is the only copy. It is still emitted
//! (a sale must not be lost; every sink is idempotent on `event_id`), flagged with the
//! `tillstream-dedup-beyond-horizon` header and counted; it is remembered like any other event, and
//! for sequence accounting it may only fill an open gap (never open one, move a baseline or reset).
//!
//! # Sequence accounting (per device)
//! A device's state is an *epoch* (it starts at the device's first accounted event, and again at
//! every reset), the lowest and highest seq accounted in it (`base`, `high`) and its open gaps:
//! disjoint contiguous ranges of missing seqs. Every seq in `base..=high` that is not in an open gap
//! has been seen.
//! - A batch's events are sorted per device by `(occurred_at, seq)` before accounting, and gap records
//!   are the batch's *net* effect: a gap opened and filled within one batch produces no record.
//!   (`occurred_at` first, so that a reset inside one batch, old events then seq 1, 2, ... with a
//!   later clock, is seen as a reset and not as a huge gap.)
//! - seq above `high`: opens the gap `high+1 ..= seq-1` if non-empty.
//! - seq inside an open gap: late fill. The gap shrinks or splits; every open gap record always
//!   carries the exact current missing range (`still_missing = to - from + 1`). A range keeps the id
//!   it was first opened with; the right part of a split is a new range with its own id (OPENED).
//!   When nothing is left: FILLED.
//! - seq already seen with a *new* event id: the device was reset (re-installed, counter restarted).
//!   Every open gap of the old epoch is closed with a DEVICE_RESET record (still_missing = what was
//!   missing), plus one DEVICE_RESET marker (`from_seq` = the new seq, `to_seq` = the old high,
//!   still_missing 0), and a new epoch starts at this event. Events whose `occurred_at` is before
//!   the new epoch started are stragglers of the old epoch: emitted, not accounted, counted.
//! - A device unknown to the state (never seen, or silent for longer than the horizon with no open
//!   gap, or the service deployed on a running fleet) has no trustworthy history: its first seq
//!   becomes the *baseline* and no gap is opened below it (counted when that seq is not 1). A seq
//!   that later arrives below the baseline extends it downwards (and opens the gap between, if any):
//!   that is a new device whose first events were merely late.
//! - A device with open gaps is never forgotten (its gaps are exactly what must be investigated);
//!   one without gaps is forgotten after `horizon_ms` of silence.
//! - Gap ids: `uuid_v5("gap/{device}/{epoch}/{epoch start}/{from}-{to}")` of the range as first
//!   opened; the epoch start is the `occurred_at` of the event that started the epoch, so a device
//!   forgotten and seen again never reuses an id.
//!
//! Why one file (~940 lines): one pure state machine (per-device sequences, gaps, epochs, horizon)
//! whose transitions share private state; its tests are apart in `core_tests.rs`.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::hash::{BuildHasherDefault, Hasher};

use tillstream_contracts::{ConflictDetected, ConflictKind, GapStatus, SequenceGap, Severity};
use uuid::Uuid;

pub const DAY_MS: i64 = 86_400_000;

/// Name written into `ConflictDetected.detector`.
pub const DETECTOR: &str = "dedup";

/// Tuning of the core (see the module doc for what each bound means).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CoreConfig {
    /// How long (record time) an event id is remembered, and the age of `occurred_at` beyond which an
    /// event is flagged beyond the horizon. Default 7 days (how long a POS may stay offline).
    pub horizon_ms: i64,
    /// A device state not written to the changelog for this long (record time) is written again,
    /// so it survives the changelog's retention (8 days) however long the device stays quiet.
    pub device_refresh_ms: i64,
    /// Open gaps tracked per device; beyond it the lowest range is abandoned (counted, logged).
    pub max_open_gaps_per_device: usize,
}

impl Default for CoreConfig {
    fn default() -> Self {
        CoreConfig {
            horizon_ms: 7 * DAY_MS,
            device_refresh_ms: DAY_MS,
            max_open_gaps_per_device: 4096,
        }
    }
}

/// One decoded input record, as the core sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Input {
    /// Offset in the input partition.
    pub offset: i64,
    /// Kafka timestamp of the record (ms); negative when the broker gave none.
    pub record_time: i64,
    pub event_type: &'static str,
    pub event_id: String,
    pub device_id: String,
    pub store_id: String,
    pub seq: i64,
    pub occurred_at: i64,
    pub fingerprint: u128,
}

/// What happens to one input record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// The record is below the partition's restored next offset: already processed and made
    /// durable by an earlier owner. Nothing to do.
    Covered,
    /// First copy: emit it (with the beyond-horizon flag when its `occurred_at` is that old).
    Emit { beyond_horizon: bool },
    /// Same id, same content as an earlier copy: dropped.
    Duplicate,
    /// Same id, different content: not emitted; a conflict record is in `Decisions::conflicts`
    /// (unless this exact colliding content was reported before).
    Collision,
}

/// Counts of one batch, turned into metrics by the service.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BatchStats {
    pub inputs: u64,
    pub covered: u64,
    pub emitted: u64,
    pub duplicates: u64,
    pub collisions: u64,
    pub collisions_repeated: u64,
    pub beyond_horizon: u64,
    pub baselines: u64,
    pub resets: u64,
    pub stragglers: u64,
    pub unsequenced: u64,
    pub beyond_horizon_unaccounted: u64,
    pub gaps_abandoned: u64,
    pub ids_expired: u64,
    pub devices_expired: u64,
}

impl BatchStats {
    pub fn add(&mut self, o: &BatchStats) {
        self.inputs += o.inputs;
        self.covered += o.covered;
        self.emitted += o.emitted;
        self.duplicates += o.duplicates;
        self.collisions += o.collisions;
        self.collisions_repeated += o.collisions_repeated;
        self.beyond_horizon += o.beyond_horizon;
        self.baselines += o.baselines;
        self.resets += o.resets;
        self.stragglers += o.stragglers;
        self.unsequenced += o.unsequenced;
        self.beyond_horizon_unaccounted += o.beyond_horizon_unaccounted;
        self.gaps_abandoned += o.gaps_abandoned;
        self.ids_expired += o.ids_expired;
        self.devices_expired += o.devices_expired;
    }
}

/// An event id as the changelog stores it: its key, when it was first seen (record time) and every
/// fingerprint met under that id (the first is the emitted one; the others were collisions).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdRecord {
    pub key: u128,
    pub first_seen: i64,
    pub fingerprints: Vec<u128>,
}

/// What one batch changed, to be written to the changelog (after the batch's outputs are delivered)
/// and re-applied on restore.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Delta {
    /// New or changed event ids (full entry: replace on restore).
    pub ids: Vec<IdRecord>,
    /// Devices changed or refreshed (full state: replace on restore unless older).
    pub devices: Vec<(String, DeviceState)>,
    /// Next input offset to process once this delta is applied.
    pub next_offset: i64,
    /// Partition watermark (record time) after the batch.
    pub watermark: i64,
    /// The batch's gap records. Published after the changelog record; a restore publishes the last
    /// delta's gap records again (same ids and content), so a crash in between loses none.
    pub gaps: Vec<SequenceGap>,
}

impl Delta {
    /// True when applying it would change nothing but the offsets and watermark.
    pub fn is_trivial(&self) -> bool {
        self.ids.is_empty() && self.devices.is_empty() && self.gaps.is_empty()
    }
}

/// Everything the service must do for one batch of one partition.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Decisions {
    /// One per input, in input order.
    pub verdicts: Vec<Verdict>,
    pub conflicts: Vec<ConflictDetected>,
    pub delta: Delta,
    pub stats: BatchStats,
}

/// A published gap: the id it was opened with and the range last published for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Published {
    pub id: Uuid,
    pub from: i64,
    pub to: i64,
}

/// One open gap (the key in `DeviceState::gaps` is its first missing seq).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GapRange {
    /// Last missing seq (inclusive).
    pub to: i64,
    /// Record time the range (or the range it was split from) was opened.
    pub opened_at: i64,
    /// `None` while the range exists only inside the batch being processed.
    pub published: Option<Published>,
}

/// Sequence state of one device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceState {
    pub store_id: String,
    pub epoch: u32,
    /// `occurred_at` of the event that started the epoch.
    pub epoch_key: i64,
    pub base: i64,
    pub high: i64,
    pub gaps: BTreeMap<i64, GapRange>,
    /// Record time of the last accounted event.
    pub last_seen: i64,
    /// Input offset of the last accounted event (a restore never lets an older state replace a newer).
    pub updated_offset: i64,
    /// Watermark when the state was last put in a delta.
    pub logged_at: i64,
}

impl DeviceState {
    pub fn missing(&self) -> i64 {
        self.gaps.iter().map(|(f, r)| r.to - f + 1).sum()
    }

    pub fn oldest_gap(&self) -> Option<i64> {
        self.gaps.values().map(|r| r.opened_at).min()
    }
}

/// Per-store gap summary for the gauges.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StoreGaps {
    pub open: u64,
    pub missing: i64,
    pub oldest_opened_at: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct IdEntry {
    first_seen: i64,
    fingerprint: u128,
    /// Colliding fingerprints (rare): boxed so an entry stays 48 bytes.
    others: Option<Box<[u128]>>,
}

impl IdEntry {
    fn knows(&self, fp: u128) -> bool {
        self.fingerprint == fp || self.others.as_ref().is_some_and(|o| o.contains(&fp))
    }

    fn record(&self, key: u128) -> IdRecord {
        let mut fingerprints = vec![self.fingerprint];
        if let Some(o) = &self.others {
            fingerprints.extend(o.iter().copied());
        }
        IdRecord {
            key,
            first_seen: self.first_seen,
            fingerprints,
        }
    }
}

/// Keys are already xxh3 hashes: use their low 64 bits as the hash.
#[derive(Default)]
pub struct KeyHasher(u64);

impl Hasher for KeyHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(*b);
        }
    }
    fn write_u128(&mut self, i: u128) {
        self.0 = i as u64;
    }
}

type KeyMap<V> = HashMap<u128, V, BuildHasherDefault<KeyHasher>>;

/// The identity key of an event id.
pub fn id_key(event_id: &str) -> u128 {
    xxhash_rust::xxh3::xxh3_128(event_id.as_bytes())
}

fn uuid5(name: &str) -> Uuid {
    Uuid::new_v5(&Uuid::NAMESPACE_OID, name.as_bytes())
}

/// Deterministic id of an identity collision between two contents of one event id.
pub fn conflict_id(event_id: &str, first: u128, new: u128) -> String {
    uuid5(&format!(
        "identity_collision/{event_id}/{first:032x}/{new:032x}"
    ))
    .to_string()
}

/// Deterministic id of a gap as first opened.
pub fn gap_id(device_id: &str, epoch: u32, epoch_key: i64, from: i64, to: i64) -> Uuid {
    uuid5(&format!("gap/{device_id}/{epoch}/{epoch_key}/{from}-{to}"))
}

fn reset_marker_id(device_id: &str, epoch: u32, epoch_key: i64) -> Uuid {
    uuid5(&format!("gap/{device_id}/{epoch}/{epoch_key}/reset"))
}

/// The dedup state of one input partition and its decision function.
#[derive(Debug, Clone)]
pub struct PartitionDedup {
    config: CoreConfig,
    partition: i32,
    ids: KeyMap<IdEntry>,
    /// (first_seen, key) in insertion order: first_seen is the running watermark, so it is sorted
    /// (a restore of a zombie writer's records may add a few out of order: they are still expired
    /// logically on lookup).
    expiry: VecDeque<(i64, u128)>,
    devices: HashMap<String, DeviceState>,
    watermark: i64,
    next_offset: Option<i64>,
    next_maintenance: i64,
}

/// One emitted event as sequence accounting sees it.
#[derive(Debug, Clone, Copy)]
struct SeqEvent<'a> {
    seq: i64,
    occurred_at: i64,
    wm: i64,
    offset: i64,
    beyond: bool,
    store_id: &'a str,
}

impl PartitionDedup {
    pub fn new(partition: i32, config: CoreConfig) -> Self {
        PartitionDedup {
            config,
            partition,
            ids: KeyMap::default(),
            expiry: VecDeque::new(),
            devices: HashMap::new(),
            watermark: i64::MIN,
            next_offset: None,
            next_maintenance: i64::MIN,
        }
    }

    pub fn partition(&self) -> i32 {
        self.partition
    }

    pub fn config(&self) -> &CoreConfig {
        &self.config
    }

    /// Highest record time seen (`i64::MIN` before the first record).
    pub fn watermark(&self) -> i64 {
        self.watermark
    }

    /// The first input offset not yet covered by the state, if known.
    pub fn next_offset(&self) -> Option<i64> {
        self.next_offset
    }

    /// Event ids held in memory (including ones logically expired but not yet freed).
    pub fn id_count(&self) -> usize {
        self.ids.len()
    }

    pub fn device_count(&self) -> usize {
        self.devices.len()
    }

    pub fn device(&self, device_id: &str) -> Option<&DeviceState> {
        self.devices.get(device_id)
    }

    pub fn devices(&self) -> impl Iterator<Item = (&String, &DeviceState)> {
        self.devices.iter()
    }

    fn cutoff(&self, wm: i64) -> i64 {
        wm.saturating_sub(self.config.horizon_ms)
    }

    /// Open gaps per store (for the gauges).
    pub fn gaps_by_store(&self) -> BTreeMap<String, StoreGaps> {
        let mut out: BTreeMap<String, StoreGaps> = BTreeMap::new();
        for d in self.devices.values() {
            let s = out.entry(d.store_id.clone()).or_default();
            s.open += d.gaps.len() as u64;
            s.missing += d.missing();
            if let Some(o) = d.oldest_gap() {
                s.oldest_opened_at = Some(s.oldest_opened_at.map_or(o, |x| x.min(o)));
            }
        }
        out
    }

    /// Decides one batch of this partition. `end_offset` is the highest offset the batch covers
    /// (including records that were dead-lettered before reaching the core).
    pub fn process(&mut self, inputs: &[Input], end_offset: i64) -> Decisions {
        let mut d = Decisions {
            verdicts: Vec::with_capacity(inputs.len()),
            ..Decisions::default()
        };
        let mut changed_ids: Vec<u128> = Vec::new();
        // device -> its emitted events of this batch; devices in order of first appearance.
        let mut per_device: HashMap<&str, Vec<SeqEvent<'_>>> = HashMap::new();
        let mut device_order: Vec<&str> = Vec::new();
        let horizon = self.config.horizon_ms;

        for inp in inputs {
            d.stats.inputs += 1;
            if self.next_offset.is_some_and(|n| inp.offset < n) {
                d.verdicts.push(Verdict::Covered);
                d.stats.covered += 1;
                continue;
            }
            if inp.record_time >= 0 && inp.record_time > self.watermark {
                self.watermark = inp.record_time;
            }
            let wm = self.watermark;
            let cutoff = wm.saturating_sub(horizon);
            let key = id_key(&inp.event_id);
            let beyond = inp.occurred_at < cutoff;
            let verdict = match self.ids.get_mut(&key) {
                Some(e) if e.first_seen >= cutoff => {
                    if e.knows(inp.fingerprint) {
                        if e.fingerprint == inp.fingerprint {
                            d.stats.duplicates += 1;
                            Verdict::Duplicate
                        } else {
                            d.stats.collisions_repeated += 1;
                            Verdict::Collision
                        }
                    } else {
                        d.stats.collisions += 1;
                        d.conflicts.push(collision(inp, e, self.partition));
                        let mut others = e.others.take().map(Vec::from).unwrap_or_default();
                        others.push(inp.fingerprint);
                        e.others = Some(others.into_boxed_slice());
                        changed_ids.push(key);
                        Verdict::Collision
                    }
                }
                _ => {
                    self.ids.insert(
                        key,
                        IdEntry {
                            first_seen: wm,
                            fingerprint: inp.fingerprint,
                            others: None,
                        },
                    );
                    self.expiry.push_back((wm, key));
                    changed_ids.push(key);
                    d.stats.emitted += 1;
                    if beyond {
                        d.stats.beyond_horizon += 1;
                    }
                    let evs = per_device.entry(inp.device_id.as_str()).or_default();
                    if evs.is_empty() {
                        device_order.push(inp.device_id.as_str());
                    }
                    evs.push(SeqEvent {
                        seq: inp.seq,
                        occurred_at: inp.occurred_at,
                        wm,
                        offset: inp.offset,
                        beyond,
                        store_id: &inp.store_id,
                    });
                    Verdict::Emit {
                        beyond_horizon: beyond,
                    }
                }
            };
            d.verdicts.push(verdict);
        }

        for device in device_order {
            let mut evs = per_device.remove(device).unwrap_or_default();
            self.account_device(device, &mut evs, &mut d);
        }

        d.delta.ids = changed_ids
            .iter()
            .filter_map(|k| self.ids.get(k).map(|e| e.record(*k)))
            .collect();
        // A key changed twice in one batch (insert then collision) appears once, last state.
        if d.stats.collisions > 0 {
            let mut seen = KeyMap::<()>::default();
            let mut uniq: Vec<IdRecord> = Vec::with_capacity(d.delta.ids.len());
            for r in d.delta.ids.drain(..).rev() {
                if seen.insert(r.key, ()).is_none() {
                    uniq.push(r);
                }
            }
            uniq.reverse();
            d.delta.ids = uniq;
        }
        self.maintain(&mut d);
        let next = (end_offset + 1).max(self.next_offset.unwrap_or(i64::MIN));
        self.next_offset = Some(next);
        d.delta.next_offset = next;
        d.delta.watermark = self.watermark;
        d
    }

    fn account_device(&mut self, device: &str, evs: &mut [SeqEvent<'_>], d: &mut Decisions) {
        evs.sort_by_key(|e| (e.occurred_at, e.seq, e.offset));
        let horizon = self.config.horizon_ms;
        let mut state = self.devices.remove(device);
        let mut changed = false;
        let mut last_wm = i64::MIN;
        for e in evs.iter() {
            last_wm = last_wm.max(e.wm);
            let cutoff = e.wm.saturating_sub(horizon);
            if state
                .as_ref()
                .is_some_and(|s| s.gaps.is_empty() && s.last_seen < cutoff)
            {
                state = None;
            }
            if e.seq <= 0 {
                d.stats.unsequenced += 1;
                continue;
            }
            let Some(s) = state.as_mut() else {
                if e.beyond {
                    d.stats.beyond_horizon_unaccounted += 1;
                    continue;
                }
                if e.seq > 1 {
                    d.stats.baselines += 1;
                }
                state = Some(DeviceState {
                    store_id: e.store_id.to_string(),
                    epoch: 0,
                    epoch_key: e.occurred_at,
                    base: e.seq,
                    high: e.seq,
                    gaps: BTreeMap::new(),
                    last_seen: e.wm,
                    updated_offset: e.offset,
                    logged_at: i64::MIN,
                });
                changed = true;
                continue;
            };
            if s.epoch > 0 && e.occurred_at < s.epoch_key {
                d.stats.stragglers += 1;
                continue;
            }
            let in_gap = s
                .gaps
                .range(..=e.seq)
                .next_back()
                .filter(|(_, r)| r.to >= e.seq)
                .map(|(f, _)| *f);
            if e.beyond && in_gap.is_none() {
                d.stats.beyond_horizon_unaccounted += 1;
                continue;
            }
            if s.store_id != e.store_id {
                s.store_id = e.store_id.to_string();
            }
            if let Some(from) = in_gap {
                fill(device, s, from, e.seq, e.wm, &mut d.delta.gaps);
            } else if e.seq > s.high {
                if e.seq > s.high + 1 {
                    s.gaps.insert(
                        s.high + 1,
                        GapRange {
                            to: e.seq - 1,
                            opened_at: e.wm,
                            published: None,
                        },
                    );
                }
                s.high = e.seq;
            } else if e.seq < s.base {
                if e.seq + 1 < s.base {
                    s.gaps.insert(
                        e.seq + 1,
                        GapRange {
                            to: s.base - 1,
                            opened_at: e.wm,
                            published: None,
                        },
                    );
                }
                s.base = e.seq;
            } else {
                // Seen before under another event id: the device's counter restarted.
                d.stats.resets += 1;
                reset(device, s, e, &mut d.delta.gaps);
            }
            while s.gaps.len() > self.config.max_open_gaps_per_device {
                if let Some((from, r)) = s.gaps.pop_first() {
                    d.stats.gaps_abandoned += 1;
                    tracing::warn!(
                        device,
                        from,
                        to = r.to,
                        "too many open gaps on one device: lowest range no longer tracked"
                    );
                }
            }
            s.last_seen = s.last_seen.max(e.wm);
            s.updated_offset = s.updated_offset.max(e.offset);
            changed = true;
        }
        let Some(mut s) = state else {
            return;
        };
        if changed {
            publish_changes(device, &mut s, last_wm, &mut d.delta.gaps);
            s.logged_at = self.watermark;
            d.delta.devices.push((device.to_string(), s.clone()));
        }
        self.devices.insert(device.to_string(), s);
    }

    /// Frees logically expired ids and devices, and puts devices due for a refresh in the delta.
    /// Runs at most once per hour of record time (or per `device_refresh_ms / 24`).
    fn maintain(&mut self, d: &mut Decisions) {
        let wm = self.watermark;
        let cutoff = self.cutoff(wm);
        while let Some(&(first_seen, key)) = self.expiry.front() {
            if first_seen >= cutoff {
                break;
            }
            self.expiry.pop_front();
            if self.ids.get(&key).is_some_and(|e| e.first_seen < cutoff) {
                self.ids.remove(&key);
                d.stats.ids_expired += 1;
            }
        }
        if wm < self.next_maintenance {
            return;
        }
        let step = (self.config.device_refresh_ms / 24).max(1);
        self.next_maintenance = wm.saturating_add(step);
        let before = self.devices.len();
        self.devices
            .retain(|_, s| !(s.gaps.is_empty() && s.last_seen < cutoff));
        d.stats.devices_expired += (before - self.devices.len()) as u64;
        let refresh_before = wm.saturating_sub(self.config.device_refresh_ms);
        let mut due: Vec<&String> = self
            .devices
            .iter()
            .filter(|(_, s)| s.logged_at < refresh_before)
            .map(|(k, _)| k)
            .collect();
        due.sort();
        let due: Vec<String> = due.into_iter().cloned().collect();
        // Devices changed in this batch were logged at `wm` already, so they are never due here.
        for k in due {
            if let Some(s) = self.devices.get_mut(&k) {
                s.logged_at = wm;
                d.delta.devices.push((k, s.clone()));
            }
        }
    }

    /// Applies a changelog delta (restore). Device states older than the one held are ignored.
    pub fn apply(&mut self, delta: &Delta) {
        for r in &delta.ids {
            let Some((first, rest)) = r.fingerprints.split_first() else {
                continue;
            };
            self.ids.insert(
                r.key,
                IdEntry {
                    first_seen: r.first_seen,
                    fingerprint: *first,
                    others: (!rest.is_empty()).then(|| rest.into()),
                },
            );
            self.expiry.push_back((r.first_seen, r.key));
        }
        for (k, s) in &delta.devices {
            match self.devices.get(k) {
                Some(cur) if cur.updated_offset > s.updated_offset => {}
                _ => {
                    self.devices.insert(k.clone(), s.clone());
                }
            }
        }
        self.watermark = self.watermark.max(delta.watermark);
        self.next_offset = Some(
            self.next_offset
                .map_or(delta.next_offset, |n| n.max(delta.next_offset)),
        );
    }

    /// After the last `apply` of a restore: frees what is logically expired.
    pub fn finish_restore(&mut self) {
        let mut scratch = Decisions::default();
        self.next_maintenance = i64::MIN;
        self.maintain(&mut scratch);
    }

    /// The logically live state as one delta, sorted (for tests comparing a live state with a
    /// restored one: memory not yet freed and refresh bookkeeping are left out).
    pub fn snapshot(&self) -> Delta {
        let cutoff = self.cutoff(self.watermark);
        let mut ids: Vec<IdRecord> = self
            .ids
            .iter()
            .filter(|(_, e)| e.first_seen >= cutoff)
            .map(|(k, e)| e.record(*k))
            .collect();
        ids.sort_by_key(|r| r.key);
        let mut devices: Vec<(String, DeviceState)> = self
            .devices
            .iter()
            .filter(|(_, s)| !(s.gaps.is_empty() && s.last_seen < cutoff))
            .map(|(k, s)| {
                let mut s = s.clone();
                s.logged_at = 0;
                (k.clone(), s)
            })
            .collect();
        devices.sort_by(|a, b| a.0.cmp(&b.0));
        Delta {
            ids,
            devices,
            next_offset: self.next_offset.unwrap_or(-1),
            watermark: self.watermark,
            gaps: Vec::new(),
        }
    }
}

fn collision(inp: &Input, first: &IdEntry, partition: i32) -> ConflictDetected {
    let detail = BTreeMap::from([
        (
            "reason".to_string(),
            "same event_id, different content".to_string(),
        ),
        ("event_type".to_string(), inp.event_type.to_string()),
        ("device_id".to_string(), inp.device_id.clone()),
        ("seq".to_string(), inp.seq.to_string()),
        (
            "first_fingerprint".to_string(),
            format!("{:032x}", first.fingerprint),
        ),
        (
            "new_fingerprint".to_string(),
            format!("{:032x}", inp.fingerprint),
        ),
        ("first_seen_at".to_string(), first.first_seen.to_string()),
        ("source_partition".to_string(), partition.to_string()),
        ("source_offset".to_string(), inp.offset.to_string()),
    ]);
    ConflictDetected {
        conflict_id: conflict_id(&inp.event_id, first.fingerprint, inp.fingerprint),
        kind: ConflictKind::IdentityCollision,
        severity: Severity::Critical,
        store_id: inp.store_id.clone(),
        sku: None,
        event_ids: vec![inp.event_id.clone()],
        detail,
        detected_at: inp.record_time.max(0),
        detector: DETECTOR.to_string(),
    }
}

#[allow(clippy::too_many_arguments)]
fn gap_record(
    device: &str,
    store: &str,
    id: &Uuid,
    from: i64,
    to: i64,
    status: GapStatus,
    still_missing: i64,
    observed_at: i64,
) -> SequenceGap {
    SequenceGap {
        gap_id: id.to_string(),
        device_id: device.to_string(),
        store_id: store.to_string(),
        from_seq: from,
        to_seq: to,
        status,
        still_missing,
        observed_at: observed_at.max(0),
    }
}

/// `seq` arrived inside the open range starting at `from`.
fn fill(
    device: &str,
    s: &mut DeviceState,
    from: i64,
    seq: i64,
    wm: i64,
    out: &mut Vec<SequenceGap>,
) {
    let Some(r) = s.gaps.remove(&from) else {
        return;
    };
    match (from == seq, r.to == seq) {
        (true, true) => {
            if let Some(p) = r.published {
                out.push(gap_record(
                    device,
                    &s.store_id,
                    &p.id,
                    p.from,
                    p.to,
                    GapStatus::Filled,
                    0,
                    wm,
                ));
            }
        }
        (true, false) => {
            s.gaps.insert(seq + 1, r);
        }
        (false, true) => {
            s.gaps.insert(from, GapRange { to: seq - 1, ..r });
        }
        (false, false) => {
            s.gaps.insert(from, GapRange { to: seq - 1, ..r });
            s.gaps.insert(
                seq + 1,
                GapRange {
                    to: r.to,
                    opened_at: r.opened_at,
                    published: None,
                },
            );
        }
    }
}

fn reset(device: &str, s: &mut DeviceState, e: &SeqEvent<'_>, out: &mut Vec<SequenceGap>) {
    for (from, r) in std::mem::take(&mut s.gaps) {
        if let Some(p) = r.published {
            out.push(gap_record(
                device,
                &s.store_id,
                &p.id,
                from,
                r.to,
                GapStatus::DeviceReset,
                r.to - from + 1,
                e.wm,
            ));
        }
    }
    out.push(gap_record(
        device,
        &s.store_id,
        &reset_marker_id(device, s.epoch, s.epoch_key),
        e.seq,
        s.high,
        GapStatus::DeviceReset,
        0,
        e.wm,
    ));
    s.epoch += 1;
    s.epoch_key = e.occurred_at;
    s.base = e.seq;
    s.high = e.seq;
}

/// Net effect of a batch on a device's open ranges: OPENED for new ranges, PARTIALLY_FILLED for
/// published ranges whose bounds moved.
fn publish_changes(device: &str, s: &mut DeviceState, wm: i64, out: &mut Vec<SequenceGap>) {
    let (epoch, epoch_key) = (s.epoch, s.epoch_key);
    let store = s.store_id.clone();
    for (from, r) in s.gaps.iter_mut() {
        let (from, to) = (*from, r.to);
        match r.published {
            None => {
                let id = gap_id(device, epoch, epoch_key, from, to);
                out.push(gap_record(
                    device,
                    &store,
                    &id,
                    from,
                    to,
                    GapStatus::Opened,
                    to - from + 1,
                    wm,
                ));
                r.published = Some(Published { id, from, to });
            }
            Some(p) if (p.from, p.to) != (from, to) => {
                out.push(gap_record(
                    device,
                    &store,
                    &p.id,
                    from,
                    to,
                    GapStatus::PartiallyFilled,
                    to - from + 1,
                    wm,
                ));
                r.published = Some(Published { from, to, ..p });
            }
            Some(_) => {}
        }
    }
}

#[cfg(test)]
#[path = "core_tests.rs"]
mod tests;
