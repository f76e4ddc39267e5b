//! Shared helpers for the finance export's tests on the real stack: a private tansu with the
//! topology and an in-process registry, hand-made store events, producing them to the real topic,
//! waiting for exports to appear, and reading the files back with the independent reader
//! (`scripts/read_exports.py`, pyarrow).
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use tillstream_contracts::{
    DeviceEvent, Discount, Money, OrderCreated, OrderLine, OrderRefunded, OrderTotals, RefundLine,
    Registry, StoreDayClosed, Tender, TenderMethod, TenderTotal, codec,
};
use tillstream_finance_export::Config;
use tillstream_integration_tests::{Stack, Svc, TestRegistry, stack_with_topics};
use tillstream_runtime::kafka::{self, Assignment, KafkaConfig};

pub const EVENTS: &str = "tillstream.store-events";
pub const DLQ: &str = "tillstream.dead-letter";
pub const BIN: &str = env!("CARGO_BIN_EXE_tillstream-finance-export");
/// 2026-11-02.
pub const DAY1: i32 = 20_759;

/// A private tansu with the topology, a registry, and a folder for the database and the files.
pub struct Env {
    pub stack: Stack,
    pub registry: TestRegistry,
    pub client: Registry,
    pub kafka: KafkaConfig,
    pub dir: tempfile::TempDir,
}

impl Env {
    pub async fn start() -> Env {
        tillstream_runtime::telemetry::init_tracing("finance-export-test");
        let (stack, kafka) = stack_with_topics(&[Svc::Tansu], Assignment::Static).await;
        let registry = TestRegistry::start().await.expect("registry");
        let client = registry.client();
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("stores.csv"),
            "store_id,time_zone,currency,legal_entity\n\
             s1,Europe/Berlin,EUR,TS-DE-01\ns2,Europe/Paris,EUR,TS-FR-01\n",
        )
        .unwrap();
        Env {
            stack,
            registry,
            client,
            kafka,
            dir,
        }
    }

    pub fn exports_dir(&self) -> PathBuf {
        self.dir.path().join("exports")
    }

    pub fn db_url(&self) -> String {
        self.dir.path().join("finance.db").display().to_string()
    }

    /// Config of an in-process instance: static assignment, small batches, quick export passes,
    /// a grace that never closes the test's (past) days by the clock, late lines waiting
    /// `late_flush_ms` for the next day export.
    pub fn config(&self, late_flush_ms: i64) -> Config {
        let mut c = Config {
            kafka: self.kafka.clone(),
            registry: self.registry.config(),
            ..Default::default()
        };
        c.database.url = self.db_url();
        c.stores_file = self.dir.path().join("stores.csv");
        c.destination.dir = self.exports_dir();
        c.batch.max_events = 50;
        c.batch.linger_ms = 10;
        c.close.check_every_ms = 100;
        c.close.grace_ms = 10 * 365 * 86_400_000;
        c.close.late_flush_ms = late_flush_ms;
        c
    }

    /// Environment for the binary (same settings as [`config`](Self::config)).
    pub fn bin_env(&self, late_flush_ms: i64) -> Vec<(String, String)> {
        let c = self.config(late_flush_ms);
        let p = "TILLSTREAM_FINANCE_EXPORT__";
        [
            ("KAFKA__BROKERS", c.kafka.brokers.clone()),
            ("KAFKA__ASSIGNMENT", "static".into()),
            ("KAFKA__IDEMPOTENCE", "false".into()),
            ("REGISTRY__URL", c.registry.url.clone()),
            ("DATABASE__URL", c.database.url.clone()),
            ("STORES_FILE", c.stores_file.display().to_string()),
            ("DESTINATION__DIR", c.destination.dir.display().to_string()),
            ("BATCH__MAX_EVENTS", "50".into()),
            ("BATCH__LINGER_MS", "10".into()),
            ("CLOSE__CHECK_EVERY_MS", "100".into()),
            ("CLOSE__GRACE_MS", c.close.grace_ms.to_string()),
            ("CLOSE__LATE_FLUSH_MS", late_flush_ms.to_string()),
        ]
        .into_iter()
        .map(|(k, v)| (format!("{p}{k}"), v))
        .collect()
    }
}

