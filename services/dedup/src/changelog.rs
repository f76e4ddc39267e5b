//! The dedup changelog's record format (`tillstream.dedup.changelog`, co-partitioned with the raw
//! topic: changelog partition p holds the state of input partition p). Pure encoding/decoding and
//! the restore-side assembler; the Kafka reading is in `restore.rs`.
//!
//! One [`Delta`] (one batch of one partition) is written as one or more *chunks*, each a Kafka record
//! of at most `max_bytes` (so no record ever exceeds the broker's message size). Every chunk carries
//! `(group, index, count)`; only the last holds the trailer (next input offset, watermark). A restore
//! applies a delta only when all its chunks were read in order, so a writer that died between chunks
//! leaves nothing half-applied: its batch is simply replayed (that is the at-least-once window).
//!
//! Binary layout (little endian), version 1:
//! `"TSDC" | u8 version | u64 group | u16 index | u16 count | items...`, items tagged
//! 1 = event id (`u128 key, i64 first_seen, u8 n, n x u128 fingerprint`),
//! 2 = device state, 3 = gap record to (re)publish, 4 = trailer (`i64 next_offset, i64 watermark`).
//! Not Avro: this topic is private to the dedup service (no registry subject, `value_subjects = []`).

use std::collections::BTreeMap;

use tillstream_contracts::{GapStatus, SequenceGap};
use uuid::Uuid;

use crate::core::{Delta, DeviceState, GapRange, IdRecord, Published};

pub const MAGIC: &[u8; 4] = b"TSDC";
pub const VERSION: u8 = 1;
const HEADER_LEN: usize = 4 + 1 + 8 + 2 + 2;

const TAG_ID: u8 = 1;
const TAG_DEVICE: u8 = 2;
const TAG_GAP: u8 = 3;
const TAG_TRAILER: u8 = 4;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ChangelogError {
    #[error("not a dedup changelog record (bad magic)")]
    BadMagic,
    #[error("changelog record version {0} is newer than this build understands")]
    Version(u8),
    #[error("changelog record truncated")]
    Truncated,
    #[error("changelog record malformed: {0}")]
    Malformed(String),
    #[error("a delta needs {0} chunks: more than a u16 counts")]
    TooManyChunks(usize),
}

/// Encodes `delta` into chunks of at most `max_bytes` each (an item larger than that gets a chunk
/// of its own).
pub fn encode(delta: &Delta, group: u64, max_bytes: usize) -> Result<Vec<Vec<u8>>, ChangelogError> {
    let mut items: Vec<Vec<u8>> =
        Vec::with_capacity(delta.ids.len() + delta.devices.len() + delta.gaps.len() + 1);
    for r in &delta.ids {
        let mut b = Vec::with_capacity(1 + 16 + 8 + 1 + 16 * r.fingerprints.len());
        b.push(TAG_ID);
        b.extend_from_slice(&r.key.to_le_bytes());
        b.extend_from_slice(&r.first_seen.to_le_bytes());
        let n = u8::try_from(r.fingerprints.len())
            .map_err(|_| ChangelogError::Malformed("more than 255 fingerprints".into()))?;
        b.push(n);
        for fp in &r.fingerprints {
            b.extend_from_slice(&fp.to_le_bytes());
        }
        items.push(b);
    }
    for (name, s) in &delta.devices {
        let mut b = Vec::with_capacity(64 + 56 * s.gaps.len());
        b.push(TAG_DEVICE);
        put_str(&mut b, name);
        put_device(&mut b, s);
        items.push(b);
    }
    for g in &delta.gaps {
        let mut b = Vec::with_capacity(128);
        b.push(TAG_GAP);
        put_gap(&mut b, g);
        items.push(b);
    }
    let mut trailer = vec![TAG_TRAILER];
    trailer.extend_from_slice(&delta.next_offset.to_le_bytes());
    trailer.extend_from_slice(&delta.watermark.to_le_bytes());
    items.push(trailer);

    let mut bodies: Vec<Vec<u8>> = Vec::new();
    let mut cur: Vec<u8> = Vec::new();
    let budget = max_bytes.saturating_sub(HEADER_LEN).max(1);
    for item in items {
        if !cur.is_empty() && cur.len() + item.len() > budget {
            bodies.push(std::mem::take(&mut cur));
        }
        cur.extend_from_slice(&item);
    }
    bodies.push(cur);
    let count =
        u16::try_from(bodies.len()).map_err(|_| ChangelogError::TooManyChunks(bodies.len()))?;
    Ok(bodies
        .into_iter()
        .enumerate()
        .map(|(i, body)| {
            let mut out = Vec::with_capacity(HEADER_LEN + body.len());
            out.extend_from_slice(MAGIC);
            out.push(VERSION);
            out.extend_from_slice(&group.to_le_bytes());
            out.extend_from_slice(&(i as u16).to_le_bytes());
            out.extend_from_slice(&count.to_le_bytes());
            out.extend_from_slice(&body);
            out
        })
        .collect())
}

