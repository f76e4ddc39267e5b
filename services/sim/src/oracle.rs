//! The correctness oracle: reads what the pipeline produced (the deduplicated topic, conflicts, gaps,
//! dead letters from Kafka; stock and sales from the projection's database; the price lists the
//! bridge's downlink left retained on each store's MQTT catalog topic) and compares it with the
//! ground truth of a simulated run. Every difference is listed; nothing is sampled. Read-only.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use rdkafka::Message;
use serde::Serialize;
use tillstream_contracts::{
    ConflictDetected, ConflictKind, DeadLetter, EventKind, GapStatus, Registry, SequenceGap, codec,
};
use tillstream_runtime::kafka::{self, KafkaConfig, headers};

use crate::truth::{Gap, Truth};

/// One line of the oracle's table.
#[derive(Debug, Clone, Serialize)]
pub struct CheckResult {
    pub name: String,
    pub expected: String,
    pub observed: String,
    pub differences: Vec<String>,
    /// False when the pipeline was not asked to produce this output (e.g. no database given).
    pub applicable: bool,
}

impl CheckResult {
    /// A check the pipeline was asked to pass.
    fn checked(name: &str, expected: String, observed: String, differences: Vec<String>) -> Self {
        CheckResult {
            name: name.into(),
            expected,
            observed,
            differences,
            applicable: true,
        }
    }

    pub fn passed(&self) -> bool {
        !self.applicable || self.differences.is_empty()
    }
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Report {
    pub checks: Vec<CheckResult>,
}

impl Report {
    pub fn passed(&self) -> bool {
        self.checks.iter().all(CheckResult::passed)
    }

    pub fn differences(&self) -> usize {
        self.checks
            .iter()
            .filter(|c| c.applicable)
            .map(|c| c.differences.len())
            .sum()
    }

