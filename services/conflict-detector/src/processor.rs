//! The batch loop: batch in -> decode -> rules (pure core) -> one database transaction with the
//! events admitted, the verdicts, compensations and outbox records they produced, and the next
//! offsets -> the publisher is woken. Also applies price lists from the history tailer, and builds
//! a partition's state (replay from the database, reconcile with the stored verdicts) when it is
//! assigned. Selects on cancellation first; a SIGTERM lets the batch in hand finish.
//!
//! Delivery guarantee: exactly-once effects in the database (the offsets are in the same
//! transaction; the consumer starts from them; the in-memory event gate mirrors the database's and
//! drops redelivered copies). A failed transaction leaves the in-memory state ahead of the
//! database: the batch's partitions are rebuilt from the database before the batch is retried. Bad
//! input is dead-lettered before the offset that passes it is committed.
//!
//! Why one file (~750 lines): the batch loop's steps (restore, decide, one transaction, outbox
//! hand-over, retry after a transient failure) share the partition state they rebuild; the pure
//! decisions are in `core`, SQL in `db/`.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use rdkafka::Message;
use rdkafka::message::OwnedMessage;
use rustc_hash::{FxHashMap as HashMap, FxHashSet as HashSet};
use tillstream_contracts::PriceListApproved;
use tillstream_runtime::fault::Hold;
use tillstream_runtime::kafka::{self, BatchOffsets, DeadLetters, InputConsumer, Rejected};
use tillstream_runtime::retry::Backoff;
use tillstream_runtime::{CancellationToken, Classify, ErrorClass, Health};
use tokio::sync::{Notify, mpsc};

use crate::config::Config;
use crate::core::{self, Change, Detector, Mode, Verdict, collision, records};
use crate::db::{Batch, Db, LogChunk, OutboxRecord};
use crate::decode::Decoder;
use crate::error::DetectorError;
use crate::metrics as m;
use crate::output::Encoder;
use crate::partitions::{OffsetHook, Shared, lock};
use crate::settle::{Decided, HeldVerdicts, Plan};

/// Awaits a decode, retrying while the registry is unreachable (never skipping the record).
macro_rules! retrying {
    ($token:expr, $call:expr) => {{
        let mut backoff = Backoff::new(Duration::from_millis(100));
        loop {
            match $call.await {
                Ok(x) => break Ok::<_, DetectorError>(x),
                Err(e) if e.class() == ErrorClass::Retryable => {
                    tracing::warn!(error = %e, "schema registry unavailable; retrying");
                    if !backoff.wait($token).await {
                        break Err(DetectorError::from(e));
                    }
                }
                Err(e) => break Err(DetectorError::from(e)),
            }
        }
    }};
}

/// The event gate's key for an event id: its xxh3-128.
fn event_key(event_id: &str) -> u128 {
    xxhash_rust::xxh3::xxh3_128(event_id.as_bytes())
}

/// Per-instance counters (tests running several instances in one process read these; Prometheus
/// metrics are process-wide).
#[derive(Debug, Default)]
pub struct Counters {
    pub records_in: AtomicU64,
    pub events_applied: AtomicU64,
    pub duplicates: AtomicU64,
    pub raised: AtomicU64,
    pub superseded: AtomicU64,
    /// Held verdicts superseded before they were written.
    pub withdrawn: AtomicU64,
    pub collisions: AtomicU64,
    pub dead_letters: AtomicU64,
    pub batches: AtomicU64,
    pub restores: AtomicU64,
    pub price_lists: AtomicU64,
    pub beyond_horizon: AtomicU64,
}

impl Counters {
    pub fn get(c: &AtomicU64) -> u64 {
        c.load(Ordering::Relaxed)
    }
}

/// A dead letter to publish before the batch commits.
struct Dead<'a> {
    msg: &'a OwnedMessage,
    bad: Rejected,
}

