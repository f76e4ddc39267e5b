//! The batch processor: batch in -> decode -> decide (pure core, per partition) -> deliver outputs,
//! conflicts and dead letters -> write the changelog delta -> publish gap records -> store offsets.
//! Selects on cancellation first; a SIGTERM lets the batch in hand finish unless it is waiting to
//! retry a failed delivery (then it is abandoned unstored, and its next owner processes it again).
//!
//! Delivery guarantee: at-least-once (see the crate doc for the exact window). Outputs of one input
//! partition go to the same partition number of the output topic, in input order (records are
//! enqueued one by one in order; the producer keeps that order on retries).

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use rdkafka::Message;
use rdkafka::consumer::Consumer;
use rdkafka::message::{Header, OwnedMessage};
use rdkafka::producer::FutureProducer;
use tillstream_contracts::{DeviceReceipt, EventKind, GapStatus, Registry, SequenceGap};
use tillstream_runtime::kafka::{self, BatchOffsets, DeadLetters, InputConsumer, headers};
use tillstream_runtime::retry::Backoff;
use tillstream_runtime::{CancellationToken, Classify, ErrorClass};

use crate::changelog;
use crate::config::{Config, DeliveryMode, SERVICE};
use crate::core::{BatchStats, Decisions, Input, Verdict};
use crate::decode::{Decoded, Decoder};
use crate::error::DedupError;
use crate::metrics as m;
use crate::produce::{
    BatchTransaction, OutputRecord, Stop, conflict_record, deliver_all, gap_record,
};
use crate::receipts::receipt_of;
use crate::restore::{Hook, Shared, lock};

/// Header added to an emitted event whose `occurred_at` is older than the retention horizon.
pub const BEYOND_HORIZON_HEADER: &str = "tillstream-dedup-beyond-horizon";

/// Per-instance counters (the Prometheus metrics are process-wide; tests running several instances
/// in one process read these).
#[derive(Debug, Default)]
pub struct Counters {
    pub events_in: AtomicU64,
    pub events_out: AtomicU64,
    pub duplicates: AtomicU64,
    pub collisions: AtomicU64,
    pub beyond_horizon: AtomicU64,
    pub dead_letters: AtomicU64,
    pub gap_records: AtomicU64,
    pub changelog_records: AtomicU64,
    pub batches: AtomicU64,
    /// Records of partitions this instance no longer owned when their batch was processed.
    pub dropped_unowned: AtomicU64,
}

impl Counters {
    pub fn get(c: &AtomicU64) -> u64 {
        c.load(Ordering::Relaxed)
    }
}

/// What a running dedup lets its caller observe (tests read the counters and the owned state).
#[derive(Debug, Clone)]
pub struct Observed {
    pub counters: Arc<Counters>,
    pub shared: Arc<Shared>,
}

/// The work of one input partition in one batch.
struct PartitionBatch<'a> {
    partition: i32,
    msgs: Vec<&'a OwnedMessage>,
    inputs: Vec<Input>,
    /// Index in `msgs` of each input.
    input_msg: Vec<usize>,
    /// Records that could not be decoded: (index in `msgs`, why).
    bad: Vec<(usize, Decoded)>,
    decisions: Decisions,
}

/// Everything the batch loop needs, owned by its task.
pub struct BatchProcessor {
    pub config: Config,
    pub registry: Registry,
    pub producer: FutureProducer,
    pub transaction: BatchTransaction,
    pub dead_letters: DeadLetters,
    pub shared: Arc<Shared>,
    pub counters: Arc<Counters>,
    /// Changelog chunk groups written by this instance (low half of a group id).
    pub group_seq: u64,
    /// Random high half of this instance's changelog group ids (tells writers apart on restore).
    pub writer_id: u64,
    /// Stores whose gap gauges are non-zero (so they are zeroed when their gaps close).
    pub gauge_stores: BTreeSet<String>,
    pub last_gauges: Instant,
    /// Where the receipts of each finished batch go (the receipt sender), when receipts are on.
    pub receipts: Option<tokio::sync::mpsc::UnboundedSender<Vec<DeviceReceipt>>>,
}

