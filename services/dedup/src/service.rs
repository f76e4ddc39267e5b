//! The consumer loop: batch in -> decode -> decide (pure core, per partition) -> deliver outputs,
//! conflicts and dead letters -> write the changelog delta -> publish gap records -> store offsets.
//! Selects on cancellation first; a SIGTERM lets the batch in hand finish (its effects run under a
//! token the first signal does not cancel), then stores and commits offsets and exits.
//!
//! Delivery guarantee: at-least-once (see the crate doc for the exact window). Outputs of one input
//! partition go to the same partition number of the output topic, in input order (records are
//! enqueued one by one in order; the idempotent producer keeps that order on retries).

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use rdkafka::Message;
use rdkafka::consumer::Consumer;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders, OwnedMessage};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use tillstream_contracts::{
    ConflictDetected, EventKind, GapStatus, Registry, SequenceGap, SourceKind, codec,
};
use tillstream_runtime::kafka::{
    self, BatchOffsets, DeadLetters, GroupConsumer, GroupSettings, Source, headers,
};
use tillstream_runtime::{CancellationToken, Classify, ErrorClass, Health};

use crate::core::{Decisions, Input, Verdict};
use crate::decode::{Decoded, Decoder};
use crate::metrics as m;
use crate::restore::{self, Hook, Restorer, Shared, lock};
use crate::{BEYOND_HORIZON_HEADER, Config, DedupError, SERVICE, changelog};

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

/// A started service.
#[derive(Debug)]
pub struct Running {
    pub ops_addr: SocketAddr,
    pub health: Health,
    pub counters: Arc<Counters>,
    pub shared: Arc<Shared>,
    task: tokio::task::JoinHandle<Result<(), DedupError>>,
}

impl Running {
    /// Waits until the loop has stopped (after cancellation or a fatal error).
    pub async fn wait(self) -> Result<(), DedupError> {
        match self.task.await {
            Ok(r) => r,
            Err(e) => Err(DedupError::Restore(format!("dedup task panicked: {e}"))),
        }
    }
}

/// Runs until `token` is cancelled (then finishes the batch in hand and commits) or a fatal error.
pub async fn run(config: Config, token: CancellationToken) -> Result<(), DedupError> {
    start(config, token).await?.wait().await
}

/// Starts the service: checks the topics, warms up the registry, serves the ops endpoint, subscribes.
pub async fn start(config: Config, token: CancellationToken) -> Result<Running, DedupError> {
    let cfg = &config.dedup;
    if cfg.max_batch == 0 || cfg.horizon_ms <= 0 || cfg.changelog_chunk_bytes < 1024 {
        return Err(DedupError::Config(
            "max_batch > 0, horizon_ms > 0 and changelog_chunk_bytes >= 1024 are required".into(),
        ));
    }
    let health = Health::new();
    health.register(restore::HEALTH);
    let ops_addr =
        tillstream_runtime::ops::serve(&config.ops, health.clone(), token.clone()).await?;

    let registry = Registry::new(config.registry.clone())?;
    registry
        .warm_up(&[
            EventKind::ConflictDetected,
            EventKind::SequenceGap,
            EventKind::DeadLetter,
        ])
        .await?;

    let restorer = Restorer::new(
        &config.kafka,
        &cfg.group_id,
        &cfg.client_id,
        &cfg.changelog_topic,
        Duration::from_millis(cfg.restore_timeout_ms),
    )?;
    check_topics(&restorer, cfg)?;

    let mut producer_cfg = config.kafka.clone();
    producer_cfg
        .properties
        .extend(cfg.producer_properties.clone());
    if cfg.transactional {
        let id = cfg
            .transactional_id
            .clone()
            .unwrap_or_else(|| format!("{}-txn", cfg.client_id));
        producer_cfg
            .properties
            .insert("transactional.id".into(), id);
    }
    let producer = kafka::producer(&producer_cfg, &cfg.client_id)?;
    if cfg.transactional {
        let p = producer.clone();
        tokio::task::spawn_blocking(move || p.init_transactions(Duration::from_secs(60)))
            .await
            .map_err(|e| DedupError::Transaction(e.to_string()))??;
    }
    let dead_letters = DeadLetters::new(
        producer.clone(),
        &cfg.dead_letter_topic,
        registry.clone(),
        SERVICE,
        m::DEAD_LETTERS,
    );

    let shared = Arc::new(Shared::default());
    let hook = Hook::new(
        shared.clone(),
        restorer,
        cfg.core(),
        &cfg.input_topic,
        health.clone(),
    );
    let settings = GroupSettings::new(&cfg.group_id, &cfg.client_id);
    let consumer = kafka::group_consumer(
        &config.kafka,
        &settings,
        SERVICE,
        hook,
        &[cfg.input_topic.as_str()],
    )?;
    let counters = Arc::new(Counters::default());
    let lp = Loop {
        config: config.clone(),
        registry,
        producer,
        dead_letters,
        shared: shared.clone(),
        counters: counters.clone(),
        group_seq: 0,
        writer_id: u64::from(uuid::Uuid::new_v4().as_u128() as u32) << 32,
        gauge_stores: BTreeSet::new(),
        last_gauges: Instant::now(),
    };
    let task = tokio::spawn(lp.run(consumer, token));
    Ok(Running {
        ops_addr,
        health,
        counters,
        shared,
        task,
    })
}