/// What one attempt at a batch decided.
#[derive(Default)]
struct Work<'a> {
    /// Events taken in, and their restore-log rows per partition.
    events: usize,
    log: BTreeMap<i32, LogChunk>,
    /// (partition, event key) of each event taken in.
    ids: Vec<(i32, u128)>,
    /// What the batch's changes do, in stream order (held verdicts included).
    plan: Plan,
    /// Whether the rules changed anything (the fault-injection hold waits for such a batch).
    decided_any: bool,
    collisions: Vec<(i32, Verdict)>,
    dead: Vec<Dead<'a>>,
    /// Next offset per (input topic?, partition): true = store events, false = conflicts.
    next: BTreeMap<(bool, i32), i64>,
    late: u64,
    duplicates: u64,
}

/// Everything the batch loop needs, owned by its task.
pub struct Processor {
    pub cfg: Config,
    pub db: Db,
    pub decoder: Decoder,
    pub detector: Detector,
    pub encoder: Encoder,
    pub dead_letters: DeadLetters,
    pub shared: Shared,
    pub counters: Arc<Counters>,
    pub health: Health,
    /// Price lists from the history tailer.
    pub lists: mpsc::UnboundedReceiver<Vec<PriceListApproved>>,
    pub lists_waiting: Arc<Notify>,
    /// Wakes the publisher after a commit.
    pub publish: Arc<Notify>,
    /// Event ids taken in, per input partition (mirrors the database gate).
    /// (xxh3-128 of the event id, as the dedup keeps them).
    pub seen: HashMap<i32, HashSet<u128>>,
    /// The partition each held store belongs to.
    pub store_partition: HashMap<String, i32>,
    /// Raised verdicts waiting for their store's stream to move on (`detector.hold_ms`).
    pub held: HeldVerdicts,
}

impl Processor {
    /// Runs until `token` is cancelled (then finishes the batch in hand) or a batch fails fatally.
    pub async fn run(
        mut self,
        mut consumer: InputConsumer<OffsetHook>,
        token: CancellationToken,
    ) -> Result<(), DetectorError> {
        let linger = Duration::from_millis(self.cfg.detector.linger_ms);
        let max = self.cfg.detector.max_batch;
        let mut result = Ok(());
        self.health.ready("kafka", "consuming");
        loop {
            // A price list waiting wakes the wait for records (it may supersede verdicts of
            // stores that are quiet).
            // So does the moment a quiet store's held verdicts are due.
            let wake = token.child_token();
            let idle_release = self.held.next_idle_release().map(|at| {
                Duration::from_millis(
                    at.saturating_sub(tillstream_runtime::clock::now_ms())
                        .max(0) as u64,
                )
            });
            let waker = {
                let (w, n) = (wake.clone(), self.lists_waiting.clone());
                tokio::spawn(async move {
                    match idle_release {
                        Some(after) => tokio::select! {
                            _ = n.notified() => {}
                            _ = tokio::time::sleep(after) => {}
                        },
                        None => n.notified().await,
                    }
                    w.cancel();
                })
            };
            let batch = consumer.next_batch(&wake, max, linger).await;
            waker.abort();
            if token.is_cancelled() && batch.is_none() {
                break;
            }
            let step = async {
                self.revoked();
                self.apply_price_lists(&token).await?;
                if let Some(batch) = &batch {
                    self.batch(&consumer, batch, &token).await?;
                }
                self.write_held(false).await?;
                Ok::<_, DetectorError>(())
            };
            if let Err(e) = step.await {
                if token.is_cancelled() {
                    break;
                }
                if e.class() == ErrorClass::Retryable {
                    // A price list or a restore met a transient failure: the memory may be ahead
                    // of the database, so every owned partition is rebuilt (and reconciled with
                    // the lists in memory) before anything else is decided.
                    tracing::warn!(error = %e, "transient failure: rebuilding the owned partitions");
                    self.health.not_ready("database", e.to_string());
                    {
                        let mut s = lock(&self.shared);
                        let owned = s.owned.clone();
                        s.to_restore.extend(owned);
                    }
                    if !Backoff::new(Duration::from_millis(500)).wait(&token).await {
                        break;
                    }
                    continue;
                }
                tracing::error!(error = %e, "batch failed: stopping without storing its offsets");
                self.health.broken("database", e.to_string());
                result = Err(e);
                break;
            }
            if token.is_cancelled() {
                break;
            }
        }
        if result.is_ok() && !self.held.is_empty() {
            // A clean stop writes what waits (a restart would find it anyway, by reconciling).
            if let Err(e) = self.write_held(true).await {
                tracing::warn!(error = %e, held = self.held.len(), "held verdicts not written at shutdown; the next start's restore writes them");
            }
        }
        consumer.commit_on_shutdown();
        kafka::flush(self.dead_letters.producer(), Duration::from_secs(5));
        tracing::info!("conflict detector batch loop stopped");
        result
    }

