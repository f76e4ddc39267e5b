//! The outbox writer thread: appends in arrival order with group commits (each fsync'd), hands the
//! acks back only after the commit, deletes what Kafka confirmed, replaces what Kafka refused for good.
//!
//! Delivery guarantee: an ack leaves only after the record is on disk. When the disk cannot take a
//! commit (full, or failing), nothing is acked (MQTT keeps the messages), deletes keep being
//! committed (a reserve file is given back to make room for them), and appends resume by themselves
//! once the disk has room again.
//!
//! Why one file (~630 lines): the writer is one task whose states (appending, disk full,
//! recovering) share the reserve file and the commit path; the disk probes are in `disk.rs`,
//! reading in `reader.rs`.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use rusqlite::{Connection, params};

use super::disk::{Reserve, free_bytes, is_storage_failure};
use super::{OutboxError, Record, Row, Shared, WriterMsg, encode_headers};
use crate::config::OutboxConfig;
use crate::metrics as m;

pub(super) struct Writer<A> {
    pub(super) conn: Connection,
    pub(super) cfg: OutboxConfig,
    pub(super) shared: Arc<Shared>,
    pub(super) next_id: u64,
    pub(super) acks: tokio::sync::mpsc::UnboundedSender<Vec<A>>,
    /// Room kept for deletes and checkpoints on a full disk.
    pub(super) reserve: Reserve,
    /// Set while the disk cannot take a commit.
    pub(super) stalled: Option<Stall>,
    /// Quarantined records an operator asked to re-drive, loaded into `pending` and not yet
    /// committed back into the outbox.
    pub(super) redriving: std::collections::HashSet<u64>,
    /// When the quarantine table was last checked for re-drive requests.
    pub(super) last_redrive_check: Instant,
}

/// The disk refused a commit: since when, the error, and when room was last probed.
pub(super) struct Stall {
    since: Instant,
    last_probe: Instant,
}

enum Pending<A> {
    Append(Record, A),
    AckOnly(A),
    /// A quarantined record put back by an operator (its quarantine id): appended, not acked.
    Redriven(Record, u64),
}

/// Changes to stored records, committed with the next transaction.
#[derive(Default)]
struct Changes {
    /// Kafka confirmed these ids.
    deletes: Vec<u64>,
    /// Kafka refused these for good: replaced by their dead letters.
    replaces: Vec<(u64, Record)>,
    /// Kafka cannot take their topic: moved to the quarantine table, with the reason.
    quarantines: Vec<(u64, String)>,
}

impl Changes {
    fn urgent(&self) -> bool {
        !self.replaces.is_empty() || !self.quarantines.is_empty()
    }

    fn is_empty(&self) -> bool {
        self.deletes.is_empty() && !self.urgent()
    }
}

/// A commit that did not happen: why, and the inputs it took (to retry them in order).
struct CommitFailed<A> {
    error: rusqlite::Error,
    batch: Vec<Pending<A>>,
}

/// How often a stalled writer checks whether the disk has room again.
const PROBE_EVERY: Duration = Duration::from_millis(500);

/// How often the quarantine table is checked for records an operator asked to re-drive.
const REDRIVE_CHECK_EVERY: Duration = Duration::from_secs(2);

/// Free space a stalled writer waits for when it keeps no reserve.
const MIN_ROOM_TO_RESUME: u64 = 4 * 1024 * 1024;

