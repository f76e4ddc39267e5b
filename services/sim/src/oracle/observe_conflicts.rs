//! What the conflict detector produced, read from the conflicts and compensations topics (its
//! records name it as their detector; the dedup's identity collisions are collected apart), and its
//! progress from its database (input offsets, outbox), for waiting until it has caught up.
//! Read-only. A read that fails is an error, never "nothing there".

use std::collections::BTreeMap;
use std::time::Duration;

use tillstream_contracts::{
    Compensation, ConflictDetected, ConflictKind, ConflictResolved, EventKind, Registry,
};
use tillstream_runtime::kafka::{self, KafkaConfig, headers};

use super::observe::{decode, read, watermarks};
use super::{ConflictsObserved, ObservedCompensation, ObservedConflict, OracleError, Topics};

/// The name the detector writes into `ConflictDetected.detector` and its records' producer header.
const DETECTOR: &str = "conflict-detector";

/// Reads the detector's records (and the dedup's collisions) from both topics.
pub async fn observe_conflicts(
    kafka_cfg: &KafkaConfig,
    registry: &Registry,
    topics: &Topics,
) -> Result<ConflictsObserved, OracleError> {
    let mut obs = ConflictsObserved::default();
    let missing_id = |topic: &str, offset: i64| OracleError::Decode {
        topic: topic.to_string(),
        detail: format!("record at offset {offset} has no event id header"),
    };
    for m in read(kafka_cfg, &topics.conflicts).await? {
        let h = kafka::header_map(&m);
        let ty = h.get(headers::EVENT_TYPE).map(String::as_str);
        let ours = h.get(headers::PRODUCER).map(String::as_str) == Some(DETECTOR);
        if ours {
            let id = h
                .get(headers::EVENT_ID)
                .ok_or_else(|| missing_id(&topics.conflicts, rdkafka::Message::offset(&m)))?;
            *obs.copies.entry(id.clone()).or_default() += 1;
        }
        if ty == Some(EventKind::ConflictDetected.name()) {
            let c: ConflictDetected =
                decode(registry, &topics.conflicts, rdkafka::Message::payload(&m)).await?;
            if c.detector == DETECTOR {
                let detail = |k: &str| c.detail.get(k).cloned().unwrap_or_default();
                obs.detected.insert(
                    c.conflict_id.clone(),
                    ObservedConflict {
                        rule: detail("rule"),
                        triage: detail("triage"),
                        store_id: c.store_id.clone(),
                        sku: c.sku.clone(),
                        event_ids: c.event_ids.clone(),
                    },
                );
            } else if c.kind == ConflictKind::IdentityCollision {
                obs.dedup_collisions.extend(c.event_ids.iter().cloned());
            }
        } else if ty == Some(EventKind::ConflictResolved.name()) && ours {
            let r: ConflictResolved =
                decode(registry, &topics.conflicts, rdkafka::Message::payload(&m)).await?;
            if r.resolution.starts_with("auto: superseded") {
                obs.superseded.insert(r.conflict_id);
            }
        }
    }
    for m in read(kafka_cfg, &topics.compensations).await? {
        let c: Compensation = decode(
            registry,
            &topics.compensations,
            rdkafka::Message::payload(&m),
        )
        .await?;
        *obs.copies.entry(c.compensation_id.clone()).or_default() += 1;
        obs.compensations.insert(
            c.compensation_id,
            ObservedCompensation {
                conflict_id: c.conflict_id,
                reverses: c.reverses,
            },
        );
    }
    Ok(obs)
}

/// The identity collisions in the detector's review queue (database `db_url`, table `cd_conflict`:
/// rule 7's entries, whatever their status): the event ids their verdicts name first.
pub async fn observe_conflict_queue(
    db_url: &str,
) -> Result<std::collections::BTreeSet<String>, OracleError> {
    use sqlx::Row;
    sqlx::any::install_default_drivers();
    let pool = sqlx::any::AnyPoolOptions::new()
        .max_connections(1)
        .connect(db_url)
        .await?;
    let rows = sqlx::query("SELECT conflict_id, verdict FROM cd_conflict WHERE rule = $1")
        .bind("identity-collision")
        .fetch_all(&pool)
        .await?;
    pool.close().await;
    let mut out = std::collections::BTreeSet::new();
    for r in rows {
        let id: String = r.try_get(0)?;
        let verdict: String = r.try_get(1)?;
        let v: serde_json::Value =
            serde_json::from_str(&verdict).map_err(|e| OracleError::Decode {
                topic: "cd_conflict".into(),
                detail: format!("verdict of {id}: {e}"),
            })?;
        match v["evidence"][0].as_str() {
            Some(e) => out.insert(e.to_string()),
            None => {
                return Err(OracleError::Decode {
                    topic: "cd_conflict".into(),
                    detail: format!("verdict of {id} names no evidence"),
                });
            }
        };
    }
    Ok(out)
}

