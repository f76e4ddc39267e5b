//! What the pipeline produced, read from where it lives: the Kafka topics (deduplicated events,
//! conflicts, gaps, dead letters, device health), the projection's database, and the documents the
//! bridge's downlink left retained on MQTT. Read-only. A read that fails is an error, never "nothing
//! there": an oracle that cannot see an output must not pass it.

use std::collections::BTreeMap;
use std::time::Duration;

use rdkafka::Message;
use tillstream_contracts::{
    ConflictDetected, ConflictKind, DeadLetter, EventKind, GapStatus, Registry, SequenceGap, codec,
};
use tillstream_runtime::kafka::{self, KafkaConfig, headers};

use super::{CatalogObserved, DbObserved, KafkaObserved, OracleError, Topics};
use crate::truth::{Gap, Truth};

/// How the oracle reaches the MQTT broker (an operator account that may read every store's catalog).
#[derive(Debug, Clone)]
pub struct MqttAccess {
    pub host: String,
    pub port: u16,
    pub user: String,
    pub password: String,
    /// TLS: the PKI folder holding `clients/<user>.crt|key`; `None`: plaintext with the password.
    pub tls_dir: Option<std::path::PathBuf>,
}

/// Subscribes to every store's price-list topic and collects the retained documents (and any that
/// arrive meanwhile) until they match `expected` and the topic is quiet for 500 ms, or `wait` ends.
pub async fn observe_catalog(
    mqtt: &MqttAccess,
    expected: &BTreeMap<String, String>,
    wait: Duration,
) -> Result<CatalogObserved, OracleError> {
    use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
    let mut opts = MqttOptions::new(
        format!("tillstream-oracle-{}", std::process::id()),
        mqtt.host.clone(),
        mqtt.port,
    );
    let transport = tillstream_runtime::mqtt::transport_in(mqtt.tls_dir.as_deref(), &mqtt.user)
        .map_err(|e| OracleError::Mqtt(e.to_string()))?;
    opts.set_transport(transport)
        .set_credentials(mqtt.user.clone(), mqtt.password.clone())
        .set_clean_session(true)
        .set_keep_alive(Duration::from_secs(15));
    let (client, mut eventloop) = AsyncClient::new(opts, 64);
    let mut seen = CatalogObserved::default();
    let deadline = tokio::time::Instant::now() + wait;
    let mut subscribed = false;
    loop {
        let matched = seen.price_lists == *expected;
        let quiet = if matched {
            Duration::from_millis(500)
        } else {
            Duration::from_secs(5)
        };
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let ev = match tokio::time::timeout(quiet.min(left), eventloop.poll()).await {
            Err(_) if matched || left.is_zero() => break,
            Err(_) => continue,
            Ok(ev) => ev,
        };
        match ev {
            Ok(Event::Incoming(Packet::ConnAck(_))) if !subscribed => {
                client
                    .subscribe("store/+/catalog/price-list", QoS::AtLeastOnce)
                    .await
                    .map_err(|e| OracleError::Mqtt(e.to_string()))?;
                subscribed = true;
            }
            Ok(Event::Incoming(Packet::Publish(p))) => {
                let store = p.topic.split('/').nth(1).unwrap_or_default().to_string();
                let doc: serde_json::Value = serde_json::from_slice(&p.payload).unwrap_or_default();
                match (doc["store_id"].as_str(), doc["price_list_id"].as_str()) {
                    (Some(s), Some(id)) if s == store => {
                        seen.price_lists.insert(store, id.to_string());
                    }
                    _ => seen.misplaced.push(format!(
                        "{}: {}",
                        p.topic,
                        String::from_utf8_lossy(&p.payload)
                    )),
                }
            }
            Ok(_) => {}
            Err(e) => {
                if tokio::time::Instant::now() >= deadline {
                    return Err(OracleError::Mqtt(e.to_string()));
                }
                subscribed = false;
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    }
    let _ = client.disconnect().await;
    Ok(seen)
}

pub(super) async fn read(
    kafka_cfg: &KafkaConfig,
    topic: &str,
) -> Result<Vec<rdkafka::message::OwnedMessage>, OracleError> {
    let (cfg, t) = (kafka_cfg.clone(), topic.to_string());
    tokio::task::spawn_blocking(move || {
        kafka::read_topic_to_end(&cfg, &t, Duration::from_secs(300))
    })
    .await
    .map_err(|e| OracleError::Decode {
        topic: topic.to_string(),
        detail: e.to_string(),
    })?
    .map_err(OracleError::from)
}

pub(super) async fn decode<T: serde::de::DeserializeOwned>(
    registry: &Registry,
    topic: &str,
    payload: Option<&[u8]>,
) -> Result<T, OracleError> {
    let err = |detail: String| OracleError::Decode {
        topic: topic.to_string(),
        detail,
    };
    let (id, datum) =
        codec::unframe(payload.unwrap_or_default()).map_err(|e| err(e.to_string()))?;
    let writer = registry
        .writer_schema(id)
        .await
        .map_err(|e| err(e.to_string()))?;
    writer.decode(datum).map_err(|e| err(e.to_string()))
}

/// Reads the pipeline's Kafka outputs.
pub async fn observe_kafka(
    kafka_cfg: &KafkaConfig,
    registry: &Registry,
    topics: &Topics,
) -> Result<KafkaObserved, OracleError> {
    let mut obs = KafkaObserved::default();
    for m in read(kafka_cfg, &topics.deduped).await? {
        let id = event_id(registry, &topics.deduped, &m).await?;
        *obs.deduped.entry(id).or_default() += 1;
    }
    for m in read(kafka_cfg, &topics.conflicts).await? {
        let h = kafka::header_map(&m);
        if h.get(headers::EVENT_TYPE).map(String::as_str)
            != Some(EventKind::ConflictDetected.name())
        {
            continue;
        }
        let c: ConflictDetected = decode(registry, &topics.conflicts, m.payload()).await?;
        if c.kind == ConflictKind::IdentityCollision {
            obs.collisions.extend(c.event_ids.iter().cloned());
        }
    }
    // Replay gap records in order per partition: the last status of each gap wins.
    let mut gaps: BTreeMap<String, (SequenceGap, i64)> = BTreeMap::new();
    let mut msgs = read(kafka_cfg, &topics.gaps).await?;
    msgs.sort_by_key(|m| (m.partition(), m.offset()));
    for m in msgs {
        let g: SequenceGap = decode(registry, &topics.gaps, m.payload()).await?;
        let key = g.gap_id.clone();
        let order = m.offset();
        gaps.insert(key, (g, order));
    }
    for (g, _) in gaps.into_values() {
        let open = matches!(g.status, GapStatus::Opened | GapStatus::PartiallyFilled)
            && g.still_missing > 0;
        let gap = Gap {
            device_id: g.device_id,
            store_id: g.store_id,
            from_seq: g.from_seq,
            to_seq: g.to_seq,
        };
        if open {
            obs.open_gaps.insert(gap);
        } else if g.status == GapStatus::Filled {
            obs.closed_gaps.insert(gap);
        }
    }
    for m in read(kafka_cfg, &topics.dead_letter).await? {
        let d: DeadLetter = decode(registry, &topics.dead_letter, m.payload()).await?;
        *obs.dead_letters.entry(d.reason).or_default() += 1;
    }
    for m in read(kafka_cfg, &topics.health).await? {
        obs.health_events
            .insert(event_id(registry, &topics.health, &m).await?);
    }
    Ok(obs)
}

/// A device event's id: from its header when the bridge wrote descriptive headers, else decoded
/// from the value (the default `kafka.record_headers = "payload_only"` writes none).
async fn event_id(
    registry: &Registry,
    topic: &str,
    m: &rdkafka::message::OwnedMessage,
) -> Result<String, OracleError> {
    if let Some(id) = kafka::header_map(m).remove(headers::EVENT_ID) {
        return Ok(id);
    }
    let bad = |detail: String| OracleError::Decode {
        topic: topic.to_string(),
        detail: format!("record at offset {}: {detail}", m.offset()),
    };
    let (w, datum) = tillstream_runtime::framed::writer_of(registry, m.payload())
        .await
        .map_err(|e| bad(e.to_string()))?
        .map_err(|u| bad(format!("{}: {}", u.reason, u.detail)))?;
    Ok(tillstream_contracts::DeviceEvent::decode(&w, datum)
        .map_err(|e| bad(e.to_string()))?
        .event_id()
        .to_string())
}

/// Queries the projection's database (tables of `services/inventory-projection`).
pub async fn observe_db(url: &str, queries: &DbQueries) -> Result<DbObserved, OracleError> {
    use sqlx::Row;
    sqlx::any::install_default_drivers();
    let pool = sqlx::any::AnyPoolOptions::new()
        .max_connections(1)
        .connect(url)
        .await?;
    let mut obs = DbObserved::default();
    for row in sqlx::query(sqlx::AssertSqlSafe(queries.stock.clone()))
        .fetch_all(&pool)
        .await?
    {
        let store: String = row.try_get(0)?;
        let sku: String = row.try_get(1)?;
        let qty: i64 = row.try_get(2)?;
        obs.stock.entry(store).or_default().insert(sku, qty);
    }
    for row in sqlx::query(sqlx::AssertSqlSafe(queries.sku_sales.clone()))
        .fetch_all(&pool)
        .await?
    {
        let store: String = row.try_get(0)?;
        let sku: String = row.try_get(1)?;
        let qty: i64 = row.try_get(2)?;
        let net: i64 = row.try_get(3)?;
        obs.sku_sales
            .entry(store)
            .or_default()
            .insert(sku, (qty, net));
    }
    for row in sqlx::query(sqlx::AssertSqlSafe(queries.hourly_sales.clone()))
        .fetch_all(&pool)
        .await?
    {
        let store: String = row.try_get(0)?;
        let sku: String = row.try_get(1)?;
        let hour: i64 = row.try_get(2)?;
        let qty: i64 = row.try_get(3)?;
        let net: i64 = row.try_get(4)?;
        obs.hourly_sales
            .entry(store)
            .or_default()
            .insert(crate::truth::hour_key(&sku, hour), (qty, net));
    }
    for row in sqlx::query(sqlx::AssertSqlSafe(queries.store_days.clone()))
        .fetch_all(&pool)
        .await?
    {
        let store: String = row.try_get(0)?;
        let date: i64 = row.try_get(1)?;
        let orders: i64 = row.try_get(2)?;
        let refunds: i64 = row.try_get(3)?;
        obs.store_days
            .entry(store)
            .or_default()
            .insert(date.to_string(), (orders as u64, refunds as u64));
    }
    let row = sqlx::query(sqlx::AssertSqlSafe(queries.ledger_lines.clone()))
        .fetch_one(&pool)
        .await?;
    obs.ledger_lines = row.try_get::<i64, _>(0)? as u64;
    pool.close().await;
    Ok(obs)
}

/// The SQL the oracle runs against the projection (kept here, next to the comparison).
#[derive(Debug, Clone)]
pub struct DbQueries {
    /// (store_id, sku, on_hand)
    pub stock: String,
    /// (store_id, sku, qty, net_minor) summed over hours
    pub sku_sales: String,
    /// (store_id, sku, hour_start, qty, net_minor) per hour
    pub hourly_sales: String,
    /// (store_id, business_date, orders, refunds)
    pub store_days: String,
    /// count of stock-movement ledger rows
    pub ledger_lines: String,
}

impl Default for DbQueries {
    fn default() -> Self {
        DbQueries {
            stock: "SELECT store_id, sku, on_hand FROM stock_on_hand".into(),
            sku_sales:
                "SELECT store_id, sku, CAST(SUM(qty_sold) AS BIGINT), CAST(SUM(net_minor) AS BIGINT) \
                        FROM sales_hourly GROUP BY store_id, sku"
                    .into(),
            hourly_sales:
                "SELECT store_id, sku, CAST(hour_start AS BIGINT), CAST(SUM(qty_sold) AS BIGINT), \
                        CAST(SUM(net_minor) AS BIGINT) FROM sales_hourly GROUP BY store_id, sku, hour_start"
                    .into(),
            store_days: "SELECT store_id, CAST(business_date AS BIGINT), CAST(orders AS BIGINT), \
                         CAST(refunds AS BIGINT) FROM store_day_activity"
                .into(),
            ledger_lines: "SELECT CAST(COUNT(*) AS BIGINT) FROM stock_movement".into(),
        }
    }
}

/// Progress of the pipeline, for waiting until it has drained.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Progress {
    /// Records the bridge wrote to the raw topic (sum over partitions; duplicates included).
    pub raw: i64,
    /// Records on the deduplicated topic (sum over partitions).
    pub deduped: i64,
    /// Records of the deduplicated topic below the projection's stored offsets (what it has read
    /// and applied or skipped).
    pub projected: i64,
    /// Records on the dead-letter topic.
    pub dead_letters: i64,
    /// Partitions of the deduplicated topic whose projection offset equals the high watermark.
    pub projected_partitions: usize,
    /// Partitions of the deduplicated topic with records.
    pub partitions: usize,
}

impl Progress {
    /// Whether every stage holds what `truth` says was published.
    pub fn complete(&self, truth: &Truth) -> bool {
        self.deduped >= truth.store_event_ids.len() as i64
            && self.dead_letters >= truth.dead_letters.values().sum::<u64>() as i64
            && self.projected_partitions == self.partitions
    }

    /// The first stage that does not yet hold what `truth` says it should, in pipeline order.
    pub fn behind(&self, truth: &Truth) -> String {
        let unique = truth.store_event_ids.len() as i64;
        let dead = truth.dead_letters.values().sum::<u64>() as i64;
        if self.raw < unique {
            format!(
                "the store bridge (or MQTT before it): the raw topic holds {} records, fewer than the {unique} unique store events published",
                self.raw
            )
        } else if self.deduped < unique {
            format!(
                "the dedup: {} of {unique} unique events deduplicated",
                self.deduped
            )
        } else if self.projected_partitions < self.partitions {
            format!(
                "the inventory projection: {} of {} records applied, {} of {} partitions at their end",
                self.projected, self.deduped, self.projected_partitions, self.partitions
            )
        } else if self.dead_letters < dead {
            format!(
                "dead letters: {} of {dead} expected on the dead-letter topic",
                self.dead_letters
            )
        } else {
            "nothing: every stage holds what was published".into()
        }
    }
}

pub(super) fn watermarks(
    kafka_cfg: &KafkaConfig,
    topic: &str,
) -> Result<Vec<(i32, i64, i64)>, OracleError> {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    let consumer: BaseConsumer = kafka_cfg
        .client_config("tillstream-oracle")
        .create()
        .map_err(kafka::ReadError::from)?;
    let marks = kafka::watermarks(consumer.client(), &[topic], Duration::from_secs(10))
        .map_err(kafka::ReadError::from)?;
    Ok(marks
        .into_iter()
        .map(|((_, p), (lo, hi))| (p, lo, hi))
        .collect())
}

/// Reads the pipeline's progress (cheap: watermarks and the projection's offsets table).
pub async fn progress(
    kafka_cfg: &KafkaConfig,
    topics: &Topics,
    db_url: Option<&str>,
) -> Result<Progress, OracleError> {
    let (cfg, t, dl, raw) = (
        kafka_cfg.clone(),
        topics.deduped.clone(),
        topics.dead_letter.clone(),
        topics.raw.clone(),
    );
    let (marks, dl_marks, raw_marks) = tokio::task::spawn_blocking(move || {
        Ok::<_, OracleError>((
            watermarks(&cfg, &t)?,
            watermarks(&cfg, &dl)?,
            watermarks(&cfg, &raw)?,
        ))
    })
    .await
    .map_err(|e| OracleError::Decode {
        topic: topics.deduped.clone(),
        detail: e.to_string(),
    })??;
    let mut p = Progress {
        raw: raw_marks.iter().map(|(_, lo, hi)| hi - lo).sum(),
        deduped: marks.iter().map(|(_, lo, hi)| hi - lo).sum(),
        dead_letters: dl_marks.iter().map(|(_, lo, hi)| hi - lo).sum(),
        partitions: marks.iter().filter(|(_, _, hi)| *hi > 0).count(),
        ..Default::default()
    };
    if let Some(url) = db_url {
        use sqlx::Row;
        sqlx::any::install_default_drivers();
        let pool = sqlx::any::AnyPoolOptions::new()
            .max_connections(1)
            .connect(url)
            .await?;
        let rows = sqlx::query(
            "SELECT CAST(kafka_partition AS BIGINT), CAST(next_offset AS BIGINT) FROM projection_offsets WHERE topic = $1",
        )
        .bind(topics.deduped.clone())
        .fetch_all(&pool)
        .await?;
        let done: BTreeMap<i64, i64> = rows
            .iter()
            .filter_map(|r| Some((r.try_get::<i64, _>(0).ok()?, r.try_get::<i64, _>(1).ok()?)))
            .collect();
        p.projected_partitions = marks
            .iter()
            .filter(|(part, _, hi)| *hi > 0 && done.get(&i64::from(*part)) == Some(hi))
            .count();
        p.projected = marks
            .iter()
            .map(|(part, lo, _)| {
                done.get(&i64::from(*part))
                    .map_or(0, |next| (next - lo).max(0))
            })
            .sum();
        pool.close().await;
    } else {
        p.projected_partitions = p.partitions;
        p.projected = p.deduped;
    }
    Ok(p)
}

/// How long [`wait_drained`] waits (modes as types).
#[derive(Debug, Clone, Copy)]
pub enum DrainWait {
    /// At most this long (tests and benches, whose runs are small and bounded).
    Fixed(Duration),
    /// As long as the pipeline keeps moving, printing a progress line every `report_every`: the
    /// wait ends early when no stage moved for `stall`, and never lasts more than `cap`. How long
    /// a run takes then follows from its size and the drain rate it shows, not from one constant.
    WhileMoving {
        stall: Duration,
        cap: Duration,
        report_every: Duration,
    },
}

/// Waits until the pipeline has caught up with everything `truth` says was published: the
/// deduplicated topic holds at least every unique event, the dead letters are all there, the
/// projection's offsets equal the topic's end, and nothing moved for `settle`. `Err` carries the
/// last progress seen (its [`Progress::behind`] names the stage that is behind).
pub async fn wait_drained(
    kafka_cfg: &KafkaConfig,
    topics: &Topics,
    db_url: Option<&str>,
    truth: &Truth,
    wait: DrainWait,
    settle: Duration,
) -> Result<Progress, Progress> {
    let started = tokio::time::Instant::now();
    let (cap, stall, report_every) = match wait {
        DrainWait::Fixed(t) => (t, None, None),
        DrainWait::WhileMoving {
            stall,
            cap,
            report_every,
        } => (cap, Some(stall), Some(report_every)),
    };
    let mut last = Progress::default();
    let mut stable_since = started;
    let mut report = ProgressReport::new(started);
    loop {
        let now = tokio::time::Instant::now();
        if let Ok(p) = progress(kafka_cfg, topics, db_url).await {
            if p != last {
                last = p.clone();
                stable_since = now;
            } else if p.complete(truth) && now - stable_since >= settle {
                return Ok(p);
            }
            if let Some(every) = report_every {
                report.maybe_print(&p, truth, now, every);
            }
        }
        let stalled = stall.is_some_and(|s| now - stable_since >= s && !last.complete(truth));
        if now - started > cap || stalled {
            return Err(last);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Progress lines for people watching a long drain: each stage's count and its rate since the
/// previous line.
struct ProgressReport {
    last_at: tokio::time::Instant,
    last: Progress,
}

impl ProgressReport {
    fn new(started: tokio::time::Instant) -> ProgressReport {
        ProgressReport {
            last_at: started,
            last: Progress::default(),
        }
    }

    fn maybe_print(
        &mut self,
        p: &Progress,
        truth: &Truth,
        now: tokio::time::Instant,
        every: Duration,
    ) {
        let secs = (now - self.last_at).as_secs_f64();
        if secs < every.as_secs_f64() {
            return;
        }
        let rate = |now: i64, before: i64| ((now - before) as f64 / secs).max(0.0);
        let unique = truth.store_event_ids.len() as i64;
        println!(
            "  progress: raw {} ({:.0}/s) | deduplicated {}/{unique} ({:.0}/s) | projected {} ({:.0}/s) | dead letters {} | behind: {}",
            p.raw,
            rate(p.raw, self.last.raw),
            p.deduped,
            rate(p.deduped, self.last.deduped),
            p.projected,
            rate(p.projected, self.last.projected),
            p.dead_letters,
            p.behind(truth)
        );
        self.last_at = now;
        self.last = p.clone();
    }
}