    /// The pass/fail table, then every difference.
    pub fn render(&self, max_listed: usize) -> String {
        let mut s = format!(
            "{:<28} {:>14} {:>14}  {}\n",
            "check", "expected", "observed", "result"
        );
        for c in &self.checks {
            let result = if !c.applicable {
                "n/a".to_string()
            } else if c.differences.is_empty() {
                "PASS".to_string()
            } else {
                format!("FAIL ({} differences)", c.differences.len())
            };
            s.push_str(&format!(
                "{:<28} {:>14} {:>14}  {result}\n",
                c.name, c.expected, c.observed
            ));
        }
        for c in self
            .checks
            .iter()
            .filter(|c| c.applicable && !c.differences.is_empty())
        {
            s.push_str(&format!("\n{}:\n", c.name));
            for d in c.differences.iter().take(max_listed) {
                s.push_str(&format!("  - {d}\n"));
            }
            if c.differences.len() > max_listed {
                s.push_str(&format!(
                    "  ... and {} more\n",
                    c.differences.len() - max_listed
                ));
            }
        }
        s.push_str(&format!(
            "\noracle: {} ({} differences)\n",
            if self.passed() { "PASS" } else { "FAIL" },
            self.differences()
        ));
        s
    }
}

/// What the pipeline's Kafka outputs hold.
#[derive(Debug, Clone, Default)]
pub struct KafkaObserved {
    /// Event id -> copies on the deduplicated topic.
    pub deduped: BTreeMap<String, u64>,
    pub collisions: BTreeSet<String>,
    /// Gaps still open at the end.
    pub open_gaps: BTreeSet<Gap>,
    pub dead_letters: BTreeMap<String, u64>,
}

/// What the projection's database holds.
#[derive(Debug, Clone, Default)]
pub struct DbObserved {
    pub stock: BTreeMap<String, BTreeMap<String, i64>>,
    pub sku_sales: BTreeMap<String, BTreeMap<String, (i64, i64)>>,
    pub ledger_lines: u64,
}

/// What the stores' MQTT catalog topics hold (retained): store -> `price_list_id` of the document on
/// `store/{store}/catalog/price-list`.
#[derive(Debug, Clone, Default)]
pub struct CatalogObserved {
    pub price_lists: BTreeMap<String, String>,
    /// Documents on one store's topic that name another store (or do not parse).
    pub misplaced: Vec<String>,
}

/// How the oracle reaches the MQTT broker (an operator account that may read every store's catalog).
#[derive(Debug, Clone)]
pub struct MqttAccess {
    pub host: String,
    pub port: u16,
    pub user: String,
    pub password: String,
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
    opts.set_credentials(mqtt.user.clone(), mqtt.password.clone())
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

/// Topics the oracle reads.
#[derive(Debug, Clone)]
pub struct Topics {
    pub deduped: String,
    pub conflicts: String,
    pub gaps: String,
    pub dead_letter: String,
    /// Cloud -> store documents (the simulated pricing service writes; the bridge's downlink reads).
    pub downlink: String,
}

impl Default for Topics {
    fn default() -> Self {
        Topics {
            deduped: "tillstream.store-events".into(),
            conflicts: "tillstream.conflicts".into(),
            gaps: "tillstream.sequence-gaps".into(),
            dead_letter: "tillstream.dead-letter".into(),
            downlink: "tillstream.catalog.downlink".into(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum OracleError {
    #[error(transparent)]
    Read(#[from] kafka::ReadError),
    #[error("decoding {topic}: {detail}")]
    Decode { topic: String, detail: String },
    #[error("database: {0}")]
    Db(#[from] sqlx::Error),
    #[error("mqtt: {0}")]
    Mqtt(String),
}

async fn read(
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

async fn decode<T: serde::de::DeserializeOwned>(
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
        let id = match kafka::header_map(&m).get(headers::EVENT_ID) {
            Some(id) => id.clone(),
            None => {
                let (sid, datum) =
                    codec::unframe(m.payload().unwrap_or_default()).map_err(|e| {
                        OracleError::Decode {
                            topic: topics.deduped.clone(),
                            detail: e.to_string(),
                        }
                    })?;
                let w = registry
                    .writer_schema(sid)
                    .await
                    .map_err(|e| OracleError::Decode {
                        topic: topics.deduped.clone(),
                        detail: e.to_string(),
                    })?;
                tillstream_contracts::DeviceEvent::decode(&w, datum)
                    .map_err(|e| OracleError::Decode {
                        topic: topics.deduped.clone(),
                        detail: e.to_string(),
                    })?
                    .event_id()
                    .to_string()
            }
        };
        *obs.deduped.entry(id).or_default() += 1;
    }
    for m in read(kafka_cfg, &topics.conflicts).await.unwrap_or_default() {
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
    let mut msgs = read(kafka_cfg, &topics.gaps).await.unwrap_or_default();
    msgs.sort_by_key(|m| (m.partition(), m.offset()));
    for m in msgs {
        let g: SequenceGap = decode(registry, &topics.gaps, m.payload()).await?;
        let key = g.gap_id.clone();
        let order = m.offset();
        gaps.insert(key, (g, order));
    }
    for (g, _) in gaps.into_values() {
        if matches!(g.status, GapStatus::Opened | GapStatus::PartiallyFilled) && g.still_missing > 0
        {
            obs.open_gaps.insert(Gap {
                device_id: g.device_id,
                store_id: g.store_id,
                from_seq: g.from_seq,
                to_seq: g.to_seq,
            });
        }
    }
    for m in read(kafka_cfg, &topics.dead_letter)
        .await
        .unwrap_or_default()
    {
        let d: DeadLetter = decode(registry, &topics.dead_letter, m.payload()).await?;
        *obs.dead_letters.entry(d.reason).or_default() += 1;
    }
    Ok(obs)
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
            ledger_lines: "SELECT CAST(COUNT(*) AS BIGINT) FROM stock_movement".into(),
        }
    }
}

/// Progress of the pipeline, for waiting until it has drained.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Progress {
    /// Records on the deduplicated topic (sum over partitions).
    pub deduped: i64,
    /// Records on the dead-letter topic.
    pub dead_letters: i64,
    /// Partitions of the deduplicated topic whose projection offset equals the high watermark.
    pub projected_partitions: usize,
    /// Partitions of the deduplicated topic with records.
    pub partitions: usize,
}

fn watermarks(kafka_cfg: &KafkaConfig, topic: &str) -> Result<Vec<(i32, i64, i64)>, OracleError> {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    let consumer: BaseConsumer = kafka_cfg
        .client_config("tillstream-oracle")
        .create()
        .map_err(kafka::ReadError::from)?;
    let md = consumer
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .map_err(kafka::ReadError::from)?;
    let mut out = Vec::new();
    for t in md.topics().iter().filter(|t| t.name() == topic) {
        for p in t.partitions() {
            let (lo, hi) = consumer
                .fetch_watermarks(topic, p.id(), Duration::from_secs(10))
                .map_err(kafka::ReadError::from)?;
            out.push((p.id(), lo, hi));
        }
    }
    Ok(out)
}

/// Reads the pipeline's progress (cheap: watermarks and the projection's offsets table).
pub async fn progress(
    kafka_cfg: &KafkaConfig,
    topics: &Topics,
    db_url: Option<&str>,
) -> Result<Progress, OracleError> {
    let (cfg, t, dl) = (
        kafka_cfg.clone(),
        topics.deduped.clone(),
        topics.dead_letter.clone(),
    );
    let (marks, dl_marks) = tokio::task::spawn_blocking(move || {
        Ok::<_, OracleError>((watermarks(&cfg, &t)?, watermarks(&cfg, &dl)?))
    })
    .await
    .map_err(|e| OracleError::Decode {
        topic: topics.deduped.clone(),
        detail: e.to_string(),
    })??;
    let mut p = Progress {
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
        .await
        .unwrap_or_default();
        let done: BTreeMap<i64, i64> = rows
            .iter()
            .filter_map(|r| Some((r.try_get::<i64, _>(0).ok()?, r.try_get::<i64, _>(1).ok()?)))
            .collect();
        p.projected_partitions = marks
            .iter()
            .filter(|(part, _, hi)| *hi > 0 && done.get(&i64::from(*part)) == Some(hi))
            .count();
        pool.close().await;
    } else {
        p.projected_partitions = p.partitions;
    }
    Ok(p)
}

/// Waits until the pipeline has caught up with everything `truth` says was published: the
/// deduplicated topic holds at least every unique event, the dead letters are all there, the
/// projection's offsets equal the topic's end, and nothing moved for `settle`.
pub async fn wait_drained(
    kafka_cfg: &KafkaConfig,
    topics: &Topics,
    db_url: Option<&str>,
    truth: &Truth,
    timeout: Duration,
    settle: Duration,
) -> Result<Progress, Progress> {
    let deadline = tokio::time::Instant::now() + timeout;
    let mut last = Progress::default();
    let mut stable_since = tokio::time::Instant::now();
    loop {
        let now = tokio::time::Instant::now();
        if let Ok(p) = progress(kafka_cfg, topics, db_url).await {
            let complete = p.deduped >= truth.store_event_ids.len() as i64
                && p.dead_letters >= truth.dead_letters.values().sum::<u64>() as i64
                && p.projected_partitions == p.partitions;
            if p != last {
                last = p.clone();
                stable_since = now;
            } else if complete && now - stable_since >= settle {
                return Ok(p);
            }
        }
        if now > deadline {
            return Err(last);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

fn diff_maps<V: PartialEq + std::fmt::Debug>(
    what: &str,
    expected: &BTreeMap<String, BTreeMap<String, V>>,
    observed: &BTreeMap<String, BTreeMap<String, V>>,
    zero: impl Fn(&V) -> bool,
) -> Vec<String> {
    let mut out = Vec::new();
    let keys: BTreeSet<(&String, &String)> = expected
        .iter()
        .flat_map(|(s, m)| m.keys().map(move |k| (s, k)))
        .chain(
            observed
                .iter()
                .flat_map(|(s, m)| m.keys().map(move |k| (s, k))),
        )
        .collect();
    for (s, k) in keys {
        let e = expected.get(s).and_then(|m| m.get(k));
        let o = observed.get(s).and_then(|m| m.get(k));
        match (e, o) {
            (Some(e), Some(o)) if e == o => {}
            (Some(e), None) if zero(e) => {}
            (None, Some(o)) if zero(o) => {}
            _ => out.push(format!("{what} {s}/{k}: expected {e:?}, observed {o:?}")),
        }
    }
    out
}

/// What a correct at-least-once pipeline may still show, and why.
#[derive(Debug, Clone, Copy, Default)]
pub struct Allowances {
    /// Copies on the deduplicated topic beyond the first. A dedup instance killed between
    /// delivering a batch's outputs and recording it in its changelog re-emits that batch once
    /// restarted (its at-least-once window: at most one batch per partition per crash); a broker
    /// that fails an in-flight output set (after storing part of it) gets the set again. Every
    /// downstream sink is idempotent on the event id, so these copies have no effect; the projection
    /// checks below must still be exact.
    pub dedup_topic_duplicates: u64,
}

/// Everything the oracle observed; `None` = that output was not checked (reported `n/a`).
#[derive(Debug, Clone, Copy, Default)]
pub struct Observed<'a> {
    pub kafka: Option<&'a KafkaObserved>,
    pub db: Option<&'a DbObserved>,
    pub catalog: Option<&'a CatalogObserved>,
}

/// Compares everything observed with the truth (pure), allowing nothing.
pub fn compare(truth: &Truth, observed: Observed<'_>) -> Report {
    compare_with(truth, observed, Allowances::default())
}

/// Compares everything observed with the truth (pure).
pub fn compare_with(truth: &Truth, observed: Observed<'_>, allow: Allowances) -> Report {
    let Observed { kafka, db, catalog } = observed;
    let mut checks = Vec::new();
    let na = |name: &str| CheckResult {
        name: name.into(),
        expected: "-".into(),
        observed: "-".into(),
        differences: vec![],
        applicable: false,
    };
    match kafka {
        Some(k) => {
            let observed: BTreeSet<&String> = k.deduped.keys().collect();
            let mut diffs = Vec::new();
            for id in truth
                .store_event_ids
                .iter()
                .filter(|id| !observed.contains(id))
            {
                diffs.push(format!("missing event {id}"));
            }
            for id in observed
                .iter()
                .filter(|id| !truth.store_event_ids.contains(**id))
            {
                diffs.push(format!("unexpected event {id}"));
            }
            checks.push(CheckResult::checked(
                "events (deduplicated)",
                truth.store_event_ids.len().to_string(),
                k.deduped.len().to_string(),
                diffs,
            ));
            let extra: u64 = k.deduped.values().map(|n| n.saturating_sub(1)).sum();
            let dups: Vec<String> = if extra > allow.dedup_topic_duplicates {
                k.deduped
                    .iter()
                    .filter(|(_, n)| **n > 1)
                    .map(|(id, n)| format!("event {id} emitted {n} times"))
                    .collect()
            } else {
                Vec::new()
            };
            checks.push(CheckResult::checked(
                "duplicates on dedup topic",
                format!("<= {}", allow.dedup_topic_duplicates),
                extra.to_string(),
                dups,
            ));
            let mut diffs = Vec::new();
            for id in truth.collisions.difference(&k.collisions) {
                diffs.push(format!("collision of {id} not reported"));
            }
            for id in k.collisions.difference(&truth.collisions) {
                diffs.push(format!("collision of {id} reported but not constructed"));
            }
            checks.push(CheckResult::checked(
                "identity collisions",
                truth.collisions.len().to_string(),
                k.collisions.len().to_string(),
                diffs,
            ));
            let mut diffs = Vec::new();
            for g in truth.gaps.difference(&k.open_gaps) {
                diffs.push(format!(
                    "gap {}:{}..{} not reported open",
                    g.device_id, g.from_seq, g.to_seq
                ));
            }
            for g in k.open_gaps.difference(&truth.gaps) {
                diffs.push(format!(
                    "gap {}:{}..{} reported open but nothing is missing",
                    g.device_id, g.from_seq, g.to_seq
                ));
            }
            checks.push(CheckResult::checked(
                "open sequence gaps",
                truth.gaps.len().to_string(),
                k.open_gaps.len().to_string(),
                diffs,
            ));
            let mut diffs = Vec::new();
            let reasons: BTreeSet<&String> = truth
                .dead_letters
                .keys()
                .chain(k.dead_letters.keys())
                .collect();
            for r in reasons {
                let (e, o) = (
                    truth.dead_letters.get(r).copied().unwrap_or(0),
                    k.dead_letters.get(r).copied().unwrap_or(0),
                );
                if e != o {
                    diffs.push(format!("dead letters {r}: expected {e}, observed {o}"));
                }
            }
            checks.push(CheckResult::checked(
                "dead letters",
                truth.dead_letters.values().sum::<u64>().to_string(),
                k.dead_letters.values().sum::<u64>().to_string(),
                diffs,
            ));
        }
        None => {
            for n in [
                "events (deduplicated)",
                "duplicates on dedup topic",
                "identity collisions",
                "open sequence gaps",
                "dead letters",
            ] {
                checks.push(na(n));
            }
        }
    }
    match db {
        Some(d) => {
            let diffs = diff_maps("stock", &truth.stock, &d.stock, |v| *v == 0);
            checks.push(CheckResult::checked(
                "stock on hand",
                truth
                    .stock
                    .values()
                    .map(|m| m.len())
                    .sum::<usize>()
                    .to_string(),
                d.stock.values().map(|m| m.len()).sum::<usize>().to_string(),
                diffs,
            ));
            let expected_sales: BTreeMap<String, BTreeMap<String, (i64, i64)>> = truth
                .sku_sales
                .iter()
                .map(|(s, m)| {
                    (
                        s.clone(),
                        m.iter().map(|(k, v)| (k.clone(), (v.qty, v.net))).collect(),
                    )
                })
                .collect();
            let diffs = diff_maps("sales (qty, net)", &expected_sales, &d.sku_sales, |v| {
                *v == (0, 0)
            });
            checks.push(CheckResult::checked(
                "sales by store/sku",
                expected_sales
                    .values()
                    .map(|m| m.len())
                    .sum::<usize>()
                    .to_string(),
                d.sku_sales
                    .values()
                    .map(|m| m.len())
                    .sum::<usize>()
                    .to_string(),
                diffs,
            ));
            checks.push(CheckResult::checked(
                "ledger lines",
                truth.ledger_lines.to_string(),
                d.ledger_lines.to_string(),
                if truth.ledger_lines == d.ledger_lines {
                    vec![]
                } else {
                    vec![format!(
                        "ledger has {} rows, expected {} (a doubled or lost stock move)",
                        d.ledger_lines, truth.ledger_lines
                    )]
                },
            ));
        }
        None => {
            for n in ["stock on hand", "sales by store/sku", "ledger lines"] {
                checks.push(na(n));
            }
        }
    }
    match catalog {
        Some(c) => {
            let mut diffs = Vec::new();
            for (store, id) in &truth.price_lists {
                match c.price_lists.get(store) {
                    None => diffs.push(format!(
                        "store {store}: no price list delivered, expected {id}"
                    )),
                    Some(got) if got != id => diffs.push(format!(
                        "store {store}: holds {got}, expected the latest {id}"
                    )),
                    Some(_) => {}
                }
            }
            for store in c
                .price_lists
                .keys()
                .filter(|s| !truth.price_lists.contains_key(*s))
            {
                diffs.push(format!(
                    "store {store}: holds a price list none was approved for"
                ));
            }
            diffs.extend(
                c.misplaced
                    .iter()
                    .map(|m| format!("misplaced document {m}")),
            );
            checks.push(CheckResult::checked(
                "price lists at stores",
                truth.price_lists.len().to_string(),
                c.price_lists.len().to_string(),
                diffs,
            ));
        }
        None => checks.push(na("price lists at stores")),
    }
    checks.push(na("finance exports"));
    Report { checks }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::{FleetSpec, generate};

    fn perfect(truth: &Truth) -> (KafkaObserved, DbObserved) {
        let k = KafkaObserved {
            deduped: truth
                .store_event_ids
                .iter()
                .map(|id| (id.clone(), 1))
                .collect(),
            collisions: truth.collisions.clone(),
            open_gaps: truth.gaps.clone(),
            dead_letters: truth.dead_letters.clone(),
        };
        let d = DbObserved {
            stock: truth.stock.clone(),
            sku_sales: truth
                .sku_sales
                .iter()
                .map(|(s, m)| {
                    (
                        s.clone(),
                        m.iter().map(|(k, v)| (k.clone(), (v.qty, v.net))).collect(),
                    )
                })
                .collect(),
            ledger_lines: truth.ledger_lines,
        };
        (k, d)
    }

    #[test]
    fn a_perfect_pipeline_passes() {
        let plan = generate(&FleetSpec::default());
        let (k, d) = perfect(&plan.truth);
        assert!(!plan.truth.price_lists.is_empty());
        let c = CatalogObserved {
            price_lists: plan.truth.price_lists.clone(),
            misplaced: vec![],
        };
        let observed = Observed {
            kafka: Some(&k),
            db: Some(&d),
            catalog: Some(&c),
        };
        let r = compare(&plan.truth, observed);
        assert!(r.passed(), "{}", r.render(10));
        assert_eq!(r.differences(), 0);
    }

    #[test]
    fn every_kind_of_wrong_output_is_reported() {
        let plan = generate(&FleetSpec::default());
        let (mut k, mut d) = perfect(&plan.truth);
        // One stock row off by one.
        let (store, skus) = d.stock.iter_mut().next().unwrap();
        let (sku, qty) = skus.iter_mut().next().unwrap();
        *qty += 1;
        let corrupted = format!("stock {store}/{sku}");
        // A lost event, a doubled event, a missed collision, a wrong gap, a lost dead letter.
        let lost = k.deduped.keys().next().unwrap().clone();
        k.deduped.remove(&lost);
        let doubled = k.deduped.keys().next().unwrap().clone();
        k.deduped.insert(doubled, 2);
        let c = k.collisions.iter().next().unwrap().clone();
        k.collisions.remove(&c);
        k.open_gaps.clear();
        d.ledger_lines += 1;
        // A store still holding an older price list, one without any, one spoofed document.
        let mut cat = CatalogObserved {
            price_lists: plan.truth.price_lists.clone(),
            misplaced: vec!["store/s001/catalog/price-list: {\"store_id\":\"s002\"}".into()],
        };
        let mut stores = plan.truth.price_lists.keys();
        let stale = stores.next().unwrap().clone();
        cat.price_lists
            .insert(stale.clone(), format!("pl-{stale}-v0"));
        let undelivered = stores.next().unwrap().clone();
        cat.price_lists.remove(&undelivered);
        let observed = Observed {
            kafka: Some(&k),
            db: Some(&d),
            catalog: Some(&cat),
        };
        let r = compare(&plan.truth, observed);
        assert!(!r.passed());
        let text = r.render(1000);
        assert!(text.contains(&corrupted), "{text}");
        assert!(text.contains(&format!("missing event {lost}")), "{text}");
        assert!(text.contains("emitted 2 times"), "{text}");
        assert!(
            text.contains(&format!("collision of {c} not reported")),
            "{text}"
        );
        assert!(text.contains("not reported open"), "{text}");
        assert!(text.contains("ledger has"), "{text}");
        assert!(
            text.contains(&format!("store {stale}: holds pl-{stale}-v0")),
            "{text}"
        );
        assert!(
            text.contains(&format!("store {undelivered}: no price list delivered")),
            "{text}"
        );
        assert!(text.contains("misplaced document"), "{text}");
    }
}