/// The detector's progress: how far it has taken in the deduplicated topic and what it still has
/// to publish.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ConflictsProgress {
    /// Partitions of the deduplicated topic with records.
    pub partitions: usize,
    /// Of those, the ones whose detector offset equals the high watermark.
    pub caught_up: usize,
    /// Records in the detector's outbox (decided, not yet published).
    pub outbox: i64,
    /// Raised verdicts waiting unwritten in the detector's memory (`detector.hold_ms`).
    pub held: i64,
    /// Records on the conflicts and compensations topics.
    pub records: i64,
}

async fn progress(
    kafka_cfg: &KafkaConfig,
    topics: &Topics,
    db_url: &str,
) -> Result<ConflictsProgress, OracleError> {
    use sqlx::Row;
    let (cfg, t) = (kafka_cfg.clone(), topics.clone());
    let (marks, out_marks) = tokio::task::spawn_blocking(move || {
        let mut out = watermarks(&cfg, &t.conflicts)?;
        out.extend(watermarks(&cfg, &t.compensations)?);
        Ok::<_, OracleError>((watermarks(&cfg, &t.deduped)?, out))
    })
    .await
    .map_err(|e| OracleError::Decode {
        topic: topics.deduped.clone(),
        detail: e.to_string(),
    })??;
    sqlx::any::install_default_drivers();
    let pool = sqlx::any::AnyPoolOptions::new()
        .max_connections(1)
        .connect(db_url)
        .await?;
    let rows = sqlx::query(
        "SELECT CAST(kafka_partition AS BIGINT), CAST(next_offset AS BIGINT) FROM cd_offset WHERE topic = $1",
    )
    .bind(topics.deduped.clone())
    .fetch_all(&pool)
    .await?;
    let mut done = BTreeMap::new();
    for r in &rows {
        done.insert(r.try_get::<i64, _>(0)?, r.try_get::<i64, _>(1)?);
    }
    let outbox: i64 = sqlx::query("SELECT CAST(COUNT(*) AS BIGINT) FROM cd_outbox")
        .fetch_one(&pool)
        .await?
        .try_get(0)?;
    let held: i64 = sqlx::query("SELECT CAST(COALESCE(SUM(verdicts), 0) AS BIGINT) FROM cd_held")
        .fetch_one(&pool)
        .await?
        .try_get(0)?;
    pool.close().await;
    Ok(ConflictsProgress {
        partitions: marks.iter().filter(|(_, _, hi)| *hi > 0).count(),
        caught_up: marks
            .iter()
            .filter(|(p, _, hi)| *hi > 0 && done.get(&i64::from(*p)) == Some(hi))
            .count(),
        outbox,
        held,
        records: out_marks.iter().map(|(_, lo, hi)| hi - lo).sum(),
    })
}

/// Waits until the detector (database `db_url`) has taken in every partition of the deduplicated
/// topic to its end, its outbox is empty, no verdict waits unwritten and nothing moved for
/// `settle`. Call it once the rest of
/// the pipeline has drained.
pub async fn wait_conflicts_drained(
    kafka_cfg: &KafkaConfig,
    topics: &Topics,
    db_url: &str,
    timeout: Duration,
    settle: Duration,
) -> Result<ConflictsProgress, ConflictsProgress> {
    let deadline = tokio::time::Instant::now() + timeout;
    let mut last = ConflictsProgress::default();
    let mut stable_since = tokio::time::Instant::now();
    loop {
        let now = tokio::time::Instant::now();
        if let Ok(p) = progress(kafka_cfg, topics, db_url).await {
            let complete =
                p.partitions > 0 && p.caught_up == p.partitions && p.outbox == 0 && p.held == 0;
            if p != last {
                last = p;
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
