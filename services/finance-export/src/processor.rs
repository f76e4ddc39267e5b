//! The batch loop: batch in → decode (dead-letter poison) → gate (skip what the ledger holds) →
//! post each new event (pure; refusals dead-lettered with their reason and figures) → one database
//! transaction (events, lines, closes, store-days, offsets) → offsets stored for Kafka's commit
//! (a fallback for the database's own).
//!
//! Delivery guarantee: exactly-once effects in the ledger. Effects and offsets commit together; a
//! redelivered event is refused by the gate. A dead letter is published before the transaction
//! that passes its record commits, so bad input never vanishes (a crash in between publishes it
//! again, under the same deterministic id).

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::Message;
use rdkafka::message::OwnedMessage;
use tillstream_contracts::{DeviceEvent, Registry};
use tillstream_runtime::kafka::{self, DeadLetters, InputConsumer, Rejected};
use tillstream_runtime::retry::Backoff;
use tillstream_runtime::{CancellationToken, Classify, ErrorClass, Health, clock};

use crate::config::Config;
use crate::core::{
    Chart, CloseFigures, Figures, Posting, Refusal, Stores, post_compensation, post_event,
};
use crate::db::{Booked, Db};
use crate::decode::{Input, decode};
use crate::hook::OffsetHook;
use crate::{Error, metrics as m};

/// The readiness check of the database.
pub const DATABASE_CHECK: &str = "database";

/// Everything the batch loop needs, owned by its task.
pub struct Processor {
    pub cfg: Config,
    pub db: Db,
    pub registry: Registry,
    pub dead: DeadLetters,
    pub consumer: InputConsumer<OffsetHook>,
    pub chart: Arc<Chart>,
    pub stores: Arc<Stores>,
    pub token: CancellationToken,
    pub health: Health,
}

/// A decoded record and where it came from.
struct Item {
    msg: OwnedMessage,
    input: Input,
}

/// The business date of an instant in a store's zone (days since the epoch).
fn local_date(ms: i64, tz: &jiff::tz::TimeZone) -> i32 {
    let Ok(ts) = jiff::Timestamp::from_millisecond(ms) else {
        return 0;
    };
    let date = ts.to_zoned(tz.clone()).date();
    jiff::civil::date(1970, 1, 1)
        .until((jiff::Unit::Day, date))
        .map(|s| s.get_days())
        .unwrap_or(0)
}

fn kind_of(event: &DeviceEvent) -> &'static str {
    match event {
        DeviceEvent::OrderCreated(_) => "sale",
        DeviceEvent::OrderRefunded(_) => "refund",
        DeviceEvent::LoyaltyRedeemed(_) => "loyalty",
        DeviceEvent::StoreDayClosed(_) => "day_close",
        _ => "other",
    }
}

fn business_date_of(event: &DeviceEvent) -> i32 {
    match event {
        DeviceEvent::OrderCreated(e) => e.business_date,
        DeviceEvent::OrderRefunded(e) => e.business_date,
        DeviceEvent::LoyaltyRedeemed(e) => e.business_date,
        DeviceEvent::StoreDayClosed(e) => e.business_date,
        _ => -1,
    }
}

/// Books one admitted input (pure given the chart and the stores): the ledger row, and the
/// refusal to dead-letter when it cannot be booked.
pub fn book(
    input: &Input,
    topic: &str,
    partition: i32,
    offset: i64,
    chart: &Chart,
    stores: &Stores,
) -> Option<(Booked, Option<Refusal>)> {
    let (event_id, store_id, device_id, seq, kind) = match input {
        Input::Event(e) => (
            e.event_id().to_string(),
            e.store_id().to_string(),
            e.device_id().to_string(),
            e.seq(),
            kind_of(e),
        ),
        Input::Compensation(c) => (
            c.compensation_id.clone(),
            c.store_id.clone(),
            String::new(),
            -1,
            "compensation",
        ),
        Input::Poison { .. } => return None,
    };
    let mut booked = Booked {
        event_id,
        store_id: store_id.clone(),
        device_id,
        seq,
        business_date: -1,
        kind,
        order_ref: String::new(),
        currency: String::new(),
        refused: None,
        topic: topic.to_string(),
        partition,
        offset,
        lines: Vec::new(),
        close: None,
    };
    let Some(store) = stores.get(&store_id) else {
        if let Input::Event(e) = input {
            booked.business_date = business_date_of(e);
        }
        let refusal = Refusal {
            reason: "unknown_store",
            detail: format!("store {store_id} is not in the store master data"),
        };
        booked.refused = Some(refusal.reason);
        return Some((booked, Some(refusal)));
    };
    booked.currency = store.currency.clone();
    let posted: Result<Posting, Refusal> = match input {
        Input::Event(e) => {
            booked.business_date = business_date_of(e);
            match &**e {
                DeviceEvent::OrderCreated(o) => booked.order_ref = o.order_id.clone(),
                DeviceEvent::OrderRefunded(r) => booked.order_ref = r.order_id.clone(),
                _ => {}
            }
            post_event(e, store, chart)
        }
        Input::Compensation(c) => {
            booked.business_date = local_date(c.effective_at, &store.tz);
            post_compensation(c, booked.business_date, store, chart)
        }
        Input::Poison { .. } => return None,
    };
    match posted {
        Ok(p) => {
            booked.lines = p.lines;
            if let Input::Event(e) = input
                && let DeviceEvent::StoreDayClosed(c) = &**e
            {
                booked.close = Some(CloseFigures {
                    event_id: c.event_id.clone(),
                    seq: c.seq,
                    first_seq: c.first_seq,
                    last_seq: c.last_seq,
                    figures: Figures::declared(c),
                });
            }
            Some((booked, None))
        }
        Err(r) => {
            booked.refused = Some(r.reason);
            Some((booked, Some(r)))
        }
    }
}

