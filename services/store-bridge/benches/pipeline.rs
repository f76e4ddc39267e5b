//! Store bridge throughput: drains a backlog of N QoS 1 events (default 50,000;
//! `STORE_BRIDGE_BENCH_EVENTS`) through mosquitto → bridge (the release binary, a separate process)
//! → tansu, and prints, from the same run:
//!   - mosquitto's own drain rate of the same backlog to a subscriber that only acks,
//!   - the broker's own produce rate of the same records (the bridge's producer settings; no
//!     headers, as the bridge writes them by default), and once with the five descriptive headers
//!     (`kafka.record_headers = "descriptive"`) to show what headers cost the broker,
//!   - a naive Python peer (`naive_bridge.py`: paho-mqtt + confluent-kafka, raw JSON, ack after
//!     delivery) draining the same backlog into the same broker,
//!   - the bridge's rate, its ratio to the slower of mosquitto and the broker, and to the peer,
//!   - the bridge's CPU (utime+stime from /proc/<pid>/stat) and events/s per core,
//!
//! against tansu with SQLite storage (the durable local stack), an in-memory sink (librdkafka's
//! mock cluster), and tansu with `memory://` storage when a build with it is available
//! (`tillstream_integration_tests::bench::TansuMemory`: `TILLSTREAM_TANSU_MEMORY_BIN`), plus an
//! in-process breakdown (conversion, outbox append) of where the bridge's CPU goes.
//! Figures are printed, never asserted. Run: `cargo bench -p tillstream-store-bridge --bench pipeline`.

#[path = "../tests/common/mod.rs"]
mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use futures::StreamExt;
use rdkafka::producer::{DeliveryFuture, FutureRecord};
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::mqttbytes::v5::{Filter, Packet};
use rumqttc::v5::{AsyncClient, Event, MqttOptions};
use tillstream_integration_tests::bench::{TansuMemory, cpu_seconds, machine_busy_seconds};
use tillstream_integration_tests::{MqttEndpoint, MqttSecurity, Svc, TestRegistry, free_port};
use tillstream_runtime::kafka::{self, KafkaConfig, make_headers};
use tillstream_store_bridge::Config;
use tillstream_store_bridge::outbox::{self, WriterMsg};
use tillstream_store_bridge::uplink::{Converted, Converter};

/// The fast sink: librdkafka's in-process mock cluster (real TCP listener the bridge process can
/// reach, data in memory), available whatever tansu is installed.
struct FastSink {
    mock: rdkafka::mocking::MockCluster<'static, rdkafka::producer::DefaultProducerContext>,
}

impl FastSink {
    fn start() -> FastSink {
        let mock = rdkafka::mocking::MockCluster::new(1).unwrap();
        for (topic, partitions) in [
            (RAW, 12),
            ("tillstream.device-health.raw", 12),
            (DLQ, 12),
            ("tillstream.catalog.downlink", 6),
        ] {
            mock.create_topic(topic, partitions, 1).unwrap();
        }
        FastSink { mock }
    }

    fn kafka(&self) -> KafkaConfig {
        KafkaConfig {
            brokers: self.mock.bootstrap_servers(),
            session_timeout_ms: 6_000,
            ..KafkaConfig::default()
        }
    }
}

/// The backlog: every device's events, interleaved.
fn backlog(n: usize) -> Vec<(String, String, Vec<u8>)> {
    let devs = devices();
    let per = n.div_ceil(devs.len());
    let mut v = Vec::with_capacity(n);
    for seq in 1..=per as i64 {
        for (device, store) in &devs {
            if v.len() == n {
                break;
            }
            let (topic, payload) = load_event(store, device, seq);
            v.push((device.clone(), topic, payload));
        }
    }
    v
}

