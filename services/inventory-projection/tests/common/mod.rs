//! Shared helpers for the projection's integration tests: a deterministic event stream covering
//! every kind the projection handles, producing it to the real topic, and waiting for a database
//! to catch up.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use tillstream_contracts::samples;
use tillstream_contracts::*;
use tillstream_inventory_projection::Config;
use tillstream_inventory_projection::db::{Color, DatabaseConfig, Db};
use tillstream_runtime::CancellationToken;
use tillstream_runtime::kafka::{self, KafkaConfig};

pub const TOPIC: &str = "tillstream.store-events";

fn adjust(store: &str, device: &str, seq: i64) -> DeviceEvent {
    let Some(DeviceEvent::InventoryAdjusted(mut a)) =
        samples::sample(EventKind::InventoryAdjusted, store, device, seq)
    else {
        unreachable!()
    };
    let sku = format!("SKU-{:04}", (seq * 7) % 50);
    let (kind, qty, expected) = match seq % 5 {
        0 => (AdjustmentKind::Receipt, 40, None),
        1 => (AdjustmentKind::Count, 25, Some(27)),
        2 => (AdjustmentKind::Shrink, 2, None),
        3 => (AdjustmentKind::TransferIn, 5, None),
        _ => (AdjustmentKind::Count, 30, None),
    };
    a.kind = kind;
    a.lines = vec![
        AdjustmentLine {
            sku: sku.clone(),
            quantity: qty,
            expected_on_hand: expected,
        },
        AdjustmentLine {
            sku: format!("SKU-{:04}", (seq * 11) % 50),
            quantity: qty / 2 + 1,
            expected_on_hand: expected.map(|e| e / 2),
        },
    ];
    a.into()
}

/// A deterministic stream: `stores` stores x 2 devices x `per_device` events, interleaved across
/// stores as a live fleet would send them. Sales, refunds (some restocked), every adjustment kind
/// (counts with and without expected_on_hand), reservation lifecycles, loyalty, a day close.
pub fn stream(stores: usize, per_device: i64) -> Vec<DeviceEvent> {
    let mut out = Vec::new();
    for seq in 1..=per_device {
        for s in 0..stores {
            for d in 1..=2 {
                let store = format!("s{s:03}");
                let device = format!("{store}-d{d:02}");
                let ev: DeviceEvent = match seq % 10 {
                    0..=4 => samples::order(&store, &device, seq, 1 + (seq as usize % 3)).into(),
                    5 => {
                        let Some(DeviceEvent::OrderRefunded(mut r)) =
                            samples::sample(EventKind::OrderRefunded, &store, &device, seq)
                        else {
                            unreachable!()
                        };
                        r.lines[0].sku = format!("SKU-{:04}", seq % 50);
                        r.into()
                    }
                    6 | 7 => adjust(&store, &device, seq),
                    8 => {
                        // Reservation lifecycle over three stores' worth of kinds, one per seq.
                        let rid = format!("{device}-res{}", seq / 30);
                        match (seq / 10) % 3 {
                            0 => {
                                let Some(DeviceEvent::StockReservationRequested(mut r)) =
                                    samples::sample(
                                        EventKind::StockReservationRequested,
                                        &store,
                                        &device,
                                        seq,
                                    )
                                else {
                                    unreachable!()
                                };
                                r.reservation_id = rid;
                                r.into()
                            }
                            1 => {
                                let Some(DeviceEvent::StockReservationGranted(mut r)) =
                                    samples::sample(
                                        EventKind::StockReservationGranted,
                                        &store,
                                        &device,
                                        seq,
                                    )
                                else {
                                    unreachable!()
                                };
                                r.reservation_id = rid;
                                r.into()
                            }
                            _ => {
                                let Some(DeviceEvent::StockReservationReleased(mut r)) =
                                    samples::sample(
                                        EventKind::StockReservationReleased,
                                        &store,
                                        &device,
                                        seq,
                                    )
                                else {
                                    unreachable!()
                                };
                                r.reservation_id = rid;
                                if seq % 4 == 0 {
                                    r.reason = ReleaseReason::Expired;
                                }
                                r.into()
                            }
                        }
                    }
                    _ => samples::sample(EventKind::LoyaltyRedeemed, &store, &device, seq).unwrap(),
                };
                out.push(ev);
            }
        }
    }
    for s in 0..stores {
        let store = format!("s{s:03}");
        let device = format!("{store}-d01");
        out.push(
            samples::sample(EventKind::StoreDayClosed, &store, &device, per_device + 1).unwrap(),
        );
    }
    out
}

/// Produces `events` to the store-event topic (key = store id, standard headers), in order.
/// Returns the number of records written.
pub async fn produce(
    kafka_cfg: &KafkaConfig,
    registry: &Registry,
    events: &[DeviceEvent],
) -> usize {
    let producer = kafka::producer(kafka_cfg, "it-projection-producer").unwrap();
    let token = CancellationToken::new();
    let mut futs = Vec::new();
    for ev in events {
        let kind = ev.kind();
        let id = registry
            .schema_id(kind, ev.schema_version() as u32)
            .await
            .unwrap();
        let payload = codec::frame(id, ev.encode().unwrap());
        // No headers, as the bridge writes them by default (`kafka.record_headers`).
        let record = rdkafka::producer::FutureRecord::to(TOPIC)
            .key(ev.store_id())
            .payload(&payload);
        futs.push(producer.send_result(record).expect("queue has room"));
    }
    for f in futs {
        f.await.unwrap().unwrap();
    }
    let _ = token;
    events.len()
}