    /// Drops the stores of partitions that left.
    fn revoked(&mut self) {
        let gone: BTreeSet<i32> = std::mem::take(&mut lock(&self.shared).revoked);
        if gone.is_empty() {
            return;
        }
        for p in &gone {
            self.drop_partition(*p);
        }
        tracing::info!(partitions = ?gone, "partitions revoked: state dropped");
    }

    fn drop_partition(&mut self, p: i32) {
        self.seen.remove(&p);
        self.held.drop_partition(p);
        let stores: Vec<String> = self
            .store_partition
            .iter()
            .filter(|(_, q)| **q == p)
            .map(|(s, _)| s.clone())
            .collect();
        for s in stores {
            self.detector.drop_store(&s);
            self.store_partition.remove(&s);
        }
    }

    /// Rebuilds a partition's state: its events replayed from the database in the order they were
    /// taken in, then its stores reconciled with the verdicts the database holds.
    pub async fn restore(
        &mut self,
        p: i32,
        token: &CancellationToken,
    ) -> Result<(), DetectorError> {
        let started = Instant::now();
        self.drop_partition(p);
        let rows = self.db.events(p).await?;
        let mut seen = HashSet::default();
        for row in &rows {
            let w = self.decoder.schema(row.schema_id).await?;
            let ev = crate::decode::store_event_with(&w, &row.datum).map_err(|b| {
                DetectorError::Restore(format!(
                    "logged event at offset {}: {}",
                    row.offset, b.detail
                ))
            })?;
            self.detector
                .apply(&ev.event, row.record_time, Mode::Replay)
                .map_err(|r| {
                    DetectorError::Restore(format!("logged event {}: {r}", ev.event.event_id()))
                })?;
            seen.insert(event_key(ev.event.event_id()));
            self.store_partition
                .insert(ev.event.store_id().to_string(), p);
        }
        self.seen.insert(p, seen);
        let (verdicts, generations) = self.db.verdicts(p).await?;
        let mut by_store: BTreeMap<String, Vec<Verdict>> = BTreeMap::new();
        for v in verdicts {
            by_store.entry(v.store_id.clone()).or_default().push(v);
        }
        let mut stores: BTreeSet<String> = by_store.keys().cloned().collect();
        stores.extend(
            self.store_partition
                .iter()
                .filter(|(_, q)| **q == p)
                .map(|(s, _)| s.clone()),
        );
        let mut decided = Vec::new();
        for s in stores {
            let persisted = by_store.remove(&s).unwrap_or_default();
            let changes = self
                .detector
                .reconcile(
                    &s,
                    persisted,
                    generations.clone(),
                    &format!("restore of partition {p}"),
                )
                .map_err(|r| DetectorError::Restore(r.to_string()))?;
            decided.extend(changes.into_iter().map(|change| Decided {
                partition: p,
                change,
            }));
        }
        let changes = decided.len();
        if !decided.is_empty() {
            tracing::warn!(
                partition = p,
                changes,
                "restore found verdicts that changed while nobody evaluated them (or waited unwritten)"
            );
        }
        // Written at once, with the partition's held count reset (what waited in a previous
        // owner's memory is among these changes).
        let mut tx = self.db.begin().await?;
        self.write_changes(&mut tx, &decided).await?;
        tx.held(&BTreeMap::from([(p, 0)])).await?;
        tx.commit().await?;
        if !decided.is_empty() {
            self.count_changes(&decided);
            self.publish.notify_one();
        }
        let _ = token;
        lock(&self.shared).to_restore.remove(&p);
        self.counters.restores.fetch_add(1, Ordering::Relaxed);
        m::restored(started.elapsed(), rows.len(), changes);
        tracing::info!(
            partition = p,
            events = rows.len(),
            changes,
            ms = started.elapsed().as_millis() as u64,
            "partition state restored"
        );
        Ok(())
    }