/// Publishes the backlog (QoS 1, one connection per device) and waits for every PUBACK.
async fn publish_backlog(mqtt: &MqttEndpoint, events: &[(String, String, Vec<u8>)]) -> Duration {
    let started = Instant::now();
    let mut tasks = Vec::new();
    for (device, _) in devices() {
        let mine: Vec<(String, Vec<u8>)> = events
            .iter()
            .filter(|e| e.0 == device)
            .map(|e| (e.1.clone(), e.2.clone()))
            .collect();
        let mqtt = mqtt.clone();
        tasks.push(tokio::spawn(async move {
            let d = Device::connect(&mqtt, &device, &format!("bench-{device}")).await;
            let n = mine.len() as u64;
            for (topic, payload) in mine {
                d.publish(&topic, payload).await;
            }
            d.wait_acked(n, Duration::from_secs(600)).await;
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    started.elapsed()
}

/// A persistent v5 session for `client_id` subscribed to the store topics (so the broker queues).
async fn create_session(
    mqtt: &MqttEndpoint,
    client_id: &str,
    receive_max: u16,
) -> (AsyncClient, rumqttc::v5::EventLoop) {
    let (transport, password) = mqtt.login("bridge");
    let mut o = MqttOptions::new(client_id, "127.0.0.1", mqtt.port);
    o.set_transport(transport)
        .set_credentials("bridge", password)
        .set_clean_start(false)
        .set_session_expiry_interval(Some(3600))
        .set_receive_maximum(Some(receive_max))
        .set_manual_acks(true)
        .set_max_packet_size(Some(16 * 1024 * 1024))
        .set_request_channel_capacity(receive_max as usize * 2 + 64);
    AsyncClient::new(o, receive_max as usize * 2 + 64)
}

/// Creates the persistent session `client_id` subscribed to the store topics, leaves, and publishes
/// the backlog: mosquitto queues all of it for the session's next connection.
async fn queue_backlog_for(
    mqtt: &MqttEndpoint,
    client_id: &str,
    receive_max: u16,
    events: &[(String, String, Vec<u8>)],
) {
    let (client, mut el) = create_session(mqtt, client_id, receive_max).await;
    client
        .subscribe_many(vec![Filter::new("store/+/#", QoS::AtLeastOnce)])
        .await
        .unwrap();
    loop {
        if let Ok(Event::Incoming(Packet::SubAck(_))) = el.poll().await {
            break;
        }
    }
    client.disconnect().await.unwrap();
    let _ = tokio::time::timeout(Duration::from_secs(1), el.poll()).await;
    publish_backlog(mqtt, events).await;
}

/// mosquitto alone: how fast it drains `n` queued messages to a subscriber that only acks.
async fn mosquitto_drain(mqtt: &MqttEndpoint, events: &[(String, String, Vec<u8>)]) -> f64 {
    let id = "bench-ack-only";
    queue_backlog_for(mqtt, id, 10_000, events).await;
    let (client, mut el) = create_session(mqtt, id, 10_000).await;
    let n = events.len();
    let mut got = 0usize;
    let mut t0 = None;
    while got < n {
        match el.poll().await {
            Ok(Event::Incoming(Packet::Publish(p))) => {
                t0.get_or_insert_with(Instant::now);
                got += 1;
                client.try_ack(&p).unwrap();
            }
            Ok(_) => {}
            Err(e) => panic!("ack-only subscriber: {e}"),
        }
    }
    let secs = t0.unwrap().elapsed().as_secs_f64();
    client.disconnect().await.ok();
    n as f64 / secs
}

/// The Kafka records the bridge would write for the backlog (same bytes, headers, keys).
fn records(converter: &Converter, events: &[(String, String, Vec<u8>)]) -> Vec<outbox::Record> {
    events
        .iter()
        .filter_map(
            |(_, topic, payload)| match converter.convert(topic, payload, 1, false, 0) {
                Ok(Converted::Store(r)) => Some(r),
                _ => None,
            },
        )
        .collect()
}

/// A drain rate measured two ways: over the whole run (start-up and tail included) and over its
/// steady middle, from 10% to 90% of the records delivered (start-up and tail excluded).
#[derive(Default, Clone, Copy)]
struct Rate {
    whole: f64,
    steady: f64,
    /// Seconds to the first 10%, and from 90% to the end.
    ramp: f64,
    tail: f64,
}

/// Watches a delivered count grow towards `n` and notes when it passes 10% and 90%.
struct Progress {
    n: usize,
    started: Instant,
    t10: Option<Instant>,
    t90: Option<Instant>,
}

impl Progress {
    fn new(n: usize, started: Instant) -> Progress {
        Progress {
            n,
            started,
            t10: None,
            t90: None,
        }
    }

    fn at(&mut self, delivered: usize, now: Instant) {
        if self.t10.is_none() && delivered * 10 >= self.n {
            self.t10 = Some(now);
        }
        if self.t90.is_none() && delivered * 10 >= self.n * 9 {
            self.t90 = Some(now);
        }
    }

    fn rate(&self, end: Instant) -> Rate {
        let steady = match (self.t10, self.t90) {
            (Some(a), Some(b)) if b > a => 0.8 * self.n as f64 / (b - a).as_secs_f64(),
            _ => 0.0,
        };
        let secs = |a: Option<Instant>, b: Option<Instant>| match (a, b) {
            (Some(a), Some(b)) => b.saturating_duration_since(a).as_secs_f64(),
            _ => 0.0,
        };
        Rate {
            whole: self.n as f64 / (end - self.started).as_secs_f64(),
            steady,
            ramp: secs(Some(self.started), self.t10),
            tail: secs(self.t90, Some(end)),
        }
    }
}

/// tansu alone: produce rate of the same records with the bridge's producer settings.
async fn tansu_produce(kafka: &KafkaConfig, recs: &[outbox::Record], linger_ms: u32) -> Rate {
    let cfg = tillstream_store_bridge::drainer::producer_config(kafka, linger_ms, 60_000);
    let p = kafka::producer(&cfg, "bench-baseline").unwrap();
    let started = Instant::now();
    // Deliveries are counted by their own task as they complete (so the 10% and 90% marks are
    // seen when they happen, not when the sending loop gets round to polling).
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<DeliveryFuture>();
    let n = recs.len();
    let counter = tokio::spawn(async move {
        let mut progress = Progress::new(n, started);
        let mut futs = futures::stream::FuturesUnordered::new();
        let (mut delivered, mut open) = (0, true);
        while delivered < n {
            tokio::select! {
                f = rx.recv(), if open => match f {
                    Some(f) => futs.push(f),
                    None => open = false,
                },
                Some(r) = futs.next(), if !futs.is_empty() => {
                    assert!(matches!(r, Ok(Ok(_))), "baseline delivery failed");
                    delivered += 1;
                    progress.at(delivered, Instant::now());
                }
            }
        }
        progress.rate(Instant::now())
    });
    for r in recs {
        let pairs: Vec<(&str, &str)> = r
            .headers
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        loop {
            let rec = FutureRecord::to(&r.topic)
                .key(&r.key)
                .payload(&r.value)
                .headers(make_headers(&pairs));
            match p.send_result(rec) {
                Ok(f) => {
                    tx.send(f).unwrap();
                    break;
                }
                // librdkafka's queue is full: wait for deliveries to make room.
                Err(_) => tokio::time::sleep(Duration::from_millis(1)).await,
            }
        }
    }
    drop(tx);
    counter.await.unwrap()
}

/// The Python that runs the naive peer: `TILLSTREAM_NAIVE_PEER_PYTHON`, or a venv under `.stack/`
/// made on first use with pinned paho-mqtt and confluent-kafka from PyPI. `Err` says why there is
/// none (the bench then prints that instead of the peer's row).
fn naive_peer_python() -> Result<std::path::PathBuf, String> {
    if let Ok(p) = std::env::var("TILLSTREAM_NAIVE_PEER_PYTHON") {
        return Ok(p.into());
    }
    let venv = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.stack/venv-naive-peer");
    let python = venv.join("bin/python");
    let ready = |py: &Path| {
        Command::new(py)
            .args(["-c", "import paho.mqtt.client, confluent_kafka"])
            .status()
            .is_ok_and(|s| s.success())
    };
    if ready(&python) {
        return Ok(python);
    }
    let run = |cmd: &mut Command| match cmd.status() {
        Ok(s) if s.success() => Ok(()),
        other => Err(format!("{cmd:?}: {other:?}")),
    };
    run(Command::new("python3").arg("-m").arg("venv").arg(&venv))?;
    run(Command::new(venv.join("bin/pip")).args([
        "install",
        "-q",
        "paho-mqtt==2.1.0",
        "confluent-kafka==2.16.1",
    ]))?;
    if ready(&python) {
        Ok(python)
    } else {
        Err(format!(
            "{} cannot import paho-mqtt and confluent-kafka",
            python.display()
        ))
    }
}

/// The naive peer draining the backlog into `kafka`: its events/s (first message to last delivery).
async fn naive_peer_drain(
    python: &Path,
    port: u16,
    kafka: &KafkaConfig,
    name: &str,
    events: &[(String, String, Vec<u8>)],
    receive_max: u16,
) -> Result<f64, String> {
    let id = format!("bench-naive-{name}");
    queue_backlog_for(
        &MqttEndpoint {
            port,
            tls_dir: None,
        },
        &id,
        receive_max,
        events,
    )
    .await;
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/naive_bridge.py");
    let mut cmd = tokio::process::Command::new(python);
    cmd.arg(script)
        .args(["--mqtt-port", &port.to_string()])
        .args([
            "--client-id",
            &id,
            "--user",
            "bridge",
            "--password",
            "bridge-dev",
        ])
        .args(["--brokers", &kafka.brokers, "--topic", RAW])
        .args(["--count", &events.len().to_string()])
        .args(["--receive-maximum", &receive_max.to_string()])
        .kill_on_drop(true);
    let out = cmd.output().await.map_err(|e| e.to_string())?;
    let line = String::from_utf8_lossy(&out.stdout);
    let v: serde_json::Value = serde_json::from_str(line.trim()).map_err(|e| {
        format!(
            "{e}: stdout {line:?}, stderr {:?}",
            String::from_utf8_lossy(&out.stderr)
        )
    })?;
    if !out.status.success() {
        return Err(format!("did not drain the backlog: {v}"));
    }
    Ok(v["rate"].as_f64().unwrap_or(0.0))
}

/// CPU seconds of the broker, of mosquitto and of the whole machine over one phase.
#[derive(Default, Clone, Copy)]
struct Others {
    broker: f64,
    mosquitto: f64,
    machine: f64,
}

impl Others {
    fn now(broker: Option<u32>, mosquitto: Option<u32>) -> Others {
        Others {
            broker: broker.map(cpu_seconds).unwrap_or(0.0),
            mosquitto: mosquitto.map(cpu_seconds).unwrap_or(0.0),
            machine: machine_busy_seconds(),
        }
    }

    fn since(self, start: Others) -> Others {
        Others {
            broker: self.broker - start.broker,
            mosquitto: self.mosquitto - start.mosquitto,
            machine: self.machine - start.machine,
        }
    }

    fn show(&self, secs: f64) -> String {
        format!(
            "broker {:.2} cores, mosquitto {:.2}, machine busy {:.2} of 2",
            self.broker / secs,
            self.mosquitto / secs,
            self.machine / secs
        )
    }
}

struct BridgeRun {
    rate: Rate,
    cpu: f64,
    secs: f64,
    commit_avg_ms: f64,
    batch_avg: f64,
    delivery_avg_ms: f64,
    others: Others,
}

/// The bridge binary draining the backlog into `kafka`.
async fn bridge_drain(
    mqtt: &MqttEndpoint,
    base: &Config,
    kafka: &KafkaConfig,
    name: &str,
    dir: &Path,
    events: &[(String, String, Vec<u8>)],
    pids: (Option<u32>, Option<u32>),
) -> BridgeRun {
    let mut cfg = base.clone();
    cfg.kafka = kafka.clone();
    cfg.mqtt.client_id = format!("bench-bridge-{name}");
    cfg.outbox.dir = dir.join(format!("outbox-{name}"));
    cfg.downlink.enabled = false;
    if let Some(w) = std::env::var("STORE_BRIDGE_BENCH_IN_FLIGHT")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        cfg.outbox.max_in_flight = w;
    }
    cfg.ops.listen = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let bin = env!("CARGO_BIN_EXE_tillstream-store-bridge");
    let spawn = |cfg: &Config| {
        let file = dir.join(format!("bench-{name}.toml"));
        std::fs::write(
            &file,
            tillstream_runtime::config::to_config_file(cfg).unwrap(),
        )
        .unwrap();
        Command::new(bin)
            .arg("--config")
            .arg(&file)
            .env("TILLSTREAM_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap()
    };
    let ops = cfg.ops.listen.to_string();
    // First run: creates the persistent session, then stops.
    let mut child = spawn(&cfg);
    wait_ready(&ops, Duration::from_secs(60)).await;
    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    child.wait().unwrap();
    publish_backlog(mqtt, events).await;
    // Second run: drains the backlog.
    let mut child = spawn(&cfg);
    let pid = child.id();
    let n = events.len() as f64;
    let (mut t0, mut c0) = (None, 0.0);
    let mut o0 = Others::default();
    let mut progress = Progress::new(events.len(), Instant::now());
    let deadline = Instant::now() + Duration::from_secs(900);
    let (t1, c1) = loop {
        assert!(
            Instant::now() < deadline,
            "bridge did not drain the backlog"
        );
        let cpu = cpu_seconds(pid);
        let received = metric(&ops, "tillstream_store_bridge_messages_in_total").unwrap_or(0.0);
        if t0.is_none() && received > 0.0 {
            let now = Instant::now();
            t0 = Some(now);
            c0 = cpu;
            o0 = Others::now(pids.0, pids.1);
            progress.started = now;
        }
        let out = metric(&ops, "tillstream_store_bridge_messages_out_total").unwrap_or(0.0);
        progress.at(out as usize, Instant::now());
        if out >= n {
            break (Instant::now(), cpu_seconds(pid));
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    let secs = t1.duration_since(t0.unwrap()).as_secs_f64();
    let get = |m: &str| metric(&ops, m).unwrap_or(0.0);
    let run = BridgeRun {
        rate: progress.rate(t1),
        cpu: c1 - c0,
        secs,
        commit_avg_ms: 1000.0 * get("tillstream_store_bridge_outbox_commit_seconds_sum")
            / get("tillstream_store_bridge_outbox_commit_seconds_count").max(1.0),
        batch_avg: get("tillstream_store_bridge_outbox_commit_batch_events_sum")
            / get("tillstream_store_bridge_outbox_commit_batch_events_count").max(1.0),
        delivery_avg_ms: 1000.0 * get("tillstream_store_bridge_kafka_delivery_seconds_sum")
            / get("tillstream_store_bridge_kafka_delivery_seconds_count").max(1.0),
        others: Others::now(pids.0, pids.1).since(o0),
    };
    Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .unwrap();
    let _ = child.wait();
    run
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let n: usize = std::env::var("STORE_BRIDGE_BENCH_EVENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(50_000);
    if std::env::args().any(|a| a == "--list") {
        return; // `cargo test --benches` lists benches; nothing to list here
    }
    // Plaintext MQTT, as the naive peer speaks it; the TLS phase at the end compares the two.
    let env = Env::start_with(MqttSecurity::Plaintext).await;
    let fast = FastSink::start();
    let registry = TestRegistry::start().await.unwrap();
    let base = {
        let mut c = env.config();
        c.registry = registry.config();
        c
    };
    let events = backlog(n);
    let bytes: usize = events.iter().map(|e| e.2.len()).sum();
    println!(
        "store-bridge pipeline bench: {n} events ({} devices, avg JSON payload {} B)",
        devices().len(),
        bytes / n
    );

    // In-process breakdown: conversion (classify + Avro + framing) and outbox append (fsync'd).
    let client = registry.client();
    client
        .warm_up(&[
            tillstream_contracts::EventKind::OrderCreated,
            tillstream_contracts::EventKind::InventoryAdjusted,
            tillstream_contracts::EventKind::LoyaltyRedeemed,
            tillstream_contracts::EventKind::StockReservationRequested,
            tillstream_contracts::EventKind::DeadLetter,
        ])
        .await
        .unwrap();
    let mut converter = Converter {
        classifier: Arc::new(tillstream_store_bridge::validate::Classifier {
            routes: tillstream_store_bridge::routes::Routes::new(&base.effective_routes()).unwrap(),
            fleet: tillstream_store_bridge::fleet::Fleet::load(&base.fleet_file)
                .unwrap()
                .into(),
            ignore: base.mqtt.ignore.clone(),
            limits: base.limits.clone(),
        }),
        registry: client.clone(),
        dead_letters: kafka::DeadLetters::new(
            kafka::producer(&env.stack.kafka(), "bench-dl").unwrap(),
            "tillstream.dead-letter",
            client.clone(),
            "store-bridge",
            "bench_dead_letters_total",
        ),
        dead_letter: base.dead_letter.clone(),
        record_headers: base.kafka.record_headers,
    };
    let me = std::process::id();
    let (c0, t0) = (cpu_seconds(me), Instant::now());
    let recs = records(&converter, &events);
    let convert_us = 1e6 * t0.elapsed().as_secs_f64() / n as f64;
    let convert_cpu_us = 1e6 * (cpu_seconds(me) - c0) / n as f64;
    assert_eq!(recs.len(), n);
    converter.record_headers = kafka::RecordHeaders::Descriptive;
    let recs_with_headers = records(&converter, &events);
    let avro_bytes: usize = recs.iter().map(|r| r.value.len()).sum();

    let outbox_dir = tempfile::tempdir().unwrap();
    let (ack_tx, mut ack_rx) = tokio::sync::mpsc::unbounded_channel::<Vec<u64>>();
    let ob = outbox::start(
        &tillstream_store_bridge::config::OutboxConfig {
            dir: outbox_dir.path().to_path_buf(),
            ..Default::default()
        },
        ack_tx,
    )
    .unwrap();
    let (c0, t0) = (cpu_seconds(me), Instant::now());
    for (i, r) in recs.iter().enumerate() {
        ob.tx.send(WriterMsg::Append(r.clone(), i as u64)).unwrap();
    }
    let mut acked = 0;
    while acked < n {
        acked += ack_rx.recv().await.unwrap().len();
    }
    ob.tx
        .send(WriterMsg::Delivered((1..=n as u64).collect()))
        .unwrap();
    ob.tx.send(WriterMsg::Shutdown).unwrap();
    let _ = tokio::task::spawn_blocking(move || ob.thread.join()).await;
    let outbox_secs = t0.elapsed().as_secs_f64();
    let outbox_cpu_us = 1e6 * (cpu_seconds(me) - c0) / n as f64;

    // Baselines and the bridge, SQLite tansu first (the durable stack), then memory tansu.
    let port = env.stack.mqtt_port();
    let mqtt = env.stack.mqtt_endpoint();
    let mosq = mosquitto_drain(&mqtt, &events).await;
    let linger = base.outbox.producer_linger_ms;
    let mut rows = Vec::new();
    let tansu_memory = TansuMemory::start()
        .await
        .inspect_err(|e| println!("tansu memory: {e}"))
        .ok();
    let mut sinks = vec![
        ("tansu-sqlite", env.stack.kafka()),
        ("mock-memory", fast.kafka()),
    ];
    if let Some(t) = &tansu_memory {
        sinks.push(("tansu-memory", t.kafka()));
    }
    let mosquitto_pid = env.stack.pid(Svc::Mosquitto);
    let python = naive_peer_python();
    let mut header_cost = None;
    for (name, kafka_cfg) in sinks {
        let broker_pid = match name {
            "tansu-sqlite" => env.stack.pid(Svc::Tansu),
            "tansu-memory" => tansu_memory.as_ref().map(|t| t.pid()),
            _ => None,
        };
        let o0 = Others::now(broker_pid, None);
        let tansu = tansu_produce(&kafka_cfg, &recs, linger).await;
        let base_others = Others::now(broker_pid, None).since(o0);
        let base_secs = n as f64 / tansu.whole;
        if name == "tansu-sqlite" {
            header_cost = Some(tansu_produce(&kafka_cfg, &recs_with_headers, linger).await);
        }
        let naive = match &python {
            Ok(py) => {
                naive_peer_drain(
                    py,
                    port,
                    &kafka_cfg,
                    name,
                    &events,
                    base.mqtt.receive_maximum,
                )
                .await
            }
            Err(e) => Err(format!("no Python for the naive peer: {e}")),
        };
        let run = bridge_drain(
            &mqtt,
            &base,
            &kafka_cfg,
            name,
            env.dir.path(),
            &events,
            (broker_pid, mosquitto_pid),
        )
        .await;
        rows.push((name, tansu, run, base_others, base_secs, naive));
    }

    println!();
    println!(
        "in-process, per event: convert (route+JSON+validate+Avro+frame) {convert_us:.2} us wall / {convert_cpu_us:.2} us CPU; avg Avro record {} B",
        avro_bytes / n
    );
    println!(
        "in-process outbox: {n} appends fsync'd + acked + deleted in {outbox_secs:.2} s = {:.0}/s, {outbox_cpu_us:.2} us CPU per event",
        n as f64 / outbox_secs
    );
    println!("mosquitto drain to an ack-only subscriber: {mosq:.0} events/s");
    if let Some(h) = header_cost {
        println!(
            "tansu-sqlite produce of the same records with the five descriptive headers: {:.0}/s (steady {:.0})",
            h.whole, h.steady
        );
    }
    for (name, tansu, run, base_others, base_secs, naive) in &rows {
        let whole = run.rate.whole / mosq.min(tansu.whole);
        let steady = run.rate.steady / mosq.min(tansu.steady);
        println!(
            "{name:12}: produce {:.0}/s (steady {:.0}) | bridge {:.0}/s (steady {:.0}) in {:.2} s | ratio to min(mosquitto, tansu) = {whole:.2} whole run, {steady:.2} steady 10-90% | bridge CPU {:.2} s = {:.0} events/s per core | commit avg {:.2} ms x {:.0} events | delivery avg {:.1} ms",
            tansu.whole,
            tansu.steady,
            run.rate.whole,
            run.rate.steady,
            run.secs,
            run.cpu,
            n as f64 / run.cpu.max(0.01),
            run.commit_avg_ms,
            run.batch_avg,
            run.delivery_avg_ms
        );
        match naive {
            Ok(rate) => println!(
                "{:12}  naive Python peer (paho + confluent-kafka, raw JSON, ack after delivery): {rate:.0}/s | bridge / peer = {:.2}",
                "",
                run.rate.whole / rate.max(1.0)
            ),
            Err(e) => println!("{:12}  naive Python peer: not run ({e})", ""),
        }
        println!(
            "{:12}  first 10% / last 10%: baseline {:.2} s / {:.2} s, bridge {:.2} s / {:.2} s",
            "", tansu.ramp, tansu.tail, run.rate.ramp, run.rate.tail
        );
        println!(
            "{:12}  CPU during the baseline: {}; during the bridge: {}",
            "",
            base_others.show(*base_secs),
            run.others.show(run.secs)
        );
    }

    // TLS: the same backlog through mosquitto's TLS listener (every client with its own
    // certificate) and through the plaintext one, back to back into the in-memory sink, so the
    // MQTT side is what differs.
    let env_tls = Env::start_with(MqttSecurity::Tls).await;
    let base_tls = {
        let mut c = env_tls.config();
        c.registry = registry.config();
        c
    };
    let mqtt_tls = env_tls.stack.mqtt_endpoint();
    let mosq_tls = mosquitto_drain(&mqtt_tls, &events).await;
    let plain = bridge_drain(
        &mqtt,
        &base,
        &fast.kafka(),
        "plaintext-again",
        env.dir.path(),
        &events,
        (None, mosquitto_pid),
    )
    .await;
    let tls = bridge_drain(
        &mqtt_tls,
        &base_tls,
        &fast.kafka(),
        "tls",
        env_tls.dir.path(),
        &events,
        (None, env_tls.stack.pid(Svc::Mosquitto)),
    )
    .await;
    println!(
        "TLS vs plaintext MQTT (mock-memory sink, same run): mosquitto drain {mosq_tls:.0} vs {mosq:.0} events/s ({:.2}) | bridge {:.0} vs {:.0} events/s ({:.2}) | bridge CPU {:.2} vs {:.2} s ({:.0} vs {:.0} events/s per core)",
        mosq_tls / mosq.max(1.0),
        tls.rate.whole,
        plain.rate.whole,
        tls.rate.whole / plain.rate.whole.max(1.0),
        tls.cpu,
        plain.cpu,
        n as f64 / tls.cpu.max(0.01),
        n as f64 / plain.cpu.max(0.01),
    );
}