/// One decoded chunk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chunk {
    pub group: u64,
    pub index: u16,
    pub count: u16,
    pub ids: Vec<IdRecord>,
    pub devices: Vec<(String, DeviceState)>,
    pub gaps: Vec<SequenceGap>,
    /// (next_offset, watermark): only in a group's last chunk.
    pub trailer: Option<(i64, i64)>,
}

pub fn decode(bytes: &[u8]) -> Result<Chunk, ChangelogError> {
    let mut r = Reader { b: bytes };
    if r.take(4)? != MAGIC {
        return Err(ChangelogError::BadMagic);
    }
    let version = r.u8()?;
    if version != VERSION {
        return Err(ChangelogError::Version(version));
    }
    let group = r.u64()?;
    let index = r.u16()?;
    let count = r.u16()?;
    let mut chunk = Chunk {
        group,
        index,
        count,
        ids: Vec::new(),
        devices: Vec::new(),
        gaps: Vec::new(),
        trailer: None,
    };
    while !r.b.is_empty() {
        match r.u8()? {
            TAG_ID => {
                let key = r.u128()?;
                let first_seen = r.i64()?;
                let n = r.u8()? as usize;
                let mut fingerprints = Vec::with_capacity(n);
                for _ in 0..n {
                    fingerprints.push(r.u128()?);
                }
                chunk.ids.push(IdRecord {
                    key,
                    first_seen,
                    fingerprints,
                });
            }
            TAG_DEVICE => {
                let name = r.string()?;
                let s = r.device()?;
                chunk.devices.push((name, s));
            }
            TAG_GAP => chunk.gaps.push(r.gap()?),
            TAG_TRAILER => chunk.trailer = Some((r.i64()?, r.i64()?)),
            t => return Err(ChangelogError::Malformed(format!("unknown item tag {t}"))),
        }
    }
    Ok(chunk)
}

/// Turns the chunks of a changelog partition, read in order, into complete deltas.
#[derive(Debug, Default)]
pub struct Assembler {
    pending: Option<Delta>,
    group: u64,
    expect: u16,
    /// Chunk groups that were started and never finished (a writer died mid-delta), or read out
    /// of order: dropped.
    pub incomplete: u64,
}

impl Assembler {
    pub fn new() -> Self {
        Self::default()
    }

    /// Feeds one chunk; returns the delta it completes, if any.
    pub fn push(&mut self, c: Chunk) -> Option<Delta> {
        if c.index == 0 {
            if self.pending.take().is_some() {
                self.incomplete += 1;
            }
            self.pending = Some(Delta::default());
            self.group = c.group;
            self.expect = 0;
        }
        if self.pending.is_none() || c.group != self.group || c.index != self.expect {
            if self.pending.take().is_some() || c.index != 0 {
                self.incomplete += 1;
            }
            return None;
        }
        let d = self.pending.as_mut()?;
        d.ids.extend(c.ids);
        d.devices.extend(c.devices);
        d.gaps.extend(c.gaps);
        self.expect += 1;
        if c.index + 1 == c.count {
            let (next_offset, watermark) = c.trailer?;
            let mut done = self.pending.take()?;
            done.next_offset = next_offset;
            done.watermark = watermark;
            return Some(done);
        }
        None
    }

    /// Call at the end of the partition: a group still open there was never finished.
    pub fn finish(&mut self) {
        if self.pending.take().is_some() {
            self.incomplete += 1;
        }
    }
}

fn put_str(b: &mut Vec<u8>, s: &str) {
    b.extend_from_slice(&(s.len() as u32).to_le_bytes());
    b.extend_from_slice(s.as_bytes());
}

fn put_i64(b: &mut Vec<u8>, v: i64) {
    b.extend_from_slice(&v.to_le_bytes());
}