impl<A: Send + 'static> Writer<A> {
    pub(super) fn run(mut self, rx: Receiver<WriterMsg<A>>) -> Result<(), OutboxError> {
        let mut pending: VecDeque<Pending<A>> = VecDeque::new();
        let mut changes = Changes::default();
        let mut flushes: Vec<tokio::sync::oneshot::Sender<()>> = Vec::new();
        let mut shutdown = false;
        let mut last_delete_commit = Instant::now();
        let mut last_gauges = Instant::now() - Duration::from_secs(10);
        let mut was_full = false;
        loop {
            // Wait only when there is nothing to do now.
            let can_append = !pending.is_empty() && !self.is_full() && self.stalled.is_none();
            let wait = if self.stalled.is_some() && !shutdown {
                PROBE_EVERY
            } else if can_append || changes.urgent() || shutdown {
                Duration::ZERO
            } else if !changes.deletes.is_empty() {
                Duration::from_millis(50).saturating_sub(last_delete_commit.elapsed())
            } else if self.is_full() {
                Duration::from_millis(100)
            } else {
                Duration::from_millis(1000)
            };
            let first = if wait.is_zero() {
                None
            } else {
                match rx.recv_timeout(wait) {
                    Ok(msg) => Some(msg),
                    Err(RecvTimeoutError::Timeout) => None,
                    Err(RecvTimeoutError::Disconnected) => Some(WriterMsg::Shutdown),
                }
            };
            let mut absorb = |msg: WriterMsg<A>| match msg {
                WriterMsg::Append(r, a) => pending.push_back(Pending::Append(r, a)),
                WriterMsg::AckOnly(a) => pending.push_back(Pending::AckOnly(a)),
                WriterMsg::Delivered(ids) => changes.deletes.extend(ids),
                WriterMsg::Replace(id, r) => changes.replaces.push((id, r)),
                WriterMsg::Quarantine(id, reason) => changes.quarantines.push((id, reason)),
                WriterMsg::Flush(tx) => flushes.push(tx),
                WriterMsg::Shutdown => shutdown = true,
            };
            if let Some(msg) = first {
                absorb(msg);
            }
            while let Ok(msg) = rx.try_recv() {
                absorb(msg);
            }
            if self.stalled.is_none() {
                self.load_redrives(&mut pending)?;
            }

            // Take what fits: stop at the first record that would overflow the outbox, so acks
            // stay in arrival order.
            let mut batch: Vec<Pending<A>> = Vec::new();
            let mut batch_bytes = 0u64;
            let mut appended = 0usize;
            let depth_bytes = self.shared.bytes.load(Ordering::Relaxed);
            let aged_out = self.aged_out();
            let mut blocked = false;
            // The disk's room for this batch: what is appended is written twice (WAL, then the
            // database file at the checkpoint) and the reserve's worth stays free.
            let disk_room = if self.stalled.is_none() && !pending.is_empty() {
                self.disk_room()
            } else {
                u64::MAX
            };
            while appended < self.cfg.max_batch && self.stalled.is_none() {
                match pending.front() {
                    None => break,
                    Some(Pending::AckOnly(_)) => {}
                    Some(Pending::Append(r, _) | Pending::Redriven(r, _)) => {
                        let size = r.size() as u64;
                        if 2 * (batch_bytes + size) > disk_room {
                            if appended == 0 {
                                self.stall(&"free space below the outbox's disk reserve");
                            }
                            break;
                        }
                        let empty = self.shared.depth.load(Ordering::Relaxed) == 0 && appended == 0;
                        if !empty
                            && (aged_out || depth_bytes + batch_bytes + size > self.cfg.max_bytes)
                        {
                            blocked = true;
                            break;
                        }
                        batch_bytes += size;
                        appended += 1;
                    }
                }
                batch.push(pending.pop_front().expect("front exists"));
            }
            let over = depth_bytes + batch_bytes >= self.cfg.max_bytes;
            self.set_full(blocked || aged_out || over, &mut was_full);

            let deletes_due = changes.deletes.len() >= 1000
                || (!changes.deletes.is_empty()
                    && (last_delete_commit.elapsed() >= Duration::from_millis(50) || shutdown));
            let commit = !batch.is_empty() || changes.urgent() || deletes_due;
            if commit {
                let started = Instant::now();
                let (rows, acks, deleted) = match self.commit(batch, &changes) {
                    Ok(done) => done,
                    Err(failed) if is_storage_failure(&failed.error) => {
                        // Nothing of it is acked: MQTT keeps those messages. Retried in order.
                        for p in failed.batch.into_iter().rev() {
                            pending.push_front(p);
                        }
                        self.stall(&failed.error);
                        continue;
                    }
                    Err(failed) => return Err(failed.error.into()),
                };
                if self.stalled.is_some() && deleted > 0 {
                    // Deletes made room inside the file: give those pages back to the filesystem,
                    // and the WAL's with a checkpoint.
                    if let Err(e) = self.give_back_space() {
                        tracing::warn!(error = %e, "outbox: could not give deleted pages back");
                    }
                }
                if !changes.deletes.is_empty() {
                    last_delete_commit = Instant::now();
                }
                changes = Changes::default();
                m::outbox_commit(started.elapsed().as_secs_f64(), rows.len());
                if let Some(last) = rows.last() {
                    self.shared.committed_max.store(last.id, Ordering::Release);
                }
                if !rows.is_empty() {
                    self.shared.push_hot(rows, self.cfg.hot_bytes);
                    self.shared.notify.notify_one();
                }
                if !acks.is_empty() && self.acks.send(acks).is_err() {
                    tracing::debug!("ack receiver gone (shutting down)");
                }
                if deleted > 0 {
                    self.refresh_oldest()?;
                }
            }
            self.probe_room();
            if pending.is_empty() || self.is_full() || self.stalled.is_some() {
                for f in flushes.drain(..) {
                    let _ = f.send(());
                }
            }
            if last_gauges.elapsed() >= Duration::from_millis(500) {
                self.gauges();
                last_gauges = Instant::now();
            }
            // A stalled disk may never take the last deletes: those records are simply sent again
            // after the restart (duplicates, which every sink absorbs).
            if shutdown && (changes.is_empty() || self.stalled.is_some()) {
                // Pending appends that did not fit stay unacked: the broker redelivers them.
                for f in flushes.drain(..) {
                    let _ = f.send(());
                }
                self.gauges();
                let _ = self.conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE);");
                tracing::info!(
                    unstored = pending.len(),
                    depth = self.shared.depth.load(Ordering::Relaxed),
                    "outbox writer stopped"
                );
                return Ok(());
            }
        }
    }

    /// Returns the pages of deleted records to the filesystem: a few pages at a time (incremental
    /// vacuum moves pages through the WAL), each step checkpointed so the WAL never needs more
    /// room than the reserve gave back.
    fn give_back_space(&mut self) -> Result<(), rusqlite::Error> {
        const PAGES_PER_STEP: i64 = 32;
        for _ in 0..10_000 {
            self.checkpoint()?;
            let free_pages: i64 = self
                .conn
                .query_row("PRAGMA freelist_count", [], |r| r.get(0))?;
            if free_pages == 0 {
                break;
            }
            let mut vacuum = self
                .conn
                .prepare(&format!("PRAGMA incremental_vacuum({PAGES_PER_STEP})"))?;
            let mut rows = vacuum.query([])?;
            while rows.next()?.is_some() {}
        }
        self.checkpoint()
    }

    /// Copies the WAL into the database and truncates it.
    fn checkpoint(&self) -> Result<(), rusqlite::Error> {
        self.conn
            .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
    }

    /// Every few seconds: quarantined records an operator marked for re-drive (`tillctl outbox
    /// redrive`) go back to the end of the outbox, in their original order.
    fn load_redrives(&mut self, pending: &mut VecDeque<Pending<A>>) -> Result<(), OutboxError> {
        if self.last_redrive_check.elapsed() < REDRIVE_CHECK_EVERY {
            return Ok(());
        }
        self.last_redrive_check = Instant::now();
        let mut stmt = self.conn.prepare_cached(
            "SELECT id, topic, key, value, headers, kind, store, received_at
             FROM outbox_quarantine WHERE redrive = 1 ORDER BY id LIMIT 1000",
        )?;
        let rows = stmt
            .query_map([], |r| {
                let headers: Vec<u8> = r.get(4)?;
                Ok((
                    r.get::<_, i64>(0)? as u64,
                    Record {
                        topic: r.get(1)?,
                        key: r.get(2)?,
                        value: r.get(3)?,
                        headers: super::decode_headers(&headers),
                        kind: r.get(5)?,
                        store: r.get(6)?,
                        received_at_ms: r.get(7)?,
                    },
                ))
            })?
            .collect::<Result<Vec<_>, _>>()?;
        let mut loaded = 0usize;
        for (id, record) in rows {
            if self.redriving.insert(id) {
                pending.push_back(Pending::Redriven(record, id));
                loaded += 1;
            }
        }
        if loaded > 0 {
            tracing::info!(
                records = loaded,
                "re-driving quarantined records into the outbox"
            );
        }
        Ok(())
    }

    /// The disk refused a commit: stop appending (and so acking) until it has room again. The
    /// reserve is given back so deletes of delivered records can still be committed.
    fn stall(&mut self, error: &dyn std::fmt::Display) {
        self.reserve.release();
        if self.stalled.is_none() {
            let free = free_bytes(&self.cfg.dir);
            tracing::error!(
                path = %self.cfg.dir.display(),
                free_bytes = ?free,
                error = %error,
                "outbox disk cannot take writes: not acking MQTT (the broker keeps the messages), still draining the outbox to Kafka; resumes by itself when the disk has room"
            );
            let now = Instant::now();
            self.stalled = Some(Stall {
                since: now,
                last_probe: now,
            });
            self.shared.disk_stalled.store(true, Ordering::Relaxed);
            m::outbox_disk_stalled(true);
        }
    }

    /// Bytes of records the disk can take (each counted twice by the caller: WAL, then the database
    /// file) while keeping the reserve's worth free: appending stops before the disk is full, not
    /// when SQLite finds out. Unbounded without a reserve (then only SQLite's error stalls).
    fn disk_room(&self) -> u64 {
        let floor = self.reserve.bytes();
        if floor == 0 {
            return u64::MAX;
        }
        free_bytes(&self.cfg.dir).map_or(u64::MAX, |free| free.saturating_sub(floor))
    }

    /// While stalled: once the disk has room for the reserve and as much again, take the reserve
    /// back and resume appending (a failing append stalls again).
    fn probe_room(&mut self) {
        let Some(stall) = &mut self.stalled else {
            return;
        };
        if stall.last_probe.elapsed() < PROBE_EVERY {
            return;
        }
        stall.last_probe = Instant::now();
        // Room for the reserve, the floor below which appends stop, and a batch on top.
        let want = match self.reserve.bytes() {
            0 => MIN_ROOM_TO_RESUME,
            reserve => 3 * reserve,
        };
        let free = free_bytes(&self.cfg.dir).unwrap_or(0);
        if free < want || self.reserve.fill().is_err() {
            return;
        }
        let stalled_for = stall.since.elapsed();
        self.stalled = None;
        self.shared.disk_stalled.store(false, Ordering::Relaxed);
        m::outbox_disk_stalled(false);
        tracing::warn!(
            path = %self.cfg.dir.display(),
            free_bytes = free,
            stalled_s = stalled_for.as_secs_f64(),
            "outbox disk has room again: appending and acking MQTT"
        );
    }

    fn aged_out(&self) -> bool {
        let oldest = self.shared.oldest_received_at_ms.load(Ordering::Relaxed);
        self.shared.depth.load(Ordering::Relaxed) > 0
            && oldest > 0
            && tillstream_runtime::clock::now_ms() - oldest > (self.cfg.max_age_s as i64) * 1000
    }

    fn is_full(&self) -> bool {
        self.shared.full.load(Ordering::Relaxed)
    }

    fn set_full(&self, full: bool, was: &mut bool) {
        if full != *was {
            if full {
                tracing::error!(
                    depth = self.shared.depth.load(Ordering::Relaxed),
                    bytes = self.shared.bytes.load(Ordering::Relaxed),
                    "OUTBOX FULL: not acking MQTT until Kafka drains it (the broker holds new messages)"
                );
            } else {
                tracing::warn!("outbox has room again: acking MQTT");
            }
            *was = full;
        }
        self.shared.full.store(full, Ordering::Relaxed);
        m::outbox_full(full);
    }

    fn gauges(&self) {
        let depth = self.shared.depth.load(Ordering::Relaxed);
        let oldest = self.shared.oldest_received_at_ms.load(Ordering::Relaxed);
        let age = if depth > 0 && oldest > 0 {
            (tillstream_runtime::clock::now_ms() - oldest).max(0) as f64 / 1000.0
        } else {
            0.0
        };
        let quarantined = self
            .conn
            .query_row("SELECT COUNT(*) FROM outbox_quarantine", [], |r| {
                r.get::<_, i64>(0)
            })
            .ok();
        m::outbox_size(
            depth,
            self.shared.bytes.load(Ordering::Relaxed),
            age,
            free_bytes(&self.cfg.dir),
            quarantined,
        );
    }

    fn refresh_oldest(&self) -> Result<(), OutboxError> {
        let oldest: Option<i64> = self
            .conn
            .prepare_cached("SELECT received_at FROM outbox ORDER BY id LIMIT 1")?
            .query_row([], |r| r.get(0))
            .ok();
        self.shared
            .oldest_received_at_ms
            .store(oldest.unwrap_or(0), Ordering::Relaxed);
        Ok(())
    }

    /// One transaction: appends (in order), replacements and deletes; fsync'd at commit. On
    /// failure nothing was written and the batch is handed back.
    #[allow(clippy::type_complexity)]
    fn commit(
        &mut self,
        batch: Vec<Pending<A>>,
        changes: &Changes,
    ) -> Result<(Vec<Row>, Vec<A>, usize), CommitFailed<A>> {
        let written = match self.write(&batch, changes) {
            Ok(w) => w,
            Err(error) => return Err(CommitFailed { error, batch }),
        };
        let Written {
            added_bytes,
            removed_bytes,
            deleted,
        } = written;
        let first_id = self.next_id;
        let mut rows = Vec::new();
        let mut acks = Vec::with_capacity(batch.len());
        let mut id = first_id;
        for p in batch {
            match p {
                Pending::AckOnly(a) => acks.push(a),
                Pending::Append(r, a) => {
                    rows.push(Row {
                        id,
                        record: Arc::new(r),
                    });
                    acks.push(a);
                    id += 1;
                }
                Pending::Redriven(r, quarantine_id) => {
                    self.redriving.remove(&quarantine_id);
                    rows.push(Row {
                        id,
                        record: Arc::new(r),
                    });
                    id += 1;
                }
            }
        }
        self.after_commit(rows, acks, added_bytes, removed_bytes, deleted)
            .map_err(|error| CommitFailed {
                error,
                batch: Vec::new(),
            })
    }

    /// The transaction itself (ids from `next_id`, in batch order).
    fn write(
        &mut self,
        batch: &[Pending<A>],
        changes: &Changes,
    ) -> Result<Written, rusqlite::Error> {
        let mut added_bytes = 0u64;
        let mut removed_bytes = 0u64;
        let mut deleted = 0usize;
        let tx = self.conn.transaction()?;
        {
            let mut ins = tx.prepare_cached(
                "INSERT INTO outbox (id, topic, key, value, headers, kind, store, received_at, size)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
            )?;
            let mut id = self.next_id;
            let mut unquarantine =
                tx.prepare_cached("DELETE FROM outbox_quarantine WHERE id = ?1")?;
            for p in batch {
                let r = match p {
                    Pending::Append(r, _) => r,
                    Pending::Redriven(r, quarantine_id) => {
                        unquarantine.execute(params![*quarantine_id as i64])?;
                        r
                    }
                    Pending::AckOnly(_) => continue,
                };
                let size = r.size() as u64;
                ins.execute(params![
                    id as i64,
                    r.topic,
                    r.key,
                    r.value,
                    encode_headers(&r.headers),
                    r.kind,
                    r.store,
                    r.received_at_ms,
                    size as i64
                ])?;
                added_bytes += size;
                id += 1;
            }
            let mut upd = tx.prepare_cached(
                "UPDATE outbox SET topic = ?2, key = ?3, value = ?4, headers = ?5, kind = ?6,
                 store = ?7, size = ?8 WHERE id = ?1",
            )?;
            for (id, r) in &changes.replaces {
                upd.execute(params![
                    *id as i64,
                    r.topic,
                    r.key,
                    r.value,
                    encode_headers(&r.headers),
                    r.kind,
                    r.store,
                    r.size() as i64
                ])?;
            }
            let mut del = tx.prepare_cached("DELETE FROM outbox WHERE id = ?1 RETURNING size")?;
            let mut quarantine = tx.prepare_cached(
                "INSERT OR REPLACE INTO outbox_quarantine
                   (id, topic, key, value, headers, kind, store, received_at, size, reason,
                    quarantined_at, redrive)
                 SELECT id, topic, key, value, headers, kind, store, received_at, size, ?2, ?3, 0
                 FROM outbox WHERE id = ?1",
            )?;
            let now = tillstream_runtime::clock::now_ms();
            for (id, reason) in &changes.quarantines {
                quarantine.execute(params![*id as i64, reason, now])?;
            }
            let quarantined = changes.quarantines.iter().map(|(id, _)| id);
            for id in changes.deletes.iter().chain(quarantined) {
                match del.query_row(params![*id as i64], |r| r.get::<_, i64>(0)) {
                    Ok(size) => {
                        removed_bytes += size as u64;
                        deleted += 1;
                    }
                    // Already deleted (a delivery reported twice across a drainer reset).
                    Err(rusqlite::Error::QueryReturnedNoRows) => {}
                    Err(e) => return Err(e),
                }
            }
        }
        tx.commit()?;
        Ok(Written {
            added_bytes,
            removed_bytes,
            deleted,
        })
    }

    /// Counters and hand-over once a commit is durable.
    #[allow(clippy::type_complexity)]
    fn after_commit(
        &mut self,
        rows: Vec<Row>,
        acks: Vec<A>,
        added_bytes: u64,
        removed_bytes: u64,
        deleted: usize,
    ) -> Result<(Vec<Row>, Vec<A>, usize), rusqlite::Error> {
        self.next_id += rows.len() as u64;
        let depth = self.shared.depth.load(Ordering::Relaxed) + rows.len() as u64 - deleted as u64;
        self.shared.depth.store(depth, Ordering::Relaxed);
        let bytes =
            (self.shared.bytes.load(Ordering::Relaxed) + added_bytes).saturating_sub(removed_bytes);
        self.shared.bytes.store(bytes, Ordering::Relaxed);
        if let Some(first) = rows.first()
            && self.shared.oldest_received_at_ms.load(Ordering::Relaxed) == 0
        {
            self.shared
                .oldest_received_at_ms
                .store(first.record.received_at_ms, Ordering::Relaxed);
        }
        if depth == 0 {
            self.shared
                .oldest_received_at_ms
                .store(0, Ordering::Relaxed);
        }
        Ok((rows, acks, deleted))
    }
}

/// What a committed transaction changed.
struct Written {
    added_bytes: u64,
    removed_bytes: u64,
    deleted: usize,
}
