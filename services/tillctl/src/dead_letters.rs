//! `tillctl dead-letters`: what the dead-letter topic holds, by service and reason, and re-driving
//! the dead letters of one reason once their cause is fixed.
//!
//! Re-driving sends each selected dead letter back through the validation that refused it:
//! - a message the **store bridge** refused (an MQTT message) goes through the bridge's own
//!   validation and conversion ([`tillstream_store_bridge::redrive`]) with the bridge's
//!   configuration as it is now (its fleet file, limits, routes), and the record it gives is written
//!   to Kafka: the event into its topic, or, if still refused, a new dead letter with today's reason;
//! - a record a **consumer** refused (a Kafka record) is written back to the topic it came from, with
//!   its key and headers, for that consumer to read again.
//!
//! Delivery guarantee: at-least-once, like the rest of the pipeline. A dead letter re-driven twice
//! (two runs, or a crash between writing and reporting) is the same event twice: the dedup passes
//! each `event_id` on once, and every sink is idempotent on it. The dead-letter topic itself is
//! never changed (it keeps its retention); `--dry-run` lists what would be re-driven.

use std::collections::BTreeMap;
use std::time::Duration;

use rdkafka::Message;
use serde::Serialize;
use tillstream_contracts::{DeadLetter, Registry, SourceKind};
use tillstream_runtime::kafka::{self, KafkaConfig};
use tillstream_runtime::{CancellationToken, clock, framed};
use tillstream_store_bridge::redrive::{Revalidated, Revalidator};

#[derive(Debug, thiserror::Error)]
pub enum DeadLettersError {
    #[error("reading {topic}: {detail}")]
    Read { topic: String, detail: String },
    #[error("dead letter at {topic}/{partition}@{offset} does not decode: {detail}")]
    Decode {
        topic: String,
        partition: i32,
        offset: i64,
        detail: String,
    },
    #[error("store bridge validation: {0}")]
    Bridge(#[from] tillstream_store_bridge::BridgeError),
    #[error("kafka: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    #[error("writing to {topic}: no acknowledgement within {after:?}")]
    Unacknowledged { topic: String, after: Duration },
}

/// One dead letter and where it is in the dead-letter topic.
#[derive(Debug, Clone)]
pub struct Stored {
    pub partition: i32,
    pub offset: i64,
    pub dead_letter: DeadLetter,
}

/// Reads and decodes every record of the dead-letter topic (to its end when the read began).
pub async fn read(
    kafka_cfg: &KafkaConfig,
    registry: &Registry,
    topic: &str,
    timeout: Duration,
) -> Result<Vec<Stored>, DeadLettersError> {
    let (cfg, name) = (kafka_cfg.clone(), topic.to_string());
    let read_err = |detail: String| DeadLettersError::Read {
        topic: topic.to_string(),
        detail,
    };
    let records =
        tokio::task::spawn_blocking(move || kafka::read_topic_to_end(&cfg, &name, timeout))
            .await
            .map_err(|e| read_err(e.to_string()))?
            .map_err(|e| read_err(e.to_string()))?;
    let mut out = Vec::with_capacity(records.len());
    for r in records {
        let decode_err = |detail: String| DeadLettersError::Decode {
            topic: topic.to_string(),
            partition: r.partition(),
            offset: r.offset(),
            detail,
        };
        let dead_letter = decode(registry, r.payload()).await.map_err(decode_err)?;
        out.push(Stored {
            partition: r.partition(),
            offset: r.offset(),
            dead_letter,
        });
    }
    Ok(out)
}

/// One dead-letter record's value, decoded through the registry (why not, for people).
async fn decode(registry: &Registry, payload: Option<&[u8]>) -> Result<DeadLetter, String> {
    match framed::writer_of(registry, payload).await {
        Ok(Ok((writer, datum))) => writer.decode(datum).map_err(|e| e.to_string()),
        Ok(Err(unreadable)) => Err(format!("{}: {}", unreadable.reason, unreadable.detail)),
        Err(e) => Err(e.to_string()),
    }
}

/// Which dead letters a command acts on.
#[derive(Debug, Clone, Default)]
pub struct Selection {
    /// Only this reason (`None`: every reason; `redrive` requires one).
    pub reason: Option<String>,
    /// Only those of this service (`store-bridge`, `dedup`, ...).
    pub service: Option<String>,
    /// Only those that failed at or after this time (epoch ms).
    pub since_ms: Option<i64>,
}

impl Selection {
    pub fn selects(&self, d: &DeadLetter) -> bool {
        self.reason.as_ref().is_none_or(|r| *r == d.reason)
            && self.service.as_ref().is_none_or(|s| *s == d.service)
            && self.since_ms.is_none_or(|t| d.failed_at >= t)
    }
}

/// Dead letters per (service, reason): count, first and last failure (epoch ms).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Summary {
    pub count: u64,
    pub first_failed_at: i64,
    pub last_failed_at: i64,
}