    /// Applies the price lists the tailer sent since the last batch, each in its own transaction
    /// with the changes it caused.
    async fn apply_price_lists(&mut self, token: &CancellationToken) -> Result<(), DetectorError> {
        let mut lists = Vec::new();
        while let Ok(more) = self.lists.try_recv() {
            lists.extend(more);
        }
        if lists.is_empty() {
            return Ok(());
        }
        self.restore_pending(token).await?;
        for list in lists {
            let changes = match self.detector.apply_price_list(&list, Mode::Live) {
                Ok(Some(c)) => c,
                Ok(None) => continue,
                Err(rejected) => {
                    // Refused lists were dead-lettered by the tailer already (it checks them the
                    // same way); nothing of them stayed in the state.
                    tracing::warn!(list = %list.price_list_id, error = %rejected, "price list refused");
                    continue;
                }
            };
            let mut plan = Plan::default();
            if let Some(partition) = self.store_partition.get(&list.store_id).copied() {
                self.held.offer(&mut plan, partition, None, changes);
            }
            let body = serde_json::to_string(&list).map_err(crate::db::DbError::from)?;
            let mut tx = self.db.begin().await?;
            tx.price_lists(&[(
                list.event_id.clone(),
                list.store_id.clone(),
                list.price_list_id.clone(),
                list.effective_from,
                body,
            )])
            .await?;
            self.write_changes(&mut tx, &plan.write).await?;
            tx.held(&self.held.counts_after(&plan)).await?;
            tx.commit().await?;
            self.counters.price_lists.fetch_add(1, Ordering::Relaxed);
            m::price_lists(1);
            self.accept_plan(plan);
        }
        Ok(())
    }

    async fn restore_pending(&mut self, token: &CancellationToken) -> Result<(), DetectorError> {
        let pending: Vec<i32> = lock(&self.shared).to_restore.iter().copied().collect();
        for p in pending {
            self.restore(p, token).await?;
        }
        Ok(())
    }