impl BatchProcessor {
    /// Runs until `token` is cancelled (then finishes the batch in hand and commits) or a batch fails.
    pub async fn run(
        mut self,
        mut consumer: InputConsumer<Hook>,
        token: CancellationToken,
    ) -> Result<(), DedupError> {
        let cfg = self.config.dedup.clone();
        let mut decoder = Decoder::new(self.registry.clone());
        let linger = Duration::from_millis(cfg.linger_ms);
        let mut result = Ok(());
        tracing::info!(
            input = %cfg.input_topic,
            output = %cfg.output_topic,
            delivery = ?cfg.delivery,
            assignment = consumer.assignment_mode().as_str(),
            horizon_ms = cfg.horizon_ms,
            "dedup running"
        );
        while let Some(batch) = consumer.next_batch(&token, cfg.max_batch, linger).await {
            if let Some(why) = self.shared.fatal() {
                result = Err(DedupError::Restore(why));
                break;
            }
            match self
                .handle_batch(&consumer, &batch, &mut decoder, &token)
                .await
            {
                Ok(()) => {}
                Err(Stop::Cancelled) => break,
                Err(Stop::Failed(e)) => {
                    tracing::error!(error = %e, "batch failed: stopping without storing its offsets");
                    result = Err(e);
                    break;
                }
            }
            self.gauges(false);
        }
        if result.is_ok()
            && let Some(why) = self.shared.fatal()
        {
            result = Err(DedupError::Restore(why));
        }
        if cfg.delivery == DeliveryMode::AtLeastOnce {
            consumer.commit_on_shutdown();
        }
        kafka::flush(&self.producer, Duration::from_secs(10));
        tracing::info!("dedup stopped");
        result
    }

    async fn handle_batch(
        &mut self,
        consumer: &InputConsumer<Hook>,
        batch: &[OwnedMessage],
        decoder: &mut Decoder,
        token: &CancellationToken,
    ) -> Result<(), Stop> {
        let started = Instant::now();
        let cfg = self.config.dedup.clone();
        self.republish(token).await?;

        // Group by partition, keep owned partitions only, skip what the changelog already covers.
        let mut by_part: BTreeMap<i32, Vec<&OwnedMessage>> = BTreeMap::new();
        for msg in batch {
            if msg.topic() == cfg.input_topic {
                by_part.entry(msg.partition()).or_default().push(msg);
            }
        }
        let covered_below: BTreeMap<i32, Option<i64>> = {
            let owned = lock(&self.shared.owned);
            by_part
                .keys()
                .map(|p| (*p, owned.get(p).map(|s| s.dedup.next_offset().unwrap_or(0))))
                .collect()
        };
        let mut offsets = BatchOffsets::new();
        let mut work: Vec<PartitionBatch<'_>> = Vec::new();
        for (p, msgs) in by_part {
            let Some(Some(below)) = covered_below.get(&p).copied() else {
                self.counters
                    .dropped_unowned
                    .fetch_add(msgs.len() as u64, Ordering::Relaxed);
                continue;
            };
            for msg in &msgs {
                offsets.done(&cfg.input_topic, p, msg.offset());
            }
            let msgs: Vec<&OwnedMessage> =
                msgs.into_iter().filter(|m| m.offset() >= below).collect();
            if msgs.is_empty() {
                continue;
            }
            let mut w = PartitionBatch {
                partition: p,
                inputs: Vec::with_capacity(msgs.len()),
                input_msg: Vec::with_capacity(msgs.len()),
                bad: Vec::new(),
                msgs,
                decisions: Decisions::default(),
            };
            for (i, msg) in w.msgs.iter().enumerate() {
                let ts = msg.timestamp().to_millis().unwrap_or(-1);
                match decode_retrying(decoder, msg, ts, token).await? {
                    Decoded::Event(inp) => {
                        w.inputs.push(inp);
                        w.input_msg.push(i);
                    }
                    bad => w.bad.push((i, bad)),
                }
            }
            work.push(w);
        }
        if work.is_empty() && offsets.is_empty() {
            return Ok(());
        }

        // Decide.
        {
            let mut owned = lock(&self.shared.owned);
            for w in &mut work {
                let Some(slot) = owned.get_mut(&w.partition) else {
                    continue;
                };
                let end = w.msgs.iter().map(|m| m.offset()).max().unwrap_or(-1);
                w.decisions = slot.dedup.process(&w.inputs, end);
            }
        }
        let in_count: u64 = work.iter().map(|w| w.msgs.len() as u64).sum();

        self.transaction.begin()?;
        let effects = match self.effects(&work, token).await {
            Ok(x) => x,
            Err(e) => {
                self.transaction.abort();
                return Err(e);
            }
        };
        match self.transaction.mode() {
            DeliveryMode::Transactional => {
                let group = consumer.raw().group_metadata().ok_or_else(|| {
                    Stop::Failed(DedupError::Transaction("no consumer group metadata".into()))
                })?;
                self.transaction.commit(&offsets.to_tpl(), &group)?;
            }
            DeliveryMode::AtLeastOnce => consumer.store_offsets(&offsets),
        }

        // Changelog ends are known once delivered (or committed).
        {
            let mut owned = lock(&self.shared.owned);
            for (p, end) in effects.changelog_ends {
                if let Some(slot) = owned.get_mut(&p) {
                    slot.changelog_end = slot.changelog_end.max(end);
                }
            }
        }
        self.send_receipts(&work);
        self.account(&work, in_count, started);
        Ok(())
    }