/// The output, changelog and input topics must have the same partition count (outputs and state are
/// co-partitioned with the input).
fn check_topics(restorer: &Restorer, cfg: &crate::DedupConfig) -> Result<(), DedupError> {
    let count = |topic: &str| -> Result<usize, DedupError> {
        let md = restorer
            .consumer()
            .fetch_metadata(Some(topic), Duration::from_secs(15))?;
        let n = md
            .topics()
            .iter()
            .find(|t| t.name() == topic)
            .map(|t| t.partitions().len())
            .unwrap_or(0);
        if n == 0 {
            return Err(DedupError::Topology(format!(
                "topic {topic} does not exist (run `tillctl topology apply`)"
            )));
        }
        Ok(n)
    };
    let input = count(&cfg.input_topic)?;
    for t in [&cfg.output_topic, &cfg.changelog_topic] {
        let n = count(t)?;
        if n != input {
            return Err(DedupError::Topology(format!(
                "{t} has {n} partitions, {} has {input}: they must be co-partitioned",
                cfg.input_topic
            )));
        }
    }
    for t in [
        &cfg.gaps_topic,
        &cfg.conflicts_topic,
        &cfg.dead_letter_topic,
    ] {
        count(t)?;
    }
    Ok(())
}

/// One record to produce.
struct Out<'a> {
    topic: &'a str,
    partition: Option<i32>,
    key: Cow<'a, [u8]>,
    payload: Cow<'a, [u8]>,
    headers: Option<OwnedHeaders>,
    timestamp: Option<i64>,
}

/// The work of one partition in one batch.
struct PartWork<'a> {
    partition: i32,
    msgs: Vec<&'a OwnedMessage>,
    inputs: Vec<Input>,
    /// index in `msgs` of each input
    input_msg: Vec<usize>,
    bad: Vec<(usize, Decoded)>,
    decisions: Decisions,
}

struct Loop {
    config: Config,
    registry: Registry,
    producer: FutureProducer,
    dead_letters: DeadLetters,
    shared: Arc<Shared>,
    counters: Arc<Counters>,
    group_seq: u64,
    writer_id: u64,
    gauge_stores: BTreeSet<String>,
    last_gauges: Instant,
}

/// Why the loop stops.
enum Stop {
    Cancelled,
    Failed(DedupError),
}

impl From<DedupError> for Stop {
    fn from(e: DedupError) -> Self {
        Stop::Failed(e)
    }
}

