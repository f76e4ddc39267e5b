//! Shared helpers of the store bridge's end-to-end tests: a private stack (tansu + mosquitto with
//! the project's config), bridge configs, the real binary, POS devices publishing JSON over MQTT v5,
//! and checks of what reached Kafka (missing, duplicates, per-device order).
#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::mqttbytes::v5::{Packet, PubAckReason};
use rumqttc::v5::{AsyncClient, Event, MqttOptions};
use tillstream_contracts::{DeviceEvent, EventKind, samples};
use tillstream_integration_tests::{
    MqttEndpoint, MqttSecurity, Record, Stack, Svc, TestRegistry, apply_topology, free_port,
};
use tillstream_store_bridge::Config;

pub const RAW: &str = "tillstream.store-events.raw";
pub const DLQ: &str = "tillstream.dead-letter";
pub const STORES: [&str; 4] = ["s001", "s002", "s003", "s004"];

pub fn fleet_csv() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config/fleet/devices.csv")
}

pub fn devices() -> Vec<(String, String)> {
    let mut v = Vec::new();
    for s in STORES {
        for d in 1..=2 {
            v.push((format!("{s}-d{d:02}"), s.to_string()));
        }
    }
    v
}

/// A private tansu + mosquitto (+ in-process registry) with the topology applied.
pub struct Env {
    pub stack: Stack,
    pub registry: TestRegistry,
    pub dir: tempfile::TempDir,
}

impl Drop for Env {
    fn drop(&mut self) {
        // STORE_BRIDGE_KEEP_LOGS=<dir>: keep the bridge's, tansu's and mosquitto's logs.
        if let Ok(to) = std::env::var("STORE_BRIDGE_KEEP_LOGS") {
            let to = PathBuf::from(to);
            let _ = std::fs::create_dir_all(&to);
            for (from, name) in [
                (self.dir.path().join("bridge.log"), "bridge.log"),
                (self.stack.dir().join("tansu/tansu.log"), "tansu.log"),
                (
                    self.stack.dir().join("mosquitto/mosquitto.log"),
                    "mosquitto.log",
                ),
            ] {
                let _ = std::fs::copy(from, to.join(name));
            }
        }
    }
}

impl Env {
    pub async fn start() -> Env {
        Env::start_with(MqttSecurity::Tls).await
    }

    /// With mosquitto's security chosen (plaintext only for the bench that compares the two).
    pub async fn start_with(mqtt: MqttSecurity) -> Env {
        let stack =
            Stack::start_with(&[Svc::Tansu, Svc::Mosquitto], Some(&fleet_csv()), mqtt).unwrap();
        apply_topology(&stack.kafka()).await.unwrap();
        let registry = TestRegistry::start().await.unwrap();
        let dir = tempfile::tempdir().unwrap();
        Env {
            stack,
            registry,
            dir,
        }
    }

    pub fn config(&self) -> Config {
        let mut c = Config::default();
        c.mqtt.url = self.stack.mqtt_url();
        c.mqtt.tls.dir = self.stack.mqtt_tls_dir().unwrap_or_default();
        c.mqtt.client_id = "it-store-bridge".into();
        c.mqtt.reconnect_delay_ms = 200;
        c.kafka = self.stack.kafka();
        c.registry = self.registry.config();
        c.fleet_file = fleet_csv();
        c.outbox.dir = self.dir.path().join("outbox");
        c.outbox.shutdown_drain_ms = 3_000;
        // Few large batches: tansu (SQLite) reads back a partition of many small batches slowly.
        c.outbox.producer_linger_ms = 100;
        c.outbox.delivery_timeout_ms = 15_000;
        c.ops.listen = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        c
    }

    pub fn read(&self, topic: &str) -> Vec<Record> {
        read_topic(&self.stack.kafka(), topic)
    }
}

/// The real binary, killed (SIGKILL) on drop.
pub struct BridgeProcess {
    pub child: Child,
    pub ops: String,
}