    /// Processes one batch, retrying it (after rebuilding its partitions from the database) while
    /// the database fails transiently.
    async fn batch(
        &mut self,
        consumer: &InputConsumer<OffsetHook>,
        batch: &[OwnedMessage],
        token: &CancellationToken,
    ) -> Result<(), DetectorError> {
        let started = Instant::now();
        self.restore_pending(token).await?;
        self.seek_unpositioned(consumer, batch)?;
        let mut backoff = Backoff::new(Duration::from_millis(100));
        loop {
            match self.attempt(batch, token).await {
                Ok((applied, work_stats)) => {
                    let (late, duplicates) = work_stats;
                    let mut offsets = BatchOffsets::new();
                    for m in batch {
                        offsets.done(m.topic(), m.partition(), m.offset());
                    }
                    consumer.store_offsets(&offsets);
                    self.counters.batches.fetch_add(1, Ordering::Relaxed);
                    m::batch_done(batch.len(), applied, duplicates, late, started.elapsed());
                    self.health.ready("database", self.db.backend().name());
                    return Ok(());
                }
                Err(e) if e.class() == ErrorClass::Retryable => {
                    m::batch_retry();
                    self.health.not_ready("database", e.to_string());
                    tracing::warn!(error = %e, "batch failed; rebuilding its partitions and retrying");
                    if !backoff.wait(token).await {
                        return Err(e);
                    }
                    let parts: BTreeSet<i32> = batch
                        .iter()
                        .filter(|m| m.topic() == self.cfg.detector.input_topic)
                        .map(|m| m.partition())
                        .collect();
                    for p in parts {
                        if lock(&self.shared).owned.contains(&p) {
                            lock(&self.shared).to_restore.insert(p);
                        }
                    }
                    if let Err(e) = self.restore_pending(token).await {
                        tracing::warn!(error = %e, "restore failed; retrying");
                    }
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Seeks partitions the hook could not position (the consumer may have started past the
    /// database's offset).
    fn seek_unpositioned(
        &mut self,
        consumer: &InputConsumer<OffsetHook>,
        batch: &[OwnedMessage],
    ) -> Result<(), DetectorError> {
        let flagged: Vec<(String, i32)> = {
            let s = lock(&self.shared);
            batch
                .iter()
                .map(|m| (m.topic().to_string(), m.partition()))
                .filter(|k| s.needs_seek.contains(k))
                .collect::<BTreeSet<_>>()
                .into_iter()
                .collect()
        };
        for (t, p) in flagged {
            let want = lock(&self.shared)
                .expected
                .get(&(t.clone(), p))
                .copied()
                .unwrap_or(0);
            let first = batch
                .iter()
                .find(|m| m.topic() == t && m.partition() == p)
                .map(|m| m.offset())
                .unwrap_or(want);
            if first > want {
                tracing::warn!(topic = %t, partition = p, first, want, "consumer started past the database offset: seeking back");
                consumer.seek(&t, p, want)?;
            }
            lock(&self.shared).needs_seek.remove(&(t, p));
        }
        Ok(())
    }

    /// One attempt: decide in memory, dead-letter bad input, commit. Returns (events applied,
    /// (late, duplicates)).
    async fn attempt(
        &mut self,
        batch: &[OwnedMessage],
        token: &CancellationToken,
    ) -> Result<(u64, (u64, u64)), DetectorError> {
        let cfg = self.cfg.detector.clone();
        let (expected, owned) = {
            let s = lock(&self.shared);
            let expected: HashMap<(bool, i32), i64> = s
                .expected
                .iter()
                .map(|((t, p), o)| ((*t == cfg.input_topic, *p), *o))
                .collect();
            (expected, s.owned.clone())
        };
        let mut work = Work::default();
        let mut batch_ids: HashSet<u128> = HashSet::default();
        let mut counted: BTreeMap<&str, usize> = BTreeMap::new();
        for msg in batch {
            let (topic, p) = (msg.topic(), msg.partition());
            *counted.entry(topic).or_default() += 1;
            let key = (topic == cfg.input_topic, p);
            if expected.get(&key).is_some_and(|e| msg.offset() < *e) {
                continue; // applied by an earlier transaction
            }
            if topic == cfg.input_topic && !owned.contains(&p) {
                continue; // revoked meanwhile: its next owner reads it
            }
            let e = work.next.entry(key).or_insert(0);
            *e = (*e).max(msg.offset() + 1);
            if topic == cfg.input_topic {
                self.decide_event(msg, p, &mut work, &mut batch_ids, token)
                    .await?;
            } else if topic == cfg.conflicts_topic {
                match retrying!(token, self.decoder.conflict(msg.payload()))? {
                    Ok(Some(c)) if collision::is_dedup_collision(&c) => {
                        work.collisions.push((p, collision::queue_entry(&c)));
                    }
                    Ok(_) => {}
                    Err(bad) => work.dead.push(Dead { msg, bad }),
                }
            }
        }
        for (t, n) in counted {
            m::records_in(t, n);
        }
        self.counters
            .records_in
            .fetch_add(batch.len() as u64, Ordering::Relaxed);
        if work.next.is_empty() {
            return Ok((0, (0, 0)));
        }
        for d in &work.dead {
            self.dead_letter(d, token).await?;
        }
        let mut tx = self.db.begin().await?;
        let stored = tx.log_chunks(&work.log).await?;
        if stored != work.events {
            // The database holds this batch already: the state is stale. Rebuild and retry.
            return Err(DetectorError::Db(crate::db::DbError::from(
                sqlx::Error::Protocol(format!(
                    "the log took {stored} of {} events: state out of step with the database",
                    work.events
                )),
            )));
        }
        let plan = std::mem::take(&mut work.plan);
        self.write_changes(&mut tx, &plan.write).await?;
        tx.held(&self.held.counts_after(&plan)).await?;
        let mut queued = 0;
        let now = tillstream_runtime::clock::now_ms();
        for (p, v) in &work.collisions {
            if tx.raise(*p, v, "dedup", now).await? {
                queued += 1;
                m::collision_queued(&v.store_id);
            }
        }
        let mut by_topic: BTreeMap<&str, BTreeMap<i32, i64>> = BTreeMap::new();
        let topic_of = |input: bool| {
            if input {
                cfg.input_topic.as_str()
            } else {
                cfg.conflicts_topic.as_str()
            }
        };
        for ((input, p), o) in &work.next {
            by_topic.entry(topic_of(*input)).or_default().insert(*p, *o);
        }
        for (t, next) in &by_topic {
            tx.offsets(t, next).await?;
        }
        self.fault_hold(work.decided_any).await;
        tx.commit().await?;
        // Durable: the memory may now count on it.
        {
            let mut s = lock(&self.shared);
            for ((input, p), o) in &work.next {
                s.expected.insert((topic_of(*input).to_string(), *p), *o);
            }
        }
        for (p, id) in work.ids {
            self.seen.entry(p).or_default().insert(id);
        }
        self.accept_plan(plan);
        self.counters
            .collisions
            .fetch_add(queued, Ordering::Relaxed);
        self.counters
            .events_applied
            .fetch_add(work.events as u64, Ordering::Relaxed);
        self.counters
            .duplicates
            .fetch_add(work.duplicates, Ordering::Relaxed);
        Ok((work.events as u64, (work.late, work.duplicates)))
    }

    /// Decodes one store event and runs the rules on it.
    async fn decide_event<'a>(
        &mut self,
        msg: &'a OwnedMessage,
        p: i32,
        work: &mut Work<'a>,
        batch_ids: &mut HashSet<u128>,
        token: &CancellationToken,
    ) -> Result<(), DetectorError> {
        let ev = match retrying!(token, self.decoder.store_event(msg.payload()))? {
            Ok(ev) => ev,
            Err(bad) => {
                work.dead.push(Dead { msg, bad });
                return Ok(());
            }
        };
        let id = event_key(ev.event.event_id());
        if self.seen.get(&p).is_some_and(|s| s.contains(&id)) || !batch_ids.insert(id) {
            work.duplicates += 1;
            return Ok(());
        }
        let record_time = msg.timestamp().to_millis().unwrap_or(0);
        match self.detector.apply(&ev.event, record_time, Mode::Live) {
            Ok(applied) => {
                if applied.ignored {
                    batch_ids.remove(&id);
                    // Its record time still moves the partition on.
                    self.held
                        .offer(&mut work.plan, p, Some(record_time), Vec::new());
                    return Ok(());
                }
                if applied.beyond_horizon {
                    m::beyond_horizon(ev.event.store_id());
                    self.counters.beyond_horizon.fetch_add(1, Ordering::Relaxed);
                }
                work.late += u64::from(applied.late);
                if !self.store_partition.contains_key(ev.event.store_id()) {
                    self.store_partition
                        .insert(ev.event.store_id().to_string(), p);
                }
                work.decided_any |= !applied.changes.is_empty();
                self.held
                    .offer(&mut work.plan, p, Some(record_time), applied.changes);
                let (_, datum) =
                    tillstream_contracts::codec::unframe(msg.payload().unwrap_or_default())?;
                work.ids.push((p, id));
                work.events += 1;
                work.log
                    .entry(p)
                    .or_default()
                    .push(msg.offset(), record_time, ev.schema_id, datum);
            }
            Err(rejected) => {
                batch_ids.remove(&id);
                work.dead.push(Dead {
                    msg,
                    bad: Rejected::new(rejected.reason, rejected.detail).with_identity(
                        ev.event.store_id(),
                        Some(ev.event.device_id()),
                        Some(ev.event.event_id()),
                    ),
                });
            }
        }
        Ok(())
    }

    /// Stores decided changes and their records, in order.
    async fn write_changes(
        &self,
        tx: &mut Batch,
        decided: &[Decided],
    ) -> Result<(), DetectorError> {
        let now = tillstream_runtime::clock::now_ms();
        let mut out: Vec<OutboxRecord> = Vec::new();
        for d in decided {
            match &d.change {
                Change::Raised(v) => {
                    if tx.raise(d.partition, v, core::DETECTOR, now).await? {
                        out.extend(self.encoder.raised(d.partition, v)?);
                    }
                }
                Change::Superseded { verdict, by, at } => {
                    let pending = tx.unreversed(&verdict.conflict_id).await?;
                    let (resolved, reversals) = records::superseded(verdict, by, *at, &pending)?;
                    tx.supersede(&verdict.conflict_id, by, *at).await?;
                    tx.compensations(&reversals).await?;
                    out.extend(
                        self.encoder
                            .resolution(d.partition, &resolved, &reversals)?,
                    );
                }
            }
        }
        tx.outbox(&out).await?;
        Ok(())
    }

    fn count_changes(&self, decided: &[Decided]) {
        for d in decided {
            match &d.change {
                Change::Raised(v) => {
                    m::raised(v);
                    for c in &v.compensations {
                        m::compensation(c.kind);
                    }
                    self.counters.raised.fetch_add(1, Ordering::Relaxed);
                }
                Change::Superseded { verdict, .. } => {
                    m::superseded(verdict);
                    for c in &verdict.compensations {
                        m::compensation(c.kind);
                    }
                    self.counters.superseded.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    }

    async fn dead_letter(
        &self,
        d: &Dead<'_>,
        token: &CancellationToken,
    ) -> Result<(), DetectorError> {
        let msg = d.msg;
        let record = self.dead_letters.for_message(
            msg,
            &d.bad,
            msg.timestamp()
                .to_millis()
                .unwrap_or_else(tillstream_runtime::clock::now_ms),
        );
        self.dead_letters.publish(&record, token).await?;
        self.counters.dead_letters.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// Takes a committed plan in: its held verdicts start waiting, what it wrote is counted and
    /// handed to the publisher.
    fn accept_plan(&mut self, plan: Plan) {
        let now = tillstream_runtime::clock::now_ms();
        self.count_changes(&plan.write);
        m::withdrawn(plan.withdrawn());
        self.counters
            .withdrawn
            .fetch_add(plan.withdrawn() as u64, Ordering::Relaxed);
        let wrote = !plan.write.is_empty();
        self.held.accept(plan, now);
        m::held(self.held.len());
        if wrote {
            self.publish.notify_one();
        }
    }

    /// Writes the held verdicts of quiet partitions (`all`: every one, at shutdown) in one
    /// transaction.
    async fn write_held(&mut self, all: bool) -> Result<(), DetectorError> {
        if self.held.is_empty() {
            return Ok(());
        }
        let due = self.held.idle_due(tillstream_runtime::clock::now_ms(), all);
        if due.is_empty() {
            return Ok(());
        }
        let mut tx = self.db.begin().await?;
        self.write_changes(&mut tx, &due).await?;
        let parts: BTreeSet<i32> = due.iter().map(|d| d.partition).collect();
        let mut counts = self.held.counts(parts);
        for d in &due {
            *counts.entry(d.partition).or_default() -= 1;
        }
        tx.held(&counts).await?;
        tx.commit().await?;
        self.held.take(&due);
        self.count_changes(&due);
        m::held(self.held.len());
        self.publish.notify_one();
        Ok(())
    }

    /// Fault injection: hold a deciding batch's transaction open (a test kills the process then).
    async fn fault_hold(&self, decided_any: bool) {
        let f = &self.cfg.fault;
        if !decided_any {
            return;
        }
        Hold::new(f.hold_batch_open_ms, f.marker_file.as_ref())
            .hold("holding the batch transaction open")
            .await;
    }
}