/// Produces store events to the deduplicated topic as the dedup does (keyed by store, in order).
pub async fn produce(env: &Env, events: &[DeviceEvent]) {
    let producer = kafka::producer(&env.kafka, "it-finance-producer").unwrap();
    for ev in events {
        let kind = ev.kind();
        let id = env
            .client
            .schema_id(kind, ev.schema_version() as u32)
            .await
            .unwrap();
        let payload = codec::frame(id, ev.encode().unwrap());
        // No headers, as the bridge writes them by default (`kafka.record_headers`).
        let record = rdkafka::producer::FutureRecord::to(EVENTS)
            .key(ev.store_id().as_bytes())
            .payload(&payload);
        // One at a time: the store's order on the topic is the order given.
        producer
            .send(record, Duration::from_secs(30))
            .await
            .map_err(|(e, _)| e)
            .unwrap();
    }
}

pub fn eur(m: i64) -> Money {
    Money::new(m, "EUR")
}

/// A sale of `lines` = (sku, qty, unit price, discount), 20% tax on the discounted amount.
pub fn sale(
    id: &str,
    store: &str,
    device: &str,
    seq: i64,
    date: i32,
    lines: &[(&str, i32, i64, i64)],
    method: TenderMethod,
) -> DeviceEvent {
    let mut order_lines = Vec::new();
    let (mut gross, mut disc, mut tax) = (0, 0, 0);
    for (i, (sku, qty, price, d)) in lines.iter().enumerate() {
        let g = price * i64::from(*qty);
        let t = (g - d) * 20 / 100;
        gross += g;
        disc += d;
        tax += t;
        order_lines.push(OrderLine {
            line_no: i as i32 + 1,
            sku: sku.to_string(),
            qty: *qty,
            unit_price: eur(*price),
            discounts: if *d > 0 {
                vec![Discount {
                    code: "P".into(),
                    amount: eur(*d),
                }]
            } else {
                vec![]
            },
            tax: eur(t),
        });
    }
    let net = gross - disc + tax;
    OrderCreated {
        event_id: id.into(),
        device_id: device.into(),
        store_id: store.into(),
        seq,
        occurred_at: 1_793_606_400_000 + seq * 60_000,
        schema_version: 2,
        order_id: format!("o-{id}"),
        business_date: date,
        lines: order_lines,
        tenders: vec![Tender {
            method,
            amount: eur(net),
            reference: None,
        }],
        totals: OrderTotals {
            gross: eur(gross),
            discounts: eur(disc),
            tax: eur(tax),
            net: eur(net),
        },
        loyalty_member_id: None,
    }
    .into()
}

/// A cash refund of one line: `amount` tax included, `tax` its tax part.
#[allow(clippy::too_many_arguments)]
pub fn refund(
    id: &str,
    store: &str,
    device: &str,
    seq: i64,
    date: i32,
    order_id: &str,
    amount: i64,
    tax: i64,
) -> DeviceEvent {
    OrderRefunded {
        event_id: id.into(),
        device_id: device.into(),
        store_id: store.into(),
        seq,
        occurred_at: 1_793_606_400_000 + seq * 60_000,
        schema_version: 1,
        refund_id: format!("r-{id}"),
        order_id: order_id.into(),
        business_date: date,
        lines: vec![RefundLine {
            line_no: 1,
            sku: "A".into(),
            qty: 1,
            amount: eur(amount),
            tax: eur(tax),
            restock: true,
        }],
        tenders: vec![Tender {
            method: TenderMethod::Cash,
            amount: eur(amount),
            reference: None,
        }],
        total: eur(amount),
        reason: "return".into(),
    }
    .into()
}