    /// One receipt per device seen in the batch, from its state now that the batch is durable
    /// (a device that only re-sent duplicates gets one too: it has evidently not seen the last).
    fn send_receipts(&self, work: &[PartitionBatch<'_>]) {
        let Some(tx) = &self.receipts else {
            return;
        };
        let now = tillstream_runtime::clock::now_ms();
        let owned = lock(&self.shared.owned);
        let mut out = Vec::new();
        for w in work {
            let Some(slot) = owned.get(&w.partition) else {
                continue;
            };
            let devices: BTreeSet<&str> = w.inputs.iter().map(|i| i.device_id.as_str()).collect();
            out.extend(
                devices
                    .into_iter()
                    .filter_map(|d| slot.dedup.device(d).map(|state| receipt_of(d, state, now))),
            );
        }
        if !out.is_empty() && tx.send(out).is_err() {
            tracing::debug!("receipt sender gone (stopping)");
        }
    }

    /// Delivers a batch's effects in the order the guarantee needs. Returns the changelog end
    /// offset per partition.
    async fn effects(
        &mut self,
        work: &[PartitionBatch<'_>],
        token: &CancellationToken,
    ) -> Result<Effects, Stop> {
        let cfg = self.config.dedup.clone();
        let mode = cfg.delivery;
        let conflict_schema = self
            .registry
            .schema_id(EventKind::ConflictDetected, 1)
            .await
            .map_err(DedupError::from)?;
        let gap_schema = self
            .registry
            .schema_id(EventKind::SequenceGap, 1)
            .await
            .map_err(DedupError::from)?;

        // 1. Outputs (same bytes, key, headers, timestamp; same partition) and conflict records.
        let mut outs: Vec<OutputRecord<'_>> = Vec::new();
        for w in work {
            for (k, v) in w.decisions.verdicts.iter().enumerate() {
                let Verdict::Emit { beyond_horizon } = v else {
                    continue;
                };
                let msg = w.msgs[w.input_msg[k]];
                let mut hdrs = msg.headers().cloned();
                if *beyond_horizon {
                    hdrs = Some(hdrs.unwrap_or_default().insert(Header {
                        key: BEYOND_HORIZON_HEADER,
                        value: Some("true"),
                    }));
                }
                outs.push(OutputRecord {
                    topic: &cfg.output_topic,
                    partition: Some(w.partition),
                    key: Cow::Borrowed(msg.key().unwrap_or_default()),
                    payload: Cow::Borrowed(msg.payload().unwrap_or_default()),
                    headers: hdrs,
                    timestamp: msg.timestamp().to_millis(),
                });
            }
            for c in &w.decisions.conflicts {
                outs.push(conflict_record(&cfg.conflicts_topic, conflict_schema, c)?);
            }
        }
        deliver_all(&self.producer, &outs, mode, token).await?;
        tracing::debug!(records = outs.len(), "outputs delivered");
        let now = tillstream_runtime::clock::now_ms();
        for o in outs.iter().filter(|o| o.topic == cfg.output_topic) {
            if let Some(ts) = o.timestamp {
                m::event_delivered(((now - ts).max(0) as f64) / 1000.0);
            }
        }
        drop(outs);
        for w in work {
            for (i, bad) in &w.bad {
                self.dead_letter(w.msgs[*i], bad, token).await?;
            }
        }

        // 2. Changelog: the state now includes outputs that are delivered.
        let mut chunks: Vec<(i32, Vec<u8>)> = Vec::new();
        for w in work {
            let d = &w.decisions.delta;
            if d.is_trivial() {
                continue;
            }
            self.group_seq += 1;
            let group = self.writer_id | (self.group_seq & 0xffff_ffff);
            for c in
                changelog::encode(d, group, cfg.changelog_chunk_bytes).map_err(DedupError::from)?
            {
                chunks.push((w.partition, c));
            }
        }
        let keys: BTreeMap<i32, String> = chunks.iter().map(|(p, _)| (*p, p.to_string())).collect();
        let outs: Vec<OutputRecord<'_>> = chunks
            .iter()
            .map(|(p, c)| OutputRecord {
                topic: &cfg.changelog_topic,
                partition: Some(*p),
                key: Cow::Borrowed(keys[p].as_bytes()),
                payload: Cow::Borrowed(c.as_slice()),
                headers: Some(kafka::make_headers(&[(headers::PRODUCER, SERVICE)])),
                timestamp: None,
            })
            .collect();
        let delivered = deliver_all(&self.producer, &outs, mode, token).await?;
        tracing::debug!(records = outs.len(), "changelog delivered");
        let mut changelog_ends: BTreeMap<i32, i64> = BTreeMap::new();
        for (p, off) in delivered {
            let e = changelog_ends.entry(p).or_insert(off + 1);
            *e = (*e).max(off + 1);
        }
        let bytes: usize = chunks.iter().map(|(_, c)| c.len()).sum();
        m::changelog_written(chunks.len(), bytes);
        self.counters
            .changelog_records
            .fetch_add(chunks.len() as u64, Ordering::Relaxed);

        // 3. Gap records (a restore publishes the last delta's again, so none is lost in a crash).
        let gaps: Vec<&SequenceGap> = work
            .iter()
            .flat_map(|w| w.decisions.delta.gaps.iter())
            .collect();
        let outs = gaps
            .iter()
            .map(|g| gap_record(&cfg.gaps_topic, gap_schema, g))
            .collect::<Result<Vec<_>, _>>()?;
        deliver_all(&self.producer, &outs, mode, token).await?;
        for g in &gaps {
            m::gap_record_written(status_label(g.status));
        }
        self.counters
            .gap_records
            .fetch_add(gaps.len() as u64, Ordering::Relaxed);
        Ok(Effects { changelog_ends })
    }

    async fn dead_letter(
        &self,
        msg: &OwnedMessage,
        bad: &Decoded,
        token: &CancellationToken,
    ) -> Result<(), Stop> {
        let Decoded::Bad(rejected) = bad else {
            return Ok(());
        };
        let record = self.dead_letters.for_message(
            msg,
            rejected,
            msg.timestamp()
                .to_millis()
                .unwrap_or_else(tillstream_runtime::clock::now_ms),
        );
        match self.dead_letters.publish(&record, token).await {
            Ok(()) => {}
            Err(_) if token.is_cancelled() => return Err(Stop::Cancelled),
            Err(e) => return Err(Stop::Failed(e.into())),
        }
        self.counters.dead_letters.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// Publishes again the gap records of the last changelog delta of freshly restored partitions.
    async fn republish(&mut self, token: &CancellationToken) -> Result<(), Stop> {
        let pending = self.shared.take_republish();
        if pending.is_empty() {
            return Ok(());
        }
        let gap_schema = self
            .registry
            .schema_id(EventKind::SequenceGap, 1)
            .await
            .map_err(DedupError::from)?;
        let topic = self.config.dedup.gaps_topic.clone();
        let gaps: Vec<&SequenceGap> = pending.iter().flat_map(|(_, g)| g.iter()).collect();
        let outs = gaps
            .iter()
            .map(|g| gap_record(&topic, gap_schema, g))
            .collect::<Result<Vec<_>, _>>()?;
        self.transaction.begin()?;
        if let Err(e) = deliver_all(&self.producer, &outs, self.transaction.mode(), token).await {
            self.transaction.abort();
            return Err(e);
        }
        self.transaction.commit_without_offsets()?;
        tracing::info!(
            records = outs.len(),
            "gap records of the last restored deltas published again"
        );
        Ok(())
    }

    fn account(&mut self, work: &[PartitionBatch<'_>], in_count: u64, started: Instant) {
        let c = &self.counters;
        let mut s = BatchStats::default();
        for w in work {
            s.add(&w.decisions.stats);
        }
        let bad: u64 = work.iter().map(|w| w.bad.len() as u64).sum();
        c.events_in.fetch_add(in_count, Ordering::Relaxed);
        c.events_out.fetch_add(s.emitted, Ordering::Relaxed);
        c.duplicates.fetch_add(s.duplicates, Ordering::Relaxed);
        c.collisions.fetch_add(s.collisions, Ordering::Relaxed);
        c.beyond_horizon
            .fetch_add(s.beyond_horizon, Ordering::Relaxed);
        c.batches.fetch_add(1, Ordering::Relaxed);
        m::batch_done(&s, in_count, started.elapsed());
        tracing::debug!(
            in_count,
            emitted = s.emitted,
            duplicates = s.duplicates,
            collisions = s.collisions,
            bad,
            ms = started.elapsed().as_millis() as u64,
            "batch done"
        );
    }

    /// Refreshes the state-size and per-store gap gauges (at most every `gauge_interval_ms`).
    fn gauges(&mut self, force: bool) {
        if !force
            && self.last_gauges.elapsed()
                < Duration::from_millis(self.config.dedup.gauge_interval_ms)
        {
            return;
        }
        self.last_gauges = Instant::now();
        let now = tillstream_runtime::clock::now_ms();
        let mut stores: BTreeMap<String, crate::core::StoreGaps> = BTreeMap::new();
        {
            let owned = lock(&self.shared.owned);
            for (p, slot) in owned.iter() {
                m::state_size(*p, slot.dedup.id_count(), slot.dedup.device_count());
                stores.extend(slot.dedup.gaps_by_store());
            }
        }
        let previously = std::mem::take(&mut self.gauge_stores);
        for gone in previously.iter().filter(|s| !stores.contains_key(*s)) {
            m::store_gaps(gone, 0, 0, 0.0);
        }
        for (store, g) in stores {
            if g.open == 0 {
                if previously.contains(&store) {
                    m::store_gaps(&store, 0, 0, 0.0);
                }
                continue;
            }
            let age = g
                .oldest_opened_at
                .map_or(0.0, |o| ((now - o).max(0) as f64) / 1000.0);
            m::store_gaps(&store, g.open, g.missing, age);
            self.gauge_stores.insert(store);
        }
    }
}

struct Effects {
    changelog_ends: BTreeMap<i32, i64>,
}

pub fn status_label(s: GapStatus) -> &'static str {
    match s {
        GapStatus::Opened => "OPENED",
        GapStatus::PartiallyFilled => "PARTIALLY_FILLED",
        GapStatus::Filled => "FILLED",
        GapStatus::DeviceReset => "DEVICE_RESET",
    }
}

async fn decode_retrying(
    decoder: &mut Decoder,
    msg: &OwnedMessage,
    ts: i64,
    token: &CancellationToken,
) -> Result<Decoded, Stop> {
    let mut backoff = Backoff::new(Duration::from_millis(100));
    loop {
        match decoder.decode(msg.payload(), msg.offset(), ts).await {
            Ok(d) => return Ok(d),
            Err(e) if e.class() == ErrorClass::Retryable => {
                tracing::warn!(error = %e, "schema registry unavailable; retrying the batch");
                if !backoff.wait(token).await {
                    return Err(Stop::Cancelled);
                }
            }
            Err(e) => return Err(Stop::Failed(e.into())),
        }
    }
}