impl BridgeProcess {
    pub fn spawn(config: &Config, dir: &Path) -> BridgeProcess {
        let file = dir.join("bridge.toml");
        std::fs::write(
            &file,
            tillstream_runtime::config::to_config_file(config).unwrap(),
        )
        .unwrap();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("bridge.log"))
            .unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_tillstream-store-bridge"))
            .arg("--config")
            .arg(&file)
            .env("TILLSTREAM_LOG", "info,rdkafka=warn,rumqttc=warn")
            .env_remove("TILLSTREAM_KAFKA_BROKERS")
            .env_remove("TILLSTREAM_MQTT_URL")
            .env_remove("TILLSTREAM_REGISTRY_URL")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        BridgeProcess {
            child,
            ops: config.ops.listen.to_string(),
        }
    }

    pub fn kill9(&mut self) {
        let _ = self.child.kill(); // SIGKILL
        let _ = self.child.wait();
    }

    pub fn sigterm(&mut self) -> std::process::ExitStatus {
        let pid = self.child.id().to_string();
        Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                return s;
            }
            assert!(Instant::now() < deadline, "bridge ignored SIGTERM for 60 s");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for BridgeProcess {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            self.kill9();
        }
    }
}

/// GET on the ops endpoint: (status, body).
pub fn http_get(addr: &str, path: &str) -> Option<(u16, String)> {
    let mut s = TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: x\r\n\r\n").ok()?;
    let mut buf = String::new();
    s.read_to_string(&mut buf).ok()?;
    let status = buf.split_whitespace().nth(1)?.parse().ok()?;
    let body = buf.split("\r\n\r\n").nth(1).unwrap_or("").to_string();
    Some((status, body))
}