impl Processor {
    /// The batch loop; returns when the token is cancelled (after finishing the batch in hand) or
    /// on a fatal error.
    pub async fn run(mut self) -> Result<(), Error> {
        let linger = Duration::from_millis(self.cfg.batch.linger_ms);
        let token = self.token.clone();
        while let Some(batch) = self
            .consumer
            .next_batch(&token, self.cfg.batch.max_events, linger)
            .await
        {
            if !self.process(batch).await? {
                break;
            }
        }
        self.consumer.commit_on_shutdown();
        kafka::flush(self.dead.producer(), Duration::from_secs(5));
        Ok(())
    }

    /// Processes one batch; `false` when told to stop before it was committed (re-read later).
    async fn process(&self, msgs: Vec<OwnedMessage>) -> Result<bool, Error> {
        m::events_in(msgs.len());
        let mut next: BTreeMap<(String, i32), i64> = BTreeMap::new();
        let mut items = Vec::with_capacity(msgs.len());
        for msg in msgs {
            let e = next
                .entry((msg.topic().to_string(), msg.partition()))
                .or_insert(0);
            *e = (*e).max(msg.offset() + 1);
            let mut backoff = Backoff::new(Duration::from_millis(200));
            let input = loop {
                match decode(&self.registry, &msg).await {
                    Ok(i) => break i,
                    Err(e) if e.class() == ErrorClass::Retryable => {
                        tracing::warn!(error = %e, "cannot decode yet; retrying");
                        if !backoff.wait(&self.token).await {
                            return Ok(false);
                        }
                    }
                    Err(e) => return Err(e.into()),
                }
            };
            items.push(Item { msg, input });
        }
        let ids: Vec<&str> = items.iter().filter_map(|i| i.input.id()).collect();
        let Some(known) = self.retrying("gate", || self.db.known(&ids)).await? else {
            return Ok(false);
        };
        m::duplicates(ids.iter().filter(|id| known.contains(**id)).count());
        let mut seen: HashSet<&str> = HashSet::new();
        let mut booked = Vec::new();
        let mut refusals: Vec<(&Item, Refusal)> = Vec::new();
        for item in &items {
            if let Input::Poison { reason, detail } = &item.input {
                refusals.push((
                    item,
                    Refusal {
                        reason,
                        detail: detail.clone(),
                    },
                ));
                continue;
            }
            let Some(id) = item.input.id() else { continue };
            if known.contains(id) || !seen.insert(id) {
                continue;
            }
            if let Some((b, refusal)) = book(
                &item.input,
                item.msg.topic(),
                item.msg.partition(),
                item.msg.offset(),
                &self.chart,
                &self.stores,
            ) {
                if let Some(r) = refusal {
                    refusals.push((item, r));
                }
                booked.push(b);
            }
        }
        for (item, refusal) in &refusals {
            self.dead_letter(item, refusal).await?;
        }
        let started = Instant::now();
        let now = clock::now_ms();
        let Some(applied) = self
            .retrying("batch", || self.db.apply(&booked, &next, now))
            .await?
        else {
            return Ok(false);
        };
        m::batch("committed", started.elapsed().as_secs_f64());
        m::lines(applied.lines, applied.late_lines);
        let mut kinds: BTreeMap<&'static str, u64> = BTreeMap::new();
        for b in &booked {
            *kinds.entry(b.kind).or_default() += 1;
        }
        for (k, n) in kinds {
            m::booked(k, n);
        }
        let mut offsets = kafka::BatchOffsets::new();
        for ((t, p), o) in &next {
            offsets.done(t, *p, o - 1);
        }
        self.consumer.store_offsets(&offsets);
        Ok(true)
    }

    /// Runs a database step, waiting out an unavailable database (readiness down meanwhile).
    /// `None` when told to stop while waiting.
    async fn retrying<T, F, Fut>(
        &self,
        operation: &'static str,
        mut f: F,
    ) -> Result<Option<T>, Error>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T, crate::db::DbError>>,
    {
        let mut backoff = Backoff::new(Duration::from_millis(200));
        loop {
            match f().await {
                Ok(v) => {
                    self.health.ready(DATABASE_CHECK, self.db.backend().name());
                    return Ok(Some(v));
                }
                Err(e) if e.class() == ErrorClass::Retryable => {
                    m::db_retry(operation);
                    self.health
                        .not_ready(DATABASE_CHECK, format!("unavailable ({operation}): {e}"));
                    tracing::warn!(error = %e, operation, "database unavailable; retrying");
                    if !backoff.wait(&self.token).await {
                        return Ok(None);
                    }
                }
                Err(e) => {
                    self.health.broken(DATABASE_CHECK, e.to_string());
                    return Err(e.into());
                }
            }
        }
    }

    async fn dead_letter(&self, item: &Item, refusal: &Refusal) -> Result<(), Error> {
        let msg = &item.msg;
        let rejected = Rejected::new(refusal.reason, refusal.detail.clone());
        let rejected = match &item.input {
            Input::Event(e) => {
                rejected.with_identity(e.store_id(), Some(e.device_id()), Some(e.event_id()))
            }
            Input::Compensation(c) => {
                rejected.with_identity(&c.store_id, None, Some(&c.compensation_id))
            }
            Input::Poison { .. } => rejected,
        };
        let record = self.dead.for_message(msg, &rejected, clock::now_ms());
        self.dead.publish(&record, &self.token).await?;
        Ok(())
    }
}