fn put_device(b: &mut Vec<u8>, s: &DeviceState) {
    put_str(b, &s.store_id);
    b.extend_from_slice(&s.epoch.to_le_bytes());
    for v in [
        s.epoch_key,
        s.base,
        s.high,
        s.last_seen,
        s.updated_offset,
        s.logged_at,
    ] {
        put_i64(b, v);
    }
    b.extend_from_slice(&(s.gaps.len() as u32).to_le_bytes());
    for (from, r) in &s.gaps {
        put_i64(b, *from);
        put_i64(b, r.to);
        put_i64(b, r.opened_at);
        match &r.published {
            None => b.push(0),
            Some(p) => {
                b.push(1);
                b.extend_from_slice(p.id.as_bytes());
                put_i64(b, p.from);
                put_i64(b, p.to);
            }
        }
    }
}

fn status_code(s: GapStatus) -> u8 {
    match s {
        GapStatus::Opened => 0,
        GapStatus::PartiallyFilled => 1,
        GapStatus::Filled => 2,
        GapStatus::DeviceReset => 3,
    }
}

fn put_gap(b: &mut Vec<u8>, g: &SequenceGap) {
    put_str(b, &g.gap_id);
    put_str(b, &g.device_id);
    put_str(b, &g.store_id);
    put_i64(b, g.from_seq);
    put_i64(b, g.to_seq);
    b.push(status_code(g.status));
    put_i64(b, g.still_missing);
    put_i64(b, g.observed_at);
}

struct Reader<'a> {
    b: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], ChangelogError> {
        if self.b.len() < n {
            return Err(ChangelogError::Truncated);
        }
        let (head, rest) = self.b.split_at(n);
        self.b = rest;
        Ok(head)
    }
    fn array<const N: usize>(&mut self) -> Result<[u8; N], ChangelogError> {
        let s = self.take(N)?;
        let mut a = [0u8; N];
        a.copy_from_slice(s);
        Ok(a)
    }
    fn u8(&mut self) -> Result<u8, ChangelogError> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> Result<u16, ChangelogError> {
        Ok(u16::from_le_bytes(self.array()?))
    }
    fn u32(&mut self) -> Result<u32, ChangelogError> {
        Ok(u32::from_le_bytes(self.array()?))
    }
    fn u64(&mut self) -> Result<u64, ChangelogError> {
        Ok(u64::from_le_bytes(self.array()?))
    }
    fn i64(&mut self) -> Result<i64, ChangelogError> {
        Ok(i64::from_le_bytes(self.array()?))
    }
    fn u128(&mut self) -> Result<u128, ChangelogError> {
        Ok(u128::from_le_bytes(self.array()?))
    }
    fn string(&mut self) -> Result<String, ChangelogError> {
        let n = self.u32()? as usize;
        let s = self.take(n)?;
        String::from_utf8(s.to_vec()).map_err(|e| ChangelogError::Malformed(e.to_string()))
    }
    fn device(&mut self) -> Result<DeviceState, ChangelogError> {
        let store_id = self.string()?;
        let epoch = self.u32()?;
        let epoch_key = self.i64()?;
        let base = self.i64()?;
        let high = self.i64()?;
        let last_seen = self.i64()?;
        let updated_offset = self.i64()?;
        let logged_at = self.i64()?;
        let n = self.u32()? as usize;
        let mut gaps = BTreeMap::new();
        for _ in 0..n {
            let from = self.i64()?;
            let to = self.i64()?;
            let opened_at = self.i64()?;
            let published = match self.u8()? {
                0 => None,
                1 => Some(Published {
                    id: Uuid::from_bytes(self.array()?),
                    from: self.i64()?,
                    to: self.i64()?,
                }),
                x => return Err(ChangelogError::Malformed(format!("published flag {x}"))),
            };
            gaps.insert(
                from,
                GapRange {
                    to,
                    opened_at,
                    published,
                },
            );
        }
        Ok(DeviceState {
            store_id,
            epoch,
            epoch_key,
            base,
            high,
            gaps,
            last_seen,
            updated_offset,
            logged_at,
        })
    }
    fn gap(&mut self) -> Result<SequenceGap, ChangelogError> {
        let gap_id = self.string()?;
        let device_id = self.string()?;
        let store_id = self.string()?;
        let from_seq = self.i64()?;
        let to_seq = self.i64()?;
        let status = match self.u8()? {
            0 => GapStatus::Opened,
            1 => GapStatus::PartiallyFilled,
            2 => GapStatus::Filled,
            3 => GapStatus::DeviceReset,
            x => return Err(ChangelogError::Malformed(format!("gap status {x}"))),
        };
        Ok(SequenceGap {
            gap_id,
            device_id,
            store_id,
            from_seq,
            to_seq,
            status,
            still_missing: self.i64()?,
            observed_at: self.i64()?,
        })
    }
}
