//! The drainer: produces the outbox's records to Kafka in outbox-id order (= arrival order, so
//! every store's order is kept: one idempotent producer, key = store id, no reordering within a
//! partition), with up to `max_in_flight` awaiting their delivery report, and tells the writer which
//! ids Kafka confirmed so it deletes them.
//!
//! Delivery guarantee: at-least-once, in order per store. While Kafka is away, up to
//! `max_in_flight` records wait in the producer and the rest wait in the outbox. Any failed delivery
//! (including the producer's `delivery_timeout_ms`) resets the drainer: the producer is rebuilt and
//! everything not yet confirmed is produced again from the lowest unconfirmed id, so the first copy
//! of every record lands in order (duplicates possible, gaps and reordering of first copies not).
//! A record Kafka refuses for good is replaced by a dead letter.

use std::collections::{BTreeSet, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use futures::StreamExt;
use futures::stream::FuturesUnordered;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{FutureProducer, FutureRecord};
use tillstream_runtime::kafka::{self, KafkaConfig, make_headers};
use tillstream_runtime::{Classify, ErrorClass};
use tokio_util::sync::CancellationToken;

use crate::metrics as m;
use crate::outbox::{Reader, Record, Row, Shared, WriterMsg};
use crate::quarantine::Quarantine;

type Delivery = (u64, Arc<Record>, Instant, Result<(), KafkaError>);
type InFlight = FuturesUnordered<Pin<Box<dyn Future<Output = Delivery> + Send>>>;

/// Builds the Kafka record a dead letter replaces a refused one with.
pub trait Refused: Send + Sync {
    fn dead_letter_for(&self, record: &Record, error: &KafkaError) -> Option<Record>;
}

/// The producer configuration of the drainer: the house idempotent producer with a bounded local
/// delivery timeout; a timeout is not a loss (the record is still in the outbox), it resets the
/// drainer, which re-sends in order.
pub fn producer_config(
    kafka: &KafkaConfig,
    linger_ms: u32,
    delivery_timeout_ms: u32,
) -> KafkaConfig {
    let mut k = kafka.clone();
    k.properties
        .entry("message.timeout.ms".into())
        .or_insert_with(|| delivery_timeout_ms.max(1000).to_string());
    k.properties
        .entry("linger.ms".into())
        .or_insert_with(|| linger_ms.to_string());
    k
}

pub struct Drainer<A> {
    pub kafka: KafkaConfig,
    pub client_id: String,
    pub shared: Arc<Shared>,
    pub reader: Option<Reader>,
    pub writer: std::sync::mpsc::Sender<WriterMsg<A>>,
    pub max_in_flight: usize,
    /// Deliveries' worth of time kept in flight (see `OutboxConfig::in_flight_window_ms`).
    pub window_ms: u64,
    pub linger_ms: u32,
    pub delivery_timeout_ms: u32,
    pub shutdown_drain: Duration,
    pub refused: Arc<dyn Refused>,
    /// Failed deliveries in a row naming a topic as the problem (vanished, not authorised) before
    /// that topic's records are set aside in the quarantine table (`quarantine.rs`).
    pub quarantine_after_failures: u32,
    /// How long a quarantined topic's records are set aside before one is tried again.
    pub quarantine_recheck: Duration,
    /// The topics it will produce to: their metadata is fetched before the first record, so a
    /// backlog does not wait on it (the first delivery of a backlog came about twice as soon with
    /// it; BENCHMARKS.md, store bridge).
    pub topics: Vec<String>,
}

impl<A> std::fmt::Debug for Drainer<A> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Drainer")
            .field("client_id", &self.client_id)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DrainerError {
    #[error("kafka producer: {0}")]
    Kafka(#[from] KafkaError),
    #[error("outbox: {0}")]
    Outbox(#[from] crate::outbox::OutboxError),
    #[error("outbox writer stopped")]
    WriterGone,
}

impl Classify for DrainerError {
    fn class(&self) -> ErrorClass {
        ErrorClass::Fatal
    }
}

struct State {
    quarantine: Quarantine,
    producer: FutureProducer,
    next_id: u64,
    stash: VecDeque<Row>,
    in_flight: InFlight,
    in_flight_ids: BTreeSet<u64>,
    delivered: Vec<u64>,
}

impl<A: Send + 'static> Drainer<A> {
    /// Drains until `stop` is cancelled, then waits up to `shutdown_drain` for in-flight deliveries.
    pub async fn run(mut self, stop: CancellationToken) -> Result<(), DrainerError> {
        let pcfg = producer_config(&self.kafka, self.linger_ms, self.delivery_timeout_ms);
        let mut st = State {
            quarantine: Quarantine::new(self.quarantine_after_failures, self.quarantine_recheck),
            producer: kafka::producer(&pcfg, &self.client_id)?,
            next_id: self.shared.first_id,
            stash: VecDeque::new(),
            in_flight: FuturesUnordered::new(),
            in_flight_ids: BTreeSet::new(),
            delivered: Vec::new(),
        };
        tokio::select! {
            _ = warm_up(&st.producer, &self.topics) => {}
            _ = stop.cancelled() => {}
        }
        let mut stopping: Option<Instant> = None;
        let mut queue_full = false;
        let mut pace = Window::new(self.max_in_flight, self.window_ms);
        let mut tick = tokio::time::interval(Duration::from_millis(20));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_report = Instant::now();
        loop {
            let window = pace.size;
            // Fill the window.
            while stopping.is_none()
                && !queue_full
                // Refill a saturated window in chunks, not one record per delivery report.
                && (st.in_flight.len() + (window / 10).max(1) <= window || st.in_flight.is_empty())
            {
                let want = window.saturating_sub(st.in_flight.len()).clamp(1, 2_000);
                let rows = self.next_rows(&mut st, want).await?;
                if rows.is_empty() {
                    break;
                }
                let mut rows = rows.into_iter();
                while let Some(row) = rows.next() {
                    if let Some(reason) = st.quarantine.set_aside(&row.record.topic, Instant::now())
                    {
                        self.set_aside(row.id, &row.record, reason, false).await?;
                        continue;
                    }
                    match send(&st.producer, &row) {
                        Ok(fut) => {
                            st.in_flight_ids.insert(row.id);
                            st.in_flight.push(fut);
                        }
                        Err(e) if e.rdkafka_error_code() == Some(RDKafkaErrorCode::QueueFull) => {
                            st.stash.push_back(row);
                            st.stash.extend(rows.by_ref());
                            queue_full = true;
                        }
                        Err(e) => {
                            st.stash.push_back(row);
                            st.stash.extend(rows.by_ref());
                            self.reset(&mut st, &e, None, None).await?;
                        }
                    }
                }
            }
            // Deletes are batched: the writer commits them with its next group commit anyway.
            if st.delivered.len() >= 1024
                || last_report.elapsed() >= Duration::from_millis(20)
                || stopping.is_some()
            {
                self.report(&mut st)?;
                last_report = Instant::now();
            }
            if let Some(deadline) = stopping
                && (st.in_flight.is_empty() || Instant::now() >= deadline)
            {
                if !st.in_flight.is_empty() {
                    tracing::warn!(
                        in_flight = st.in_flight.len(),
                        "shutdown: deliveries still pending stay in the outbox"
                    );
                }
                break;
            }
            let room = st.in_flight.len() + (window / 10).max(1) <= window && !queue_full;
            tokio::select! {
                biased;
                Some((id, record, started, res)) = st.in_flight.next(), if !st.in_flight.is_empty() => {
                    queue_full = false;
                    pace.count += 1;
                    self.delivered(&mut st, id, &record, started, res).await?;
                    // Collect whatever else completed without waiting.
                    while let Some(Some((id, record, started, res))) =
                        futures::FutureExt::now_or_never(st.in_flight.next())
                    {
                        pace.count += 1;
                        self.delivered(&mut st, id, &record, started, res).await?;
                    }
                }
                _ = self.shared.notify.notified(), if room && stopping.is_none() => {}
                _ = stop.cancelled(), if stopping.is_none() => {
                    stopping = Some(Instant::now() + self.shutdown_drain);
                }
                _ = tick.tick() => {
                    queue_full = false;
                    pace.tick(!st.in_flight.is_empty());
                }
            }
        }
        self.report(&mut st)?;
        let producer = st.producer;
        drop(st.in_flight);
        tokio::task::spawn_blocking(move || kafka::flush(&producer, Duration::from_millis(100)))
            .await
            .ok();
        Ok(())
    }

    /// Tells the writer which ids Kafka has.
    fn report(&self, st: &mut State) -> Result<(), DrainerError> {
        if !st.delivered.is_empty() {
            let ids = std::mem::take(&mut st.delivered);
            self.writer
                .send(WriterMsg::Delivered(ids))
                .map_err(|_| DrainerError::WriterGone)?;
        }
        Ok(())
    }

    async fn delivered(
        &mut self,
        st: &mut State,
        id: u64,
        record: &Record,
        started: Instant,
        res: Result<(), KafkaError>,
    ) -> Result<(), DrainerError> {
        if !st.in_flight_ids.remove(&id) {
            return Ok(()); // from before a reset
        }
        match res {
            Ok(()) => {
                let now = Instant::now();
                let delivery = now.duration_since(started).as_secs_f64();
                let inside = (tillstream_runtime::clock::now_ms() - record.received_at_ms).max(0)
                    as f64
                    / 1000.0;
                m::delivered(&record.kind, &record.store, delivery, inside);
                st.quarantine.delivered(&record.topic);
                st.delivered.push(id);
                Ok(())
            }
            Err(e) => {
                // The failed record is not confirmed: the reset must start at or before it.
                let poison = e.class() == ErrorClass::Poison;
                if !poison
                    && let Some(reason) = st.quarantine.failed(&record.topic, &e, Instant::now())
                {
                    // Out of the outbox before the reset re-reads it from disk.
                    self.set_aside(id, record, reason, true).await?;
                }
                self.reset(st, &e, Some(id), poison.then_some((id, record)))
                    .await
            }
        }
    }

    /// Next rows in id order: from memory when it holds them, else from disk.
    async fn next_rows(&mut self, st: &mut State, max: usize) -> Result<Vec<Row>, DrainerError> {
        if !st.stash.is_empty() {
            let n = st.stash.len().min(max);
            return Ok(st.stash.drain(..n).collect());
        }
        loop {
            let committed = self.shared.committed_max.load(Ordering::Acquire);
            if st.next_id > committed {
                return Ok(Vec::new());
            }
            if let Some(rows) = self.shared.take_hot(st.next_id, max) {
                st.next_id = rows.last().map(|r| r.id + 1).unwrap_or(st.next_id);
                return Ok(rows);
            }
            let upper = match self.shared.hot_front() {
                Some(front) if front <= st.next_id => continue, // arrived meanwhile
                Some(front) => (front - 1).min(committed),
                None => committed,
            };
            let mut reader = self.reader.take().ok_or(DrainerError::WriterGone)?;
            let from = st.next_id;
            let (reader, rows) = tokio::task::spawn_blocking(move || {
                let rows = reader.read_range(from, upper, max);
                (reader, rows)
            })
            .await
            .map_err(|_| DrainerError::WriterGone)?;
            self.reader = Some(reader);
            let rows = rows?;
            match rows.last() {
                Some(last) => {
                    st.next_id = last.id + 1;
                    return Ok(rows);
                }
                // Everything up to `upper` was delivered already (ids from before a restart).
                None => st.next_id = upper + 1,
            }
        }
    }

    /// Moves a record into the quarantine table (`wait`: until the writer has committed it).
    async fn set_aside(
        &mut self,
        id: u64,
        record: &Record,
        reason: &'static str,
        wait: bool,
    ) -> Result<(), DrainerError> {
        tracing::error!(
            id,
            topic = %record.topic,
            store = %record.store,
            reason,
            "kafka cannot take this topic's records: setting the record aside in the outbox quarantine (re-drive with `tillctl outbox redrive`)"
        );
        m::quarantined(reason);
        self.writer
            .send(WriterMsg::Quarantine(id, reason.to_string()))
            .map_err(|_| DrainerError::WriterGone)?;
        if wait {
            let (tx, rx) = tokio::sync::oneshot::channel();
            self.writer
                .send(WriterMsg::Flush(tx))
                .map_err(|_| DrainerError::WriterGone)?;
            let _ = rx.await;
        }
        Ok(())
    }

    /// Rebuilds the producer and re-sends everything unconfirmed from the lowest id, in order.
    async fn reset(
        &mut self,
        st: &mut State,
        error: &KafkaError,
        failed: Option<u64>,
        refused: Option<(u64, &Record)>,
    ) -> Result<(), DrainerError> {
        m::drainer_reset();
        tracing::warn!(%error, in_flight = st.in_flight_ids.len(), "kafka delivery failed: re-sending unconfirmed records in order");
        let mut restart = st.next_id;
        if let Some(first) = st.in_flight_ids.first() {
            restart = restart.min(*first);
        }
        if let Some(first) = st.stash.front() {
            restart = restart.min(first.id);
        }
        if let Some(id) = failed {
            restart = restart.min(id);
        }
        if let Some((id, record)) = refused {
            restart = restart.min(id);
            if let Some(dl) = self.refused.dead_letter_for(record, error) {
                tracing::error!(id, %error, topic = %record.topic, "kafka refused a record for good: replacing it with a dead letter");
                self.writer
                    .send(WriterMsg::Replace(id, dl))
                    .map_err(|_| DrainerError::WriterGone)?;
                let (tx, rx) = tokio::sync::oneshot::channel();
                self.writer
                    .send(WriterMsg::Flush(tx))
                    .map_err(|_| DrainerError::WriterGone)?;
                let _ = rx.await;
            }
        }
        st.in_flight = FuturesUnordered::new();
        st.in_flight_ids.clear();
        st.stash.clear();
        st.next_id = restart;
        let old = std::mem::replace(
            &mut st.producer,
            kafka::producer(
                &producer_config(&self.kafka, self.linger_ms, self.delivery_timeout_ms),
                &self.client_id,
            )?,
        );
        // Dropping a producer purges and waits: not on the async threads.
        tokio::task::spawn_blocking(move || drop(old));
        tokio::time::sleep(Duration::from_millis(500)).await;
        Ok(())
    }
}

/// The drainer's window: how many records it keeps produced and unconfirmed. It adapts to Kafka's
/// pace: about `window_ms` worth of deliveries, between `min` (1,000) and `max` (`max_in_flight`).
/// A window far deeper than the broker drains only makes librdkafka's broker thread spin
/// (most of the bridge's CPU against a slow tansu); one too shallow leaves the broker idle.
///
/// It starts wide (nothing is known of the broker yet, and a broker's first answers can be slow,
/// tansu SQLite's especially), learns only from samples that saw
/// deliveries (a sample spent waiting teaches nothing), and opens wide again after an idle spell.
struct Window {
    min: usize,
    max: usize,
    window_ms: u64,
    size: usize,
    ewma: Option<f64>,
    count: u64,
    since: Instant,
}

impl Window {
    fn new(max_in_flight: usize, window_ms: u64) -> Window {
        let max = max_in_flight.max(1);
        Window {
            min: max.min(1_000),
            max,
            window_ms,
            size: max,
            ewma: None,
            count: 0,
            since: Instant::now(),
        }
    }

    /// Called often; every 100 ms takes a sample of the deliveries counted in `count`.
    fn tick(&mut self, busy: bool) {
        let dt = self.since.elapsed().as_secs_f64();
        if dt >= 0.1 {
            let delivered = std::mem::take(&mut self.count);
            self.update(delivered, dt, busy);
            self.since = Instant::now();
        }
    }

    /// One sample: `delivered` reports in `dt` seconds; `busy` = records are in flight.
    fn update(&mut self, delivered: u64, dt: f64, busy: bool) {
        if delivered == 0 {
            if !busy {
                // Idle: the next backlog starts with the whole window.
                self.size = self.max;
                self.ewma = None;
            }
            return;
        }
        let e = smooth(self.ewma, delivered as f64 / dt);
        self.ewma = Some(e);
        self.size = ((e * self.window_ms as f64 / 1000.0) as usize).clamp(self.min, self.max);
    }
}

/// Fetches the metadata of `topics` into the producer (at most 5 s; failures only logged: the
/// producer fetches what it needs anyway, this only saves the wait on the first records).
async fn warm_up(producer: &FutureProducer, topics: &[String]) {
    let p = producer.clone();
    let topics = topics.to_vec();
    let res = tokio::task::spawn_blocking(move || {
        let deadline = Instant::now() + Duration::from_secs(5);
        for t in &topics {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(format!("no time left for {t}"));
            }
            rdkafka::producer::Producer::client(&p)
                .fetch_metadata(Some(t), left)
                .map_err(|e| format!("{t}: {e}"))?;
        }
        Ok(topics.len())
    })
    .await;
    match res {
        Ok(Ok(n)) => tracing::debug!(topics = n, "producer metadata warmed up"),
        Ok(Err(e)) => tracing::debug!(error = %e, "producer metadata warm-up incomplete"),
        Err(e) => tracing::debug!(error = %e, "producer metadata warm-up failed"),
    }
}

/// The next smoothed rate from the previous one and a new sample: up at once, down by 30%.
fn smooth(prev: Option<f64>, sample: f64) -> f64 {
    match prev {
        Some(prev) if sample < prev => 0.7 * prev + 0.3 * sample,
        _ => sample,
    }
}

fn send(
    producer: &FutureProducer,
    row: &Row,
) -> Result<Pin<Box<dyn Future<Output = Delivery> + Send>>, KafkaError> {
    let r = &row.record;
    let mut record = FutureRecord::to(&r.topic).key(&r.key).payload(&r.value);
    if !r.headers.is_empty() {
        let pairs: Vec<(&str, &str)> = r
            .headers
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        record = record.headers(make_headers(&pairs));
    }
    let started = Instant::now();
    let fut = producer.send_result(record).map_err(|(e, _)| e)?;
    let id = row.id;
    let rec = row.record.clone();
    Ok(Box::pin(async move {
        let res = match fut.await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err((e, _))) => Err(e),
            Err(_) => Err(KafkaError::Canceled),
        };
        (id, rec, started, res)
    }))
}