/// The day close a till computes from its own `events` (sales and refunds), for `date`.
pub fn close_of(
    id: &str,
    store: &str,
    device: &str,
    seq: i64,
    date: i32,
    first_seq: i64,
    events: &[&DeviceEvent],
) -> StoreDayClosed {
    let (mut orders, mut refunds) = (0, 0);
    let (mut gross, mut disc, mut tax, mut net, mut refunded) = (0, 0, 0, 0, 0);
    let mut tenders: std::collections::BTreeMap<String, (TenderMethod, i64)> = Default::default();
    for e in events {
        match e {
            DeviceEvent::OrderCreated(o) => {
                orders += 1;
                gross += o.totals.gross.amount_minor;
                disc += o.totals.discounts.amount_minor;
                tax += o.totals.tax.amount_minor;
                net += o.totals.net.amount_minor;
                for t in &o.tenders {
                    tenders
                        .entry(format!("{:?}", t.method))
                        .or_insert((t.method, 0))
                        .1 += t.amount.amount_minor;
                }
            }
            DeviceEvent::OrderRefunded(r) => {
                refunds += 1;
                refunded += r.total.amount_minor;
            }
            _ => {}
        }
    }
    StoreDayClosed {
        event_id: id.into(),
        device_id: device.into(),
        store_id: store.into(),
        seq,
        occurred_at: 1_793_606_400_000 + seq * 60_000,
        schema_version: 1,
        business_date: date,
        order_count: orders,
        refund_count: refunds,
        gross: eur(gross),
        discounts: eur(disc),
        tax: eur(tax),
        net: eur(net),
        refunds: eur(refunded),
        tender_totals: tenders
            .values()
            .map(|(m, a)| TenderTotal {
                method: *m,
                amount: eur(*a),
            })
            .collect(),
        first_seq,
        last_seq: seq - 1,
    }
}

/// Waits until `dir/store/name/manifest.json` exists; panics after `timeout` (a bound on a wait).
pub async fn wait_export(dir: &Path, store: &str, name: &str, timeout: Duration) -> PathBuf {
    let path = dir.join(store).join(name);
    let deadline = Instant::now() + timeout;
    while !path.join("manifest.json").exists() {
        assert!(
            Instant::now() < deadline,
            "export {store}/{name} did not appear within {timeout:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    path
}

/// Reads every export under `dir` with the independent reader (pyarrow); a read error fails.
pub fn read_exports(dir: &Path) -> serde_json::Value {
    let root = tillstream_integration_tests::repo();
    let ensure = root.join("services/finance-export/scripts/ensure-pyarrow");
    let out = std::process::Command::new(&ensure)
        .output()
        .expect("ensure-pyarrow runs");
    assert!(
        out.status.success(),
        "pyarrow cannot be installed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let pythonpath = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let out = std::process::Command::new("python3")
        .arg(root.join("services/finance-export/scripts/read_exports.py"))
        .arg(dir)
        .env("PYTHONPATH", pythonpath)
        .output()
        .expect("python3 runs");
    assert!(
        out.status.success(),
        "reader failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("reader prints JSON")
}

/// Every file under `dir` (relative path -> bytes), `.tmp` excluded.
pub fn snapshot(dir: &Path) -> std::collections::BTreeMap<String, Vec<u8>> {
    let mut out = std::collections::BTreeMap::new();
    fn walk(base: &Path, dir: &Path, out: &mut std::collections::BTreeMap<String, Vec<u8>>) {
        for e in std::fs::read_dir(dir).unwrap().flatten() {
            let p = e.path();
            let rel = p.strip_prefix(base).unwrap().display().to_string();
            if rel.starts_with(".tmp") {
                continue;
            }
            if p.is_dir() {
                walk(base, &p, out);
            } else {
                out.insert(rel, std::fs::read(&p).unwrap());
            }
        }
    }
    walk(dir, dir, &mut out);
    out
}