/// How many dead letters each service refused for each reason.
pub fn summarize<'a>(
    dead_letters: impl IntoIterator<Item = &'a DeadLetter>,
) -> BTreeMap<(String, String), Summary> {
    let mut out: BTreeMap<(String, String), Summary> = BTreeMap::new();
    for d in dead_letters {
        let s = out
            .entry((d.service.clone(), d.reason.clone()))
            .or_insert(Summary {
                count: 0,
                first_failed_at: d.failed_at,
                last_failed_at: d.failed_at,
            });
        s.count += 1;
        s.first_failed_at = s.first_failed_at.min(d.failed_at);
        s.last_failed_at = s.last_failed_at.max(d.failed_at);
    }
    out
}

/// What one re-drive did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct RedriveReport {
    /// Dead letters the selection matched.
    pub selected: u64,
    /// Records written, by topic (the events' topics, the consumers' input topics).
    pub written: BTreeMap<String, u64>,
    /// Messages the bridge still refuses, by the reason it gives now (written as new dead letters).
    pub refused_again: BTreeMap<String, u64>,
    /// Not re-driven, by why: `payload_cut` (the dead letter kept only the start of a message too
    /// large to keep whole), `ignored_now` (it matches one of the bridge's ignore filters now).
    pub skipped: BTreeMap<String, u64>,
    /// `--dry-run`: nothing was written.
    pub dry_run: bool,
}