#[cfg(test)]
mod tests {
    use super::{Window, smooth};

    #[test]
    fn the_window_starts_wide_follows_the_pace_and_reopens_when_idle() {
        let mut w = Window::new(10_000, 1_000);
        assert_eq!(w.size, 10_000);
        // Waiting on a slow first answer: nothing learned, still wide.
        w.update(0, 0.1, true);
        assert_eq!(w.size, 10_000);
        // 300 deliveries in 0.1 s = 3,000/s: one second's worth.
        w.update(300, 0.1, true);
        assert_eq!(w.size, 3_000);
        // Faster at once.
        w.update(800, 0.1, true);
        assert_eq!(w.size, 8_000);
        // Slower gently: 0.7 * 8,000 + 0.3 * 2,000.
        w.update(200, 0.1, true);
        assert_eq!(w.size, 6_200);
        // Never below the floor nor above max_in_flight.
        w.update(1, 0.1, true);
        w.update(1, 0.1, true);
        for _ in 0..20 {
            w.update(1, 0.1, true);
        }
        assert_eq!(w.size, 1_000);
        w.update(100_000, 0.1, true);
        assert_eq!(w.size, 10_000);
        // Idle: wide again for the next backlog.
        w.update(50, 0.1, true);
        w.update(0, 0.1, false);
        assert_eq!(w.size, 10_000);
        // A small max_in_flight is its own floor.
        let mut small = Window::new(200, 250);
        small.update(10, 0.1, true);
        assert_eq!(small.size, 200);
    }

    #[test]
    fn the_pace_rises_at_once_and_falls_gently() {
        assert_eq!(smooth(None, 500.0), 500.0);
        assert_eq!(smooth(Some(1_000.0), 15_000.0), 15_000.0);
        let down = smooth(Some(15_000.0), 0.0);
        assert!((down - 10_500.0).abs() < 1e-6, "{down}");
        // A run of idle samples still brings it down eventually (to the window's floor).
        let mut r = 15_000.0;
        for _ in 0..20 {
            r = smooth(Some(r), 0.0);
        }
        assert!(r < 15.0, "{r}");
    }
}