/// Waits until `/readyz` answers 200 (bounded).
pub async fn wait_ready(ops: &str, within: Duration) {
    let deadline = Instant::now() + within;
    loop {
        if matches!(http_get(ops, "/readyz"), Some((200, _))) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "bridge not ready within {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A metric's value from `/metrics` (sum over label sets).
pub fn metric(ops: &str, name: &str) -> Option<f64> {
    let (_, body) = http_get(ops, "/metrics")?;
    let mut total = None;
    for line in body.lines() {
        if line.starts_with('#') {
            continue;
        }
        let Some((key, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let metric = key.split('{').next().unwrap_or(key);
        if metric == name
            && let Ok(v) = value.parse::<f64>()
        {
            *total.get_or_insert(0.0) += v;
        }
    }
    total
}

/// Kinds a load test rotates through, with their topic suffix (all go to the raw topic).
const LOAD_KINDS: [(EventKind, &str); 5] = [
    (EventKind::OrderCreated, "pos/order.created"),
    (EventKind::InventoryAdjusted, "inventory/adjusted"),
    (EventKind::OrderCreated, "pos/order.created"),
    (EventKind::LoyaltyRedeemed, "loyalty/redeemed"),
    (
        EventKind::StockReservationRequested,
        "inventory/reservation.requested",
    ),
];

/// The event a device sends as its `seq`-th (topic, JSON). OrderCreated alternates v1 and v2.
pub fn load_event(store: &str, device: &str, seq: i64) -> (String, Vec<u8>) {
    let (kind, suffix) = LOAD_KINDS[(seq as usize) % LOAD_KINDS.len()];
    let mut e = samples::sample(kind, store, device, seq).unwrap();
    if let DeviceEvent::OrderCreated(o) = &mut e
        && seq % 2 == 0
    {
        o.schema_version = 1;
        o.loyalty_member_id = None;
    }
    (
        format!("store/{store}/{device}/{suffix}"),
        serde_json::to_vec(&e.to_json()).unwrap(),
    )
}

/// Messages a test client received: (topic, payload, retained).
pub type Received = Arc<std::sync::Mutex<Vec<(String, Vec<u8>, bool)>>>;

/// An MQTT v5 client for a device (or admin); its event loop runs in a task and counts PUBACKs.
pub struct Device {
    pub client: AsyncClient,
    pub acked: Arc<AtomicU64>,
    pub refused: Arc<std::sync::Mutex<Vec<PubAckReason>>>,
    pub received: Received,
    task: tokio::task::JoinHandle<()>,
}

impl Device {
    /// Logs in as `user` (with its certificate from the stack's PKI under TLS).
    pub async fn connect(mqtt: &MqttEndpoint, user: &str, client_id: &str) -> Device {
        let (transport, password) = mqtt.login(user);
        let mut o = MqttOptions::new(client_id, "127.0.0.1", mqtt.port);
        o.set_transport(transport)
            .set_credentials(user, password)
            .set_keep_alive(Duration::from_secs(30))
            .set_clean_start(true)
            .set_outgoing_inflight_upper_limit(500)
            .set_max_packet_size(Some(16 * 1024 * 1024));
        let (client, mut el) = AsyncClient::new(o, 1000);
        let acked = Arc::new(AtomicU64::new(0));
        let refused = Arc::new(std::sync::Mutex::new(Vec::new()));
        let received = Arc::new(std::sync::Mutex::new(Vec::new()));
        let (connected_tx, connected_rx) = tokio::sync::oneshot::channel();
        let task = {
            let (acked, refused, received) = (acked.clone(), refused.clone(), received.clone());
            tokio::spawn(async move {
                let mut connected = Some(connected_tx);
                loop {
                    match el.poll().await {
                        Ok(Event::Incoming(Packet::ConnAck(_))) => {
                            if let Some(tx) = connected.take() {
                                let _ = tx.send(());
                            }
                        }
                        Ok(Event::Incoming(Packet::PubAck(a))) => {
                            if !matches!(
                                a.reason,
                                PubAckReason::Success | PubAckReason::NoMatchingSubscribers
                            ) {
                                refused.lock().unwrap().push(a.reason);
                            }
                            acked.fetch_add(1, Ordering::SeqCst);
                        }
                        Ok(Event::Incoming(Packet::Publish(p))) => {
                            received.lock().unwrap().push((
                                String::from_utf8_lossy(&p.topic).into_owned(),
                                p.payload.to_vec(),
                                p.retain,
                            ));
                        }
                        Ok(_) => {}
                        Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
                    }
                }
            })
        };
        tokio::time::timeout(Duration::from_secs(10), connected_rx)
            .await
            .expect("device connects")
            .unwrap();
        Device {
            client,
            acked,
            refused,
            received,
            task,
        }
    }

    pub async fn device(mqtt: &MqttEndpoint, device: &str) -> Device {
        Device::connect(mqtt, device, &format!("it-{device}")).await
    }

    pub async fn publish(&self, topic: &str, payload: Vec<u8>) {
        self.client
            .publish(topic, QoS::AtLeastOnce, false, payload)
            .await
            .unwrap();
    }

    /// Waits until `n` PUBACKs arrived (bounded).
    pub async fn wait_acked(&self, n: u64, within: Duration) {
        let deadline = Instant::now() + within;
        while self.acked.load(Ordering::SeqCst) < n {
            assert!(
                Instant::now() < deadline,
                "only {} of {n} publishes acked by the broker",
                self.acked.load(Ordering::SeqCst)
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for Device {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Publishes `per_device` load events from every device of the dev fleet, `rate` events/s per
/// device at most (None = as fast as the broker acks). Returns once the broker acked all.
pub async fn publish_load(mqtt: MqttEndpoint, per_device: i64, rate: Option<u32>) {
    let mut tasks = Vec::new();
    for (device, store) in devices() {
        let mqtt = mqtt.clone();
        tasks.push(tokio::spawn(async move {
            let d = Device::device(&mqtt, &device).await;
            let started = Instant::now();
            for seq in 1..=per_device {
                let (topic, payload) = load_event(&store, &device, seq);
                d.publish(&topic, payload).await;
                if let Some(r) = rate {
                    let due = started + Duration::from_secs_f64(seq as f64 / r as f64);
                    tokio::time::sleep_until(due.into()).await;
                }
            }
            d.wait_acked(per_device as u64, Duration::from_secs(600))
                .await;
            assert!(d.refused.lock().unwrap().is_empty());
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
}

/// What reached Kafka compared with what the devices sent.
#[derive(Debug, Default)]
pub struct Delivery {
    pub records: usize,
    pub distinct: usize,
    pub duplicates: usize,
    pub missing: Vec<(String, i64)>,
    /// (device, seq) whose first copy came after the first copy of a later seq of that device.
    pub out_of_order: Vec<(String, i64)>,
    pub wrong_partition: usize,
}

/// Checks the raw topic: every (device, 1..=per_device) present; first copies in seq order within
/// each partition; one partition per store. Each record comes with its (device, seq), decoded from
/// its value ([`identities`]).
pub fn check_delivery(records: &[(Record, (String, i64))], per_device: i64) -> Delivery {
    let mut d = Delivery {
        records: records.len(),
        ..Default::default()
    };
    let mut sorted: Vec<&(Record, (String, i64))> = records.iter().collect();
    sorted.sort_by_key(|(r, _)| (r.partition, r.offset));
    let mut seen: BTreeSet<(String, i64)> = BTreeSet::new();
    let mut last_first: HashMap<String, i64> = HashMap::new();
    let mut partition_of: HashMap<String, BTreeSet<i32>> = HashMap::new();
    for (r, (device, seq)) in sorted {
        let (device, seq) = (device.clone(), *seq);
        partition_of
            .entry(r.key_str())
            .or_default()
            .insert(r.partition);
        if !seen.insert((device.clone(), seq)) {
            d.duplicates += 1;
            continue;
        }
        if let Some(prev) = last_first.insert(device.clone(), seq)
            && prev > seq
        {
            d.out_of_order.push((device, seq));
        }
    }
    d.distinct = seen.len();
    d.wrong_partition = partition_of.values().filter(|p| p.len() > 1).count();
    for (device, _) in devices() {
        for seq in 1..=per_device {
            if !seen.contains(&(device.clone(), seq)) {
                d.missing.push((device.clone(), seq));
            }
        }
    }
    d
}

/// Waits until the bridge has caught up: outbox empty and nothing new received for 2 s (bounded).
pub async fn wait_settled(ops: &str, within: Duration) {
    let deadline = Instant::now() + within;
    let mut last_in = -1.0;
    let mut quiet = 0;
    while quiet < 2 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let depth = metric(ops, "tillstream_store_bridge_outbox_depth").unwrap_or(-1.0);
        let received = metric(ops, "tillstream_store_bridge_messages_in_total").unwrap_or(-1.0);
        quiet = if depth == 0.0 && received == last_in {
            quiet + 1
        } else {
            0
        };
        last_in = received;
    }
}

/// Reads the raw topic until it holds at least `want` distinct events or `within` passes.
pub async fn wait_for_distinct(env: &Env, per_device: i64, within: Duration) -> Delivery {
    let want = per_device as usize * devices().len();
    let deadline = Instant::now() + within;
    loop {
        let kafka = env.stack.kafka();
        let records = tokio::task::spawn_blocking(move || read_topic(&kafka, RAW))
            .await
            .unwrap();
        let records = identities(env, records).await;
        let d = check_delivery(&records, per_device);
        if d.distinct >= want || Instant::now() >= deadline {
            return d;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// Each raw record with the (device, seq) its value names (the bridge writes no headers by
/// default, so the value is where the identity is). A record that does not decode panics: the raw
/// topic holds only events the bridge validated.
pub async fn identities(env: &Env, records: Vec<Record>) -> Vec<(Record, (String, i64))> {
    let client = env.registry.client();
    let mut out = Vec::with_capacity(records.len());
    for r in records {
        let e = tillstream_integration_tests::decode_event(&client, r.payload.as_deref().unwrap())
            .await
            .unwrap();
        let id = (e.device_id().to_string(), e.seq());
        out.push((r, id));
    }
    out
}

/// Counts of dead letters by reason, decoded through the registry.
pub async fn dead_letters(env: &Env) -> Vec<tillstream_contracts::DeadLetter> {
    let client = env.registry.client();
    let mut out = Vec::new();
    for r in env.read(DLQ) {
        let payload = r.payload.unwrap();
        let (id, datum) = tillstream_contracts::codec::unframe(&payload).unwrap();
        let w = client.writer_schema(id).await.unwrap();
        out.push(w.decode::<tillstream_contracts::DeadLetter>(datum).unwrap());
    }
    out
}

pub fn by_reason(dls: &[tillstream_contracts::DeadLetter]) -> BTreeMap<String, usize> {
    let mut m = BTreeMap::new();
    for d in dls {
        *m.entry(d.reason.clone()).or_default() += 1;
    }
    m
}

/// Reads every record of `topic` from the low watermark until each partition reaches its high
/// watermark (or nothing arrived for `IT_IDLE_S`, default 120 s), bounded by 10 minutes in all.
/// Slow on purpose-free grounds: tansu 0.6 (SQLite) answers each fetch in time proportional to the
/// partition's size and with about one record batch, so a partition of many small batches reads
/// back quadratically (20k records: ~40 s; 50k paced: ~4 min).
pub fn read_topic(kafka: &tillstream_runtime::kafka::KafkaConfig, topic: &str) -> Vec<Record> {
    use rdkafka::Message;
    use rdkafka::consumer::{BaseConsumer, Consumer};
    use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
    let mut cfg = kafka.client_config("it-reader");
    cfg.set("group.id", "it-reader")
        .set("enable.auto.commit", "false")
        .set(
            "fetch.wait.max.ms",
            std::env::var("IT_FETCH_WAIT").unwrap_or_else(|_| "100".into()),
        )
        .set(
            "max.partition.fetch.bytes",
            std::env::var("IT_FETCH_BYTES").unwrap_or_else(|_| "10485760".into()),
        )
        .set("fetch.max.bytes", "104857600")
        .set("receive.message.max.bytes", "105000000")
        .set("enable.partition.eof", "false");
    let consumer: BaseConsumer = cfg.create().unwrap();
    let md = consumer
        .fetch_metadata(Some(topic), Duration::from_secs(60))
        .unwrap();
    let t = md.topics().iter().find(|t| t.name() == topic).unwrap();
    let mut tpl = TopicPartitionList::new();
    let mut remaining = BTreeMap::new();
    for p in t.partitions() {
        let (lo, hi) = consumer
            .fetch_watermarks(topic, p.id(), Duration::from_secs(60))
            .unwrap();
        if hi > lo {
            remaining.insert(p.id(), hi);
            tpl.add_partition_offset(topic, p.id(), Offset::Offset(lo))
                .unwrap();
        }
    }
    let mut out = Vec::new();
    if remaining.is_empty() {
        return out;
    }
    consumer.assign(&tpl).unwrap();
    let deadline = Instant::now() + Duration::from_secs(600);
    let mut last = Instant::now();
    while !remaining.is_empty()
        && Instant::now() < deadline
        && last.elapsed()
            < Duration::from_secs(
                std::env::var("IT_IDLE_S")
                    .ok()
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(120),
            )
    {
        let Some(m) = consumer.poll(Duration::from_millis(200)) else {
            continue;
        };
        // A slow tansu times requests out now and then: keep reading (bounded above).
        let Ok(m) = m else {
            continue;
        };
        last = Instant::now();
        if let Some(hi) = remaining.get(&m.partition())
            && m.offset() + 1 >= *hi
        {
            remaining.remove(&m.partition());
        }
        out.push(Record::of(&m));
    }
    if !remaining.is_empty() {
        eprintln!("read_topic {topic}: stopped short of the high watermark on {remaining:?}");
    }
    out
}