/// Produces raw bytes (poison) keyed by `store`.
pub async fn produce_raw(kafka_cfg: &KafkaConfig, store: &str, payload: &[u8]) {
    let producer = kafka::producer(kafka_cfg, "it-projection-poison").unwrap();
    let token = CancellationToken::new();
    kafka::send_with_retry(&producer, TOPIC, store.as_bytes(), payload, None, &token)
        .await
        .unwrap();
}

/// High watermark per partition of the topic (= the next offsets a caught-up consumer stores).
pub fn high_watermarks(kafka_cfg: &KafkaConfig) -> BTreeMap<i32, i64> {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    let mut c = kafka_cfg.client_config("it-watermarks");
    c.set("group.id", "it-watermarks");
    let consumer: BaseConsumer = c.create().unwrap();
    let md = consumer
        .fetch_metadata(Some(TOPIC), Duration::from_secs(10))
        .unwrap();
    let mut out = BTreeMap::new();
    for p in md.topics()[0].partitions() {
        let (_, hi) = consumer
            .fetch_watermarks(TOPIC, p.id(), Duration::from_secs(10))
            .unwrap();
        if hi > 0 {
            out.insert(p.id(), hi);
        }
    }
    out
}

/// Waits until the live set of `db` holds `goal` as its offsets; panics after `timeout` with what
/// it holds (a bound on a wait, not a performance assertion).
pub async fn wait_caught_up(db: &Db, goal: &BTreeMap<i32, i64>, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    loop {
        let have = db.live_offsets(TOPIC).await.unwrap_or_default();
        if &have == goal {
            return;
        }
        if Instant::now() > deadline {
            panic!("not caught up after {timeout:?}: have {have:?}, want {goal:?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

pub fn db_config(url: &str) -> DatabaseConfig {
    DatabaseConfig {
        url: url.to_string(),
        ..DatabaseConfig::default()
    }
}

/// A live-projection config for tests: small batches (many transactions), short linger.
pub fn config(kafka_cfg: &KafkaConfig, registry_url: &str, db_url: &str, group: &str) -> Config {
    let mut cfg = Config {
        kafka: kafka_cfg.clone(),
        group_id: group.to_string(),
        ..Config::default()
    };
    cfg.registry.url = registry_url.to_string();
    cfg.database = db_config(db_url);
    cfg.ops.listen = "127.0.0.1:0".parse().unwrap();
    cfg.batch.max_events = 97;
    cfg.batch.linger_ms = 10;
    cfg
}

/// The canonical dump of the live set.
pub async fn live_dump(db: &Db) -> String {
    let color: Color = db.active_color().await.unwrap();
    db.dump(color).await.unwrap()
}

/// `GET path` on the ops endpoint: (status code, body). Plain HTTP/1.0 over a TCP socket: no HTTP
/// client dependency needed. Panics when the endpoint does not answer.
pub async fn http_get(addr: std::net::SocketAddr, path: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(format!("GET {path} HTTP/1.0\r\nHost: x\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    let (head, body) = out.split_once("\r\n\r\n").expect("an HTTP response");
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no status in {head:?}"));
    (status, body.to_string())
}

/// One readiness check as `/readyz` reports it.
#[derive(Debug, Clone, serde::Deserialize)]
pub struct Check {
    pub ready: bool,
    pub live: bool,
    pub detail: String,
}

/// The checks `/readyz` reports, by name.
pub async fn readiness(addr: std::net::SocketAddr) -> BTreeMap<String, Check> {
    let (_, body) = http_get(addr, "/readyz").await;
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("/readyz body {body:?}: {e}"))
}

/// The canonical dump the stream now in the topic gives when applied in one batch, straight from
/// the records (decoded like the live projection decodes them) into a fresh SQLite file: the
/// reference a live run must equal. Panics on any read or decode failure.
pub async fn reference_dump(kafka_cfg: &KafkaConfig, registry: &Registry, dir: &Path) -> String {
    use tillstream_inventory_projection::db::{FaultConfig, Target};
    use tillstream_inventory_projection::decode::decode;
    use tillstream_inventory_projection::model::ProjectionParams;
    let records = {
        let k = kafka_cfg.clone();
        tokio::task::spawn_blocking(move || {
            kafka::read_topic_to_end(&k, TOPIC, Duration::from_secs(30))
        })
        .await
        .unwrap()
        .unwrap()
    };
    let mut envs = Vec::with_capacity(records.len());
    let mut next = BTreeMap::new();
    for r in &records {
        use rdkafka::Message;
        envs.push(decode(registry, r).await.unwrap());
        let n = next.entry(r.partition()).or_insert(0);
        *n = (*n).max(r.offset() + 1);
    }
    let db = Db::connect(&db_config(&dir.join("reference.db").display().to_string()))
        .await
        .unwrap();
    db.apply(
        Target::Live,
        TOPIC,
        &envs,
        &next,
        &ProjectionParams::default(),
        &FaultConfig::default(),
    )
    .await
    .unwrap();
    live_dump(&db).await
}