/// Where a re-driven dead letter goes.
#[derive(Debug)]
enum Target {
    Write {
        topic: String,
        key: Vec<u8>,
        value: Vec<u8>,
        headers: Vec<(String, String)>,
        /// The bridge still refuses it, for this reason.
        refused_again: Option<String>,
    },
    Skip(&'static str),
}

/// Re-drives the selected dead letters (see the module's doc). `bridge` validates the store
/// bridge's; `timeout` bounds each write's retries.
pub async fn redrive(
    kafka_cfg: &KafkaConfig,
    registry: &Registry,
    bridge: &Revalidator,
    stored: &[Stored],
    selection: &Selection,
    dry_run: bool,
    timeout: Duration,
) -> Result<RedriveReport, DeadLettersError> {
    let mut report = RedriveReport {
        dry_run,
        ..Default::default()
    };
    let producer = kafka::producer(kafka_cfg, "tillctl-redrive")?;
    // Retries stop only when the write is given up on (the timeout below drops it).
    let never = CancellationToken::new();
    let now_ms = clock::now_ms();
    for s in stored.iter().filter(|s| selection.selects(&s.dead_letter)) {
        report.selected += 1;
        match target(registry, bridge, &s.dead_letter, now_ms).await? {
            Target::Skip(why) => *report.skipped.entry(why.into()).or_default() += 1,
            Target::Write {
                topic,
                key,
                value,
                headers,
                refused_again,
            } => {
                if !dry_run {
                    let pairs: Vec<(&str, &str)> = headers
                        .iter()
                        .map(|(k, v)| (k.as_str(), v.as_str()))
                        .collect();
                    let headers = (!pairs.is_empty()).then(|| kafka::make_headers(&pairs));
                    let send =
                        kafka::send_with_retry(&producer, &topic, &key, &value, headers, &never);
                    tokio::time::timeout(timeout, send).await.map_err(|_| {
                        DeadLettersError::Unacknowledged {
                            topic: topic.clone(),
                            after: timeout,
                        }
                    })??;
                }
                match refused_again {
                    Some(reason) => *report.refused_again.entry(reason).or_default() += 1,
                    None => *report.written.entry(topic).or_default() += 1,
                }
            }
        }
    }
    Ok(report)
}

/// What re-driving one dead letter writes.
async fn target(
    registry: &Registry,
    bridge: &Revalidator,
    d: &DeadLetter,
    now_ms: i64,
) -> Result<Target, DeadLettersError> {
    // The bridge keeps only the start of a message larger than its dead-letter bound: what is
    // left cannot be validated again.
    if d.detail.contains("(payload cut to its first") {
        return Ok(Target::Skip("payload_cut"));
    }
    match d.source_kind {
        SourceKind::Mqtt => match bridge.revalidate(&d.source_topic, &d.payload, now_ms)? {
            Revalidated::Ignored => Ok(Target::Skip("ignored_now")),
            Revalidated::Record(r) => {
                let refused_again = if bridge.is_dead_letter(&r) {
                    Some(reason_of(registry, &r.value).await)
                } else {
                    None
                };
                Ok(Target::Write {
                    topic: r.topic,
                    key: r.key,
                    value: r.value,
                    headers: r.headers,
                    refused_again,
                })
            }
        },
        SourceKind::Kafka => Ok(Target::Write {
            topic: d.source_topic.clone(),
            key: d.key.clone().unwrap_or_default(),
            value: d.payload.clone(),
            headers: d
                .headers
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            refused_again: None,
        }),
    }
}

/// The reason of a dead-letter record the bridge built (`unknown` if it does not decode).
async fn reason_of(registry: &Registry, value: &[u8]) -> String {
    decode(registry, Some(value))
        .await
        .map(|d| d.reason)
        .unwrap_or_else(|_| "unknown".into())
}

/// `--since`: epoch milliseconds, or an age (`90s`, `30m`, `6h`, `2d`) before `now_ms`.
pub fn parse_since(text: &str, now_ms: i64) -> Result<i64, String> {
    let text = text.trim();
    if let Ok(ms) = text.parse::<i64>() {
        return Ok(ms);
    }
    parse_age_ms(text)
        .map(|age| now_ms - age)
        .map_err(|e| format!("--since {text:?}: epoch ms or {e}"))
}

/// An age or a period: a number and its unit (`90s`, `30m`, `6h`, `2d`), in milliseconds.
pub fn parse_age_ms(text: &str) -> Result<i64, String> {
    let text = text.trim();
    let (number, unit) = text.split_at(text.len().saturating_sub(1));
    let n: i64 = number
        .parse()
        .map_err(|_| "an age like 30m, 6h, 2d".to_string())?;
    let unit_ms = match unit {
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => return Err("an age whose unit is s, m, h or d".to_string()),
    };
    n.checked_mul(unit_ms)
        .filter(|ms| *ms >= 0)
        .ok_or_else(|| "an age that is not negative and not absurdly long".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dl(service: &str, reason: &str, failed_at: i64) -> DeadLetter {
        DeadLetter {
            dead_letter_id: format!("{service}-{reason}-{failed_at}"),
            service: service.into(),
            reason: reason.into(),
            detail: String::new(),
            source_kind: SourceKind::Mqtt,
            source_topic: "store/s001/pos/order.created".into(),
            source_partition: None,
            source_offset: None,
            key: None,
            payload: b"{}".to_vec(),
            headers: BTreeMap::new(),
            store_id: None,
            device_id: None,
            event_id: None,
            failed_at,
        }
    }

    #[test]
    fn a_selection_matches_reason_service_and_time() {
        let sel = Selection {
            reason: Some("unknown_device".into()),
            service: Some("store-bridge".into()),
            since_ms: Some(100),
        };
        assert!(sel.selects(&dl("store-bridge", "unknown_device", 100)));
        assert!(!sel.selects(&dl("store-bridge", "unknown_device", 99)));
        assert!(!sel.selects(&dl("dedup", "unknown_device", 200)));
        assert!(!sel.selects(&dl("store-bridge", "out_of_bounds", 200)));
        assert!(Selection::default().selects(&dl("dedup", "not_framed", 0)));
    }

    #[test]
    fn the_summary_counts_per_service_and_reason() {
        let all = [
            dl("store-bridge", "unknown_device", 5),
            dl("store-bridge", "unknown_device", 2),
            dl("dedup", "not_framed", 7),
        ];
        let s = summarize(&all);
        assert_eq!(
            s[&("store-bridge".to_string(), "unknown_device".to_string())],
            Summary {
                count: 2,
                first_failed_at: 2,
                last_failed_at: 5
            }
        );
        assert_eq!(s[&("dedup".to_string(), "not_framed".to_string())].count, 1);
    }

    #[test]
    fn since_takes_epoch_ms_or_an_age() {
        assert_eq!(parse_since("1700000000000", 0), Ok(1_700_000_000_000));
        assert_eq!(parse_since("30m", 10_000_000), Ok(10_000_000 - 1_800_000));
        assert_eq!(
            parse_since("2d", 200_000_000),
            Ok(200_000_000 - 172_800_000)
        );
        assert!(parse_since("2w", 0).is_err());
        assert!(parse_since("soon", 0).is_err());
    }
}