impl Loop {
    async fn run(
        mut self,
        consumer: GroupConsumer<Hook>,
        token: CancellationToken,
    ) -> Result<(), DedupError> {
        let cfg = self.config.dedup.clone();
        let mut decoder = Decoder::new(self.registry.clone());
        // Effects of a batch are never abandoned half-way on SIGTERM; a second signal exits.
        let hard = CancellationToken::new();
        let linger = Duration::from_millis(cfg.linger_ms);
        let mut result = Ok(());
        tracing::info!(
            input = %cfg.input_topic,
            output = %cfg.output_topic,
            transactional = cfg.transactional,
            horizon_ms = cfg.horizon_ms,
            "dedup running"
        );
        while let Some(batch) = kafka::next_batch(&consumer, &token, cfg.max_batch, linger).await {
            if let Some(why) = self.shared.fatal() {
                result = Err(DedupError::Restore(why));
                break;
            }
            match self
                .handle_batch(&consumer, &batch, &mut decoder, &token, &hard)
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
        if !cfg.transactional {
            kafka::commit_on_shutdown(&consumer, SERVICE);
        }
        kafka::flush(&self.producer, Duration::from_secs(10));
        tracing::info!("dedup stopped");
        result
    }

    async fn handle_batch(
        &mut self,
        consumer: &GroupConsumer<Hook>,
        batch: &[OwnedMessage],
        decoder: &mut Decoder,
        token: &CancellationToken,
        hard: &CancellationToken,
    ) -> Result<(), Stop> {
        let started = Instant::now();
        let cfg = self.config.dedup.clone();
        self.republish(hard).await?;

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
        let mut work: Vec<PartWork<'_>> = Vec::new();
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
            let mut w = PartWork {
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

        if cfg.transactional {
            let p = self.producer.clone();
            blocking(move || p.begin_transaction()).map_err(txn_err)?;
        }
        let effects = self.effects(&work, hard).await;
        let effects = match effects {
            Ok(x) => x,
            Err(e) => {
                if cfg.transactional {
                    let p = self.producer.clone();
                    let _ = blocking(move || p.abort_transaction(Duration::from_secs(30)));
                }
                return Err(e);
            }
        };
        if cfg.transactional {
            let cgm = consumer.group_metadata().ok_or_else(|| {
                Stop::Failed(DedupError::Transaction("no consumer group metadata".into()))
            })?;
            let tpl = offsets.to_tpl();
            let p = self.producer.clone();
            tracing::debug!("committing transaction");
            let res = blocking(move || {
                p.send_offsets_to_transaction(&tpl, &cgm, Duration::from_secs(30))?;
                p.commit_transaction(Duration::from_secs(60))
            });
            tracing::debug!(ok = res.is_ok(), "transaction done");
            if let Err(e) = res {
                let p = self.producer.clone();
                let _ = blocking(move || p.abort_transaction(Duration::from_secs(30)));
                // The in-memory state already holds this batch: only a restart rebuilds it from
                // the committed changelog.
                return Err(Stop::Failed(DedupError::Transaction(format!(
                    "commit failed ({e}); restart to restore state"
                ))));
            }
        } else {
            kafka::store_batch_offsets(consumer, &offsets);
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
        self.account(&work, in_count, started);
        Ok(())
    }

    /// Delivers a batch's effects in the order the guarantee needs. Returns the changelog end
    /// offset per partition.
    async fn effects(
        &mut self,
        work: &[PartWork<'_>],
        hard: &CancellationToken,
    ) -> Result<Effects, Stop> {
        let cfg = self.config.dedup.clone();
        let txn = cfg.transactional;
        let conflict_id = self
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
        let mut outs: Vec<Out<'_>> = Vec::new();
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
                outs.push(Out {
                    topic: &cfg.output_topic,
                    partition: Some(w.partition),
                    key: Cow::Borrowed(msg.key().unwrap_or_default()),
                    payload: Cow::Borrowed(msg.payload().unwrap_or_default()),
                    headers: hdrs,
                    timestamp: msg.timestamp().to_millis(),
                });
            }
            for c in &w.decisions.conflicts {
                outs.push(conflict_out(&cfg.conflicts_topic, conflict_id, c)?);
            }
        }
        deliver_all(&self.producer, &outs, hard, txn).await?;
        tracing::debug!(records = outs.len(), "outputs delivered");
        let now = kafka::now_ms();
        for o in outs.iter().filter(|o| o.topic == cfg.output_topic) {
            if let Some(ts) = o.timestamp {
                metrics::histogram!(m::EVENT_LAG_SECONDS)
                    .record(((now - ts).max(0) as f64) / 1000.0);
            }
        }
        drop(outs);
        for w in work {
            for (i, bad) in &w.bad {
                self.dead_letter(w.msgs[*i], bad, hard).await?;
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
        let outs: Vec<Out<'_>> = chunks
            .iter()
            .map(|(p, c)| Out {
                topic: &cfg.changelog_topic,
                partition: Some(*p),
                key: Cow::Borrowed(keys[p].as_bytes()),
                payload: Cow::Borrowed(c.as_slice()),
                headers: Some(kafka::make_headers(&[(headers::PRODUCER, SERVICE)])),
                timestamp: None,
            })
            .collect();
        let delivered = deliver_all(&self.producer, &outs, hard, txn).await?;
        tracing::debug!(records = outs.len(), "changelog delivered");
        let mut changelog_ends: BTreeMap<i32, i64> = BTreeMap::new();
        for (p, off) in delivered {
            let e = changelog_ends.entry(p).or_insert(off + 1);
            *e = (*e).max(off + 1);
        }
        let bytes: usize = chunks.iter().map(|(_, c)| c.len()).sum();
        metrics::counter!(m::CHANGELOG_RECORDS).increment(chunks.len() as u64);
        metrics::counter!(m::CHANGELOG_BYTES).increment(bytes as u64);
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
            .map(|g| gap_out(&cfg.gaps_topic, gap_schema, g))
            .collect::<Result<Vec<_>, _>>()?;
        deliver_all(&self.producer, &outs, hard, txn).await?;
        for g in &gaps {
            metrics::counter!(m::GAP_RECORDS, "status" => status_label(g.status)).increment(1);
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
        hard: &CancellationToken,
    ) -> Result<(), Stop> {
        let Decoded::Bad {
            reason,
            detail,
            store_id,
            device_id,
            event_id,
        } = bad
        else {
            return Ok(());
        };
        let hdrs: BTreeMap<String, String> = kafka::header_map(msg);
        let key = msg.key();
        let store = store_id
            .clone()
            .or_else(|| key.map(|k| String::from_utf8_lossy(k).into_owned()));
        let source = Source {
            kind: SourceKind::Kafka,
            topic: &self.config.dedup.input_topic,
            partition: Some(msg.partition()),
            offset: Some(msg.offset()),
            key,
            headers: hdrs,
        };
        let record = self.dead_letters.record(
            &source,
            msg.payload().unwrap_or_default(),
            reason,
            detail,
            store.as_deref(),
            device_id.as_deref(),
            event_id.as_deref(),
            msg.timestamp().to_millis().unwrap_or_else(kafka::now_ms),
        );
        self.dead_letters
            .publish(&record, hard)
            .await
            .map_err(DedupError::from)?;
        self.counters.dead_letters.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// Publishes again the gap records of the last changelog delta of freshly restored partitions.
    async fn republish(&mut self, hard: &CancellationToken) -> Result<(), Stop> {
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
            .map(|g| gap_out(&topic, gap_schema, g))
            .collect::<Result<Vec<_>, _>>()?;
        let txn = self.config.dedup.transactional;
        if txn {
            let p = self.producer.clone();
            blocking(move || p.begin_transaction()).map_err(txn_err)?;
        }
        deliver_all(&self.producer, &outs, hard, txn).await?;
        if txn {
            let p = self.producer.clone();
            blocking(move || p.commit_transaction(Duration::from_secs(60))).map_err(txn_err)?;
        }
        tracing::info!(
            records = outs.len(),
            "gap records of the last restored deltas published again"
        );
        Ok(())
    }

    fn account(&mut self, work: &[PartWork<'_>], in_count: u64, started: Instant) {
        let c = &self.counters;
        let mut s = crate::core::BatchStats::default();
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
        metrics::counter!(m::EVENTS_IN).increment(in_count);
        metrics::counter!(m::EVENTS_OUT).increment(s.emitted);
        metrics::counter!(m::DUPLICATES_DROPPED).increment(s.duplicates);
        metrics::counter!(m::IDENTITY_COLLISIONS).increment(s.collisions);
        metrics::counter!(m::COLLISIONS_REPEATED).increment(s.collisions_repeated);
        metrics::counter!(m::BEYOND_HORIZON).increment(s.beyond_horizon);
        metrics::counter!(m::DEVICE_RESETS).increment(s.resets);
        metrics::counter!(m::SEQUENCE_BASELINES).increment(s.baselines);
        metrics::counter!(m::SEQUENCE_UNACCOUNTED, "reason" => "straggler").increment(s.stragglers);
        metrics::counter!(m::SEQUENCE_UNACCOUNTED, "reason" => "unsequenced")
            .increment(s.unsequenced);
        metrics::counter!(m::SEQUENCE_UNACCOUNTED, "reason" => "beyond_horizon")
            .increment(s.beyond_horizon_unaccounted);
        metrics::counter!(m::GAPS_ABANDONED).increment(s.gaps_abandoned);
        metrics::counter!(m::STATE_EXPIRED, "kind" => "event_id").increment(s.ids_expired);
        metrics::counter!(m::STATE_EXPIRED, "kind" => "device").increment(s.devices_expired);
        metrics::histogram!(m::BATCH_SECONDS).record(started.elapsed().as_secs_f64());
        metrics::histogram!(m::BATCH_EVENTS).record(in_count as f64);
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
        let now = kafka::now_ms();
        let mut stores: BTreeMap<String, crate::core::StoreGaps> = BTreeMap::new();
        {
            let owned = lock(&self.shared.owned);
            for (p, slot) in owned.iter() {
                let label = p.to_string();
                metrics::gauge!(m::STATE_EVENT_IDS, "partition" => label.clone())
                    .set(slot.dedup.id_count() as f64);
                metrics::gauge!(m::STATE_DEVICES, "partition" => label)
                    .set(slot.dedup.device_count() as f64);
                stores.extend(slot.dedup.gaps_by_store());
            }
        }
        let previously = std::mem::take(&mut self.gauge_stores);
        for gone in previously.iter().filter(|s| !stores.contains_key(*s)) {
            metrics::gauge!(m::OPEN_GAPS, "store" => gone.clone()).set(0.0);
            metrics::gauge!(m::MISSING_SEQS, "store" => gone.clone()).set(0.0);
            metrics::gauge!(m::OLDEST_GAP_AGE, "store" => gone.clone()).set(0.0);
        }
        for (store, g) in stores {
            if g.open == 0 {
                if previously.contains(&store) {
                    metrics::gauge!(m::OPEN_GAPS, "store" => store.clone()).set(0.0);
                    metrics::gauge!(m::MISSING_SEQS, "store" => store.clone()).set(0.0);
                    metrics::gauge!(m::OLDEST_GAP_AGE, "store" => store.clone()).set(0.0);
                }
                continue;
            }
            metrics::gauge!(m::OPEN_GAPS, "store" => store.clone()).set(g.open as f64);
            metrics::gauge!(m::MISSING_SEQS, "store" => store.clone()).set(g.missing as f64);
            let age = g
                .oldest_opened_at
                .map_or(0.0, |o| ((now - o).max(0) as f64) / 1000.0);
            metrics::gauge!(m::OLDEST_GAP_AGE, "store" => store.clone()).set(age);
            self.gauge_stores.insert(store);
        }
    }
}

struct Effects {
    changelog_ends: BTreeMap<i32, i64>,
}

fn txn_err(e: KafkaError) -> Stop {
    Stop::Failed(DedupError::Transaction(e.to_string()))
}

fn blocking<R>(f: impl FnOnce() -> R) -> R {
    match tokio::runtime::Handle::try_current() {
        Ok(h) if h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(f)
        }
        _ => f(),
    }
}

pub fn status_label(s: GapStatus) -> &'static str {
    match s {
        GapStatus::Opened => "OPENED",
        GapStatus::PartiallyFilled => "PARTIALLY_FILLED",
        GapStatus::Filled => "FILLED",
        GapStatus::DeviceReset => "DEVICE_RESET",
    }
}

fn conflict_out<'a>(
    topic: &'a str,
    schema_id: u32,
    c: &ConflictDetected,
) -> Result<Out<'a>, DedupError> {
    let datum = codec::encode_record(EventKind::ConflictDetected, c)?;
    let event_id = c.event_ids.first().map(String::as_str).unwrap_or_default();
    Ok(Out {
        topic,
        partition: None,
        key: Cow::Owned(c.store_id.as_bytes().to_vec()),
        payload: Cow::Owned(codec::frame(schema_id, datum)),
        headers: Some(kafka::make_headers(&[
            (headers::EVENT_TYPE, EventKind::ConflictDetected.name()),
            (headers::EVENT_ID, event_id),
            (headers::PRODUCER, SERVICE),
        ])),
        timestamp: None,
    })
}

fn gap_out<'a>(topic: &'a str, schema_id: u32, g: &SequenceGap) -> Result<Out<'a>, DedupError> {
    let datum = codec::encode_record(EventKind::SequenceGap, g)?;
    Ok(Out {
        topic,
        partition: None,
        key: Cow::Owned(g.store_id.as_bytes().to_vec()),
        payload: Cow::Owned(codec::frame(schema_id, datum)),
        headers: Some(kafka::make_headers(&[
            (headers::EVENT_TYPE, EventKind::SequenceGap.name()),
            (headers::DEVICE_ID, &g.device_id),
            (headers::PRODUCER, SERVICE),
        ])),
        timestamp: None,
    })
}

async fn decode_retrying(
    decoder: &mut Decoder,
    msg: &OwnedMessage,
    ts: i64,
    token: &CancellationToken,
) -> Result<Decoded, Stop> {
    let mut backoff = Duration::from_millis(100);
    loop {
        match decoder.decode(msg.payload(), msg.offset(), ts).await {
            Ok(d) => return Ok(d),
            Err(e) if e.class() == ErrorClass::Retryable => {
                tracing::warn!(error = %e, "schema registry unavailable; retrying the batch");
                tokio::select! {
                    _ = token.cancelled() => return Err(Stop::Cancelled),
                    _ = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
            Err(e) => return Err(Stop::Failed(e.into())),
        }
    }
}

/// Enqueues `recs` in order (waiting when the local queue is full, so order is kept) and waits for
/// every delivery report. A failed delivery that is retryable re-sends the whole set (duplicates
/// are allowed downstream; skipping is not); in a transaction any failure aborts.
async fn deliver_all(
    producer: &FutureProducer,
    recs: &[Out<'_>],
    hard: &CancellationToken,
    transactional: bool,
) -> Result<Vec<(i32, i64)>, Stop> {
    let mut backoff = Duration::from_millis(50);
    loop {
        let mut futures = Vec::with_capacity(recs.len());
        let mut failed: Option<KafkaError> = None;
        for r in recs {
            let mut rec = FutureRecord::<[u8], [u8]>::to(r.topic)
                .key(r.key.as_ref())
                .payload(r.payload.as_ref());
            if let Some(p) = r.partition {
                rec = rec.partition(p);
            }
            if let Some(h) = &r.headers {
                rec = rec.headers(h.clone());
            }
            if let Some(ts) = r.timestamp {
                rec = rec.timestamp(ts);
            }
            loop {
                match producer.send_result(rec) {
                    Ok(f) => {
                        futures.push(f);
                        break;
                    }
                    Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                        rec = back;
                        tokio::time::sleep(Duration::from_millis(2)).await;
                    }
                    Err((e, _)) => {
                        failed = Some(e);
                        break;
                    }
                }
            }
            if failed.is_some() {
                break;
            }
        }
        let mut out = Vec::with_capacity(futures.len());
        for f in futures {
            match f.await {
                Ok(Ok(d)) => out.push((d.partition, d.offset)),
                Ok(Err((e, _))) => {
                    failed.get_or_insert(e);
                }
                Err(_) => {
                    failed.get_or_insert(KafkaError::Canceled);
                }
            }
        }
        let Some(e) = failed else {
            return Ok(out);
        };
        if transactional || e.class() != ErrorClass::Retryable || hard.is_cancelled() {
            return Err(Stop::Failed(e.into()));
        }
        metrics::counter!(m::DELIVERY_RETRIES).increment(1);
        tracing::warn!(error = %e, records = recs.len(), backoff_ms = backoff.as_millis() as u64, "delivery failed; re-sending the set");
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
}
