//! End-to-end on the real stack (tansu + mosquitto with the project's ACL): dead letters for every
//! kind of bad input, store identity (ACL + payload), the catalog downlink, and a clean SIGTERM.

mod common;

use std::time::{Duration, Instant};

use common::*;
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::mqttbytes::v5::PubAckReason;
use tillstream_contracts::{DeviceEvent, EventKind, codec, samples};
use tillstream_runtime::CancellationToken;
use tillstream_runtime::kafka::{self, make_headers};

fn order_json(store: &str, device: &str, seq: i64) -> Vec<u8> {
    let e: DeviceEvent = samples::order(store, device, seq, 2).into();
    serde_json::to_vec(&e.to_json()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn each_bad_input_is_dead_lettered_once_with_its_reason_and_the_good_events_arrive() {
    let env = Env::start().await;
    let cfg = env.config();
    let ops = cfg.ops.listen.to_string();
    let token = CancellationToken::new();
    let running = tillstream_store_bridge::start(cfg, token.clone())
        .await
        .unwrap();
    wait_ready(&ops, Duration::from_secs(60)).await;

    let dev = Device::device(&env.stack.mqtt_endpoint(), "s001-d01").await;
    let t = "store/s001/s001-d01/pos/order.created";
    let good = |seq| order_json("s001", "s001-d01", seq);
    let with = |seq, f: &dyn Fn(&mut serde_json::Value)| {
        let mut v: serde_json::Value = serde_json::from_slice(&good(seq)).unwrap();
        f(&mut v);
        serde_json::to_vec(&v).unwrap()
    };
    let mut v1 = samples::order("s001", "s001-d01", 4, 2);
    v1.schema_version = 1;
    v1.loyalty_member_id = None;
    let mut oversize = b"{\"pad\":\"".to_vec();
    oversize.resize(300 * 1024, b'x');
    oversize.extend_from_slice(b"\"}");

    // (topic, payload, expected reason or None for a good event)
    let inputs: Vec<(&str, Vec<u8>, Option<&str>)> = vec![
        (t, good(1), None),
        (t, oversize, Some("payload_too_large")),
        (t, good(2), None),
        (t, b"{\"event_id\": ".to_vec(), Some("bad_json")),
        (
            t,
            with(10, &|v| {
                v.as_object_mut().unwrap().remove("totals");
            }),
            Some("missing_field"),
        ),
        (
            t,
            with(11, &|v| v["seq"] = serde_json::json!("eleven")),
            Some("wrong_type"),
        ),
        (
            "store/s001/s001-d01/pos/order.voided",
            good(12),
            Some("unknown_topic"),
        ),
        (
            t,
            with(13, &|v| v["schema_version"] = serde_json::json!(3)),
            Some("unknown_schema_version"),
        ),
        (
            t,
            order_json("s002", "s002-d01", 14),
            Some("store_mismatch"),
        ),
        (
            t,
            with(15, &|v| {
                v["totals"]["net"]["currency"] = serde_json::json!("XXZ")
            }),
            Some("invalid_value"),
        ),
        (
            t,
            // In another device's name on its own device level (the broker would refuse the
            // other device's topic; `unknown_device` is covered by the fleet reload test).
            order_json("s001", "s001-d99", 16),
            Some("device_mismatch"),
        ),
        (t, good(3), None),
        (
            t,
            serde_json::to_vec(&DeviceEvent::from(v1).to_json()).unwrap(),
            None,
        ),
    ];
    for (topic, payload, _) in &inputs {
        dev.publish(topic, payload.clone()).await;
    }
    dev.wait_acked(inputs.len() as u64, Duration::from_secs(30))
        .await;
    assert!(dev.refused.lock().unwrap().is_empty());

    let want_dl = inputs.iter().filter(|i| i.2.is_some()).count();
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut dls;
    let mut raw;
    loop {
        dls = dead_letters(&env).await;
        raw = env.read(RAW);
        if (dls.len() >= want_dl && raw.len() >= 4) || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    // Settle, then read again: exactly one each.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let dls = dead_letters(&env).await;
    let raw_again = env.read(RAW);
    assert_eq!(raw.len(), raw_again.len());

    let mut want: Vec<&str> = inputs.iter().filter_map(|i| i.2).collect();
    want.sort();
    let mut got: Vec<&str> = dls.iter().map(|d| d.reason.as_str()).collect();
    got.sort();
    assert_eq!(got, want, "one dead letter per bad input");
    for (topic, payload, reason) in &inputs {
        let Some(reason) = reason else { continue };
        let d = dls.iter().find(|d| d.reason == *reason).unwrap();
        assert_eq!(d.source_topic, *topic, "{reason}");
        assert_eq!(d.service, "store-bridge");
        if *reason == "payload_too_large" {
            assert_eq!(d.payload.len(), 256 * 1024);
            assert_eq!(&d.payload[..], &payload[..256 * 1024]);
            assert!(d.detail.contains("cut"), "{}", d.detail);
        } else {
            assert_eq!(&d.payload, payload, "{reason}: raw bytes kept");
        }
        assert!(!d.detail.is_empty());
    }
    let sm = dls.iter().find(|d| d.reason == "store_mismatch").unwrap();
    assert_eq!(sm.device_id.as_deref(), Some("s002-d01"));

    // The good ones, in order, v1 and v2 both, decodable.
    let client = env.registry.client();
    let mut seqs = Vec::new();
    let mut sorted = raw_again.clone();
    sorted.sort_by_key(|r| r.offset);
    for r in &sorted {
        let e = tillstream_integration_tests::decode_event(&client, r.payload.as_deref().unwrap())
            .await
            .unwrap();
        assert_eq!(r.key_str(), "s001");
        // The default `kafka.record_headers = "payload_only"`: the value says it all.
        assert!(r.headers.is_empty(), "{:?}", r.headers);
        assert_eq!(e.kind().name(), "OrderCreated");
        seqs.push((e.seq(), e.schema_version()));
    }
    assert_eq!(seqs, vec![(1, 2), (2, 2), (3, 2), (4, 1)]);

    // The recorder is process-wide (other tests in this binary count too): at least ours.
    let dead = metric(&ops, "tillstream_store_bridge_dead_letters_total").unwrap_or(0.0);
    assert!(dead as usize >= want_dl, "{dead}");
    token.cancel();
    running.wait().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_device_cannot_publish_in_another_device_or_store_name_and_a_payload_claiming_one_is_dead_lettered()
 {
    let env = Env::start().await;
    let mut cfg = env.config();
    // This test also covers the descriptive headers (the other tests run the payload-only default).
    cfg.kafka.record_headers = tillstream_runtime::kafka::RecordHeaders::Descriptive;
    let ops = cfg.ops.listen.to_string();
    let token = CancellationToken::new();
    let running = tillstream_store_bridge::start(cfg, token.clone())
        .await
        .unwrap();
    wait_ready(&ops, Duration::from_secs(60)).await;

    let mqtt = env.stack.mqtt_endpoint();
    let intruder = Device::device(&mqtt, "s001-d01").await;
    // The broker refuses every topic that is not the connection's own device level: another
    // store's device, another device of its own store, another device's heartbeat, and the v1
    // store-level topic (no device level at all), each with a payload that is the victim's in
    // every respect.
    let refused_topics = [
        (
            "store/s002/s002-d01/pos/order.created",
            order_json("s002", "s002-d01", 1),
        ),
        (
            "store/s001/s001-d02/pos/order.created",
            order_json("s001", "s001-d02", 1),
        ),
        (
            "store/s001/pos/order.created",
            order_json("s001", "s001-d02", 2),
        ),
    ];
    let health = samples::sample(EventKind::DeviceHealth, "s002", "s002-d01", 1).unwrap();
    let health = serde_json::to_vec(&health.to_json()).unwrap();
    // One at a time: rumqttc drops the connection's other in-flight publishes when one is refused.
    for (n, (topic, payload)) in refused_topics
        .into_iter()
        .chain([("fleet/s002-d01/health.status", health)])
        .enumerate()
    {
        intruder.publish(topic, payload).await;
        intruder
            .wait_acked(n as u64 + 1, Duration::from_secs(10))
            .await;
    }
    assert_eq!(
        *intruder.refused.lock().unwrap(),
        vec![PubAckReason::NotAuthorized; 4]
    );
    // On its own topic, a payload claiming to be s002's device: dead-lettered (store first).
    let own = "store/s001/s001-d01/pos/order.created";
    intruder
        .publish(own, order_json("s002", "s002-d01", 2))
        .await;
    // On its own topic, a payload in the name of another device of its store.
    intruder
        .publish(own, order_json("s001", "s001-d02", 3))
        .await;
    // And a legitimate one afterwards.
    intruder
        .publish(own, order_json("s001", "s001-d01", 4))
        .await;
    intruder.wait_acked(7, Duration::from_secs(10)).await;

    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let dls = dead_letters(&env).await;
        let raw = env.read(RAW);
        if (dls.len() >= 2 && !raw.is_empty()) || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let dls = dead_letters(&env).await;
    assert_eq!(
        by_reason(&dls),
        [
            ("device_mismatch".to_string(), 1),
            ("store_mismatch".to_string(), 1)
        ]
        .into(),
        "{dls:?}"
    );
    let raw = env.read(RAW);
    assert_eq!(raw.len(), 1, "only the legitimate event reaches Kafka");
    assert_eq!(raw[0].key_str(), "s001");
    let e = tillstream_integration_tests::decode_event(
        &env.registry.client(),
        raw[0].payload.as_deref().unwrap(),
    )
    .await
    .unwrap();
    assert_eq!((e.device_id(), e.seq()), ("s001-d01", 4));
    let h = |k: &str| raw[0].header(k).map(str::to_string);
    assert_eq!(
        [
            h("tillstream-event-type"),
            h("tillstream-event-id"),
            h("tillstream-device-id"),
            h("tillstream-seq"),
            h("tillstream-producer")
        ],
        [
            Some("OrderCreated".into()),
            Some(e.event_id().to_string()),
            Some("s001-d01".into()),
            Some("4".into()),
            Some("store-bridge".into())
        ]
    );
    token.cancel();
    running.wait().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_downlink_delivers_each_stores_catalog_retained_on_its_own_topic_only() {
    let env = Env::start().await;
    let cfg = env.config();
    let ops = cfg.ops.listen.to_string();
    let token = CancellationToken::new();
    let running = tillstream_store_bridge::start(cfg, token.clone())
        .await
        .unwrap();
    wait_ready(&ops, Duration::from_secs(60)).await;

    let client = env.registry.client();
    let producer = kafka::producer(&env.stack.kafka(), "it-downlink").unwrap();
    let id = client
        .schema_id(EventKind::PriceListApproved, 1)
        .await
        .unwrap();
    let doc =
        |store: &str| samples::sample(EventKind::PriceListApproved, store, "pricing", 7).unwrap();
    let send = |key: String, e: &DeviceEvent| {
        let payload = codec::frame(id, e.encode().unwrap());
        let producer = producer.clone();
        async move {
            let h = make_headers(&[("tillstream-event-type", "PriceListApproved")]);
            kafka::send_with_retry(
                &producer,
                "tillstream.catalog.downlink",
                key.as_bytes(),
                &payload,
                Some(h),
                &CancellationToken::new(),
            )
            .await
            .unwrap();
        }
    };
    send("s001/prices".into(), &doc("s001")).await;
    send("s002/prices".into(), &doc("s002")).await;
    // A document under s003's key that is really s004's: never published, dead-lettered.
    send("s003/prices".into(), &doc("s004")).await;

    // Subscribing late is fine: the documents are retained.
    let mqtt = env.stack.mqtt_endpoint();
    let deadline = Instant::now() + Duration::from_secs(90);
    let admin = Device::connect(&mqtt, "admin", "it-admin").await;
    admin
        .client
        .subscribe("store/+/catalog/#", QoS::AtLeastOnce)
        .await
        .unwrap();
    while admin.received.lock().unwrap().len() < 2 {
        assert!(Instant::now() < deadline, "catalog documents not delivered");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let pos = Device::device(&mqtt, "s001-d01").await;
    pos.client
        .subscribe("store/s001/catalog/#", QoS::AtLeastOnce)
        .await
        .unwrap();
    // Allowed to subscribe, but the ACL delivers nothing of another store.
    pos.client
        .subscribe("store/s002/catalog/#", QoS::AtLeastOnce)
        .await
        .unwrap();
    while pos.received.lock().unwrap().is_empty() {
        assert!(
            Instant::now() < deadline,
            "the store's own catalog not delivered"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // The dead letter for the mismatched key shows the downlink went past it.
    while !dead_letters(&env)
        .await
        .iter()
        .any(|d| d.reason == "store_mismatch")
    {
        assert!(
            Instant::now() < deadline,
            "mismatched document not dead-lettered"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;

    let got = pos.received.lock().unwrap().clone();
    assert_eq!(got.len(), 1, "{got:?}");
    let (topic, payload, retained) = &got[0];
    assert_eq!(topic, "store/s001/catalog/prices");
    assert!(retained);
    let json: serde_json::Value = serde_json::from_slice(payload).unwrap();
    assert_eq!(json, doc("s001").to_json());
    let parsed = DeviceEvent::from_json(EventKind::PriceListApproved, payload).unwrap();
    assert_eq!(parsed, doc("s001"));

    let mut topics: Vec<String> = admin
        .received
        .lock()
        .unwrap()
        .iter()
        .map(|r| r.0.clone())
        .collect();
    topics.sort();
    assert_eq!(
        topics,
        vec!["store/s001/catalog/prices", "store/s002/catalog/prices"]
    );
    token.cancel();
    running.wait().await.unwrap();
}

/// /readyz must not say ready before the uplink has subscribed (devices publishing earlier would
/// lose messages: mosquitto discards a message nobody subscribes to). Every check is declared by
/// the time `start` returns, before any component task ran (the bridge runs on a one-thread runtime
/// of its own, so none has been polled yet), and with MQTT unreachable the bridge stays not ready
/// once Kafka and the registry are.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn not_ready_until_the_uplink_has_subscribed() {
    let env = Env::start().await;
    let mut cfg = env.config();
    // Nothing listens there.
    cfg.mqtt.url = format!(
        "mqtt://127.0.0.1:{}",
        tillstream_integration_tests::free_port()
    );
    tokio::task::spawn_blocking(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let token = CancellationToken::new();
            let running = tillstream_store_bridge::start(cfg, token.clone())
                .await
                .unwrap();
            let checks = running.health.checks();
            for c in ["kafka", "registry", "mqtt", "downlink"] {
                assert!(
                    checks.iter().any(|x| x == c),
                    "{c} not declared: {checks:?}"
                );
            }
            // The ops endpoint is served by this same thread: ask it from the blocking pool.
            let ops = running.ops_addr.to_string();
            let readyz = || {
                let ops = ops.clone();
                async move {
                    tokio::task::spawn_blocking(move || http_get(&ops, "/readyz"))
                        .await
                        .unwrap()
                        .expect("ops answers")
                }
            };
            let deadline = Instant::now() + Duration::from_secs(60);
            loop {
                let (_, body) = readyz().await;
                let v: serde_json::Value = serde_json::from_str(&body).unwrap();
                if v["kafka"]["ready"] == true && v["registry"]["ready"] == true {
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "kafka/registry never ready: {body}"
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            let (code, body) = readyz().await;
            assert_eq!(code, 503, "ready without an MQTT subscription: {body}");
            assert!(!running.health.is_ready());
            token.cancel();
            let _ = running.wait().await;
        });
    })
    .await
    .unwrap();
    drop(env);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigterm_stores_and_acks_what_it_took_and_exits_cleanly() {
    let env = Env::start().await;
    let cfg = env.config();
    let mut bridge = BridgeProcess::spawn(&cfg, env.dir.path());
    wait_ready(&bridge.ops, Duration::from_secs(60)).await;
    let per_device = 500;
    publish_load(env.stack.mqtt_endpoint(), per_device, None).await;
    let status = bridge.sigterm();
    assert!(status.success(), "exit status {status:?}");
    // Whatever it did not deliver before exiting is in its outbox or still with the broker:
    // a new run completes the set.
    let mut bridge = BridgeProcess::spawn(&cfg, env.dir.path());
    wait_ready(&bridge.ops, Duration::from_secs(60)).await;
    wait_settled(&bridge.ops, Duration::from_secs(120)).await;
    let d = wait_for_distinct(&env, per_device, Duration::from_secs(120)).await;
    assert!(
        d.missing.is_empty(),
        "missing {:?}",
        &d.missing[..d.missing.len().min(10)]
    );
    assert!(d.out_of_order.is_empty(), "{:?}", d.out_of_order);
    assert_eq!(d.wrong_partition, 0);
    eprintln!(
        "sigterm: {} records, {} duplicates",
        d.records, d.duplicates
    );
    assert!(bridge.sigterm().success());
}

/// A device added to the fleet file is accepted without a restart, and what the bridge refused
/// before (`unknown_device`) is re-driven through its validation by `tillctl dead-letters redrive`:
/// into the raw topic once per re-drive (the dedup passes each event id on once); a device still
/// unknown is refused again, as a new dead letter.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_device_added_to_the_fleet_file_is_accepted_live_and_its_dead_letters_re_driven() {
    let env = Env::start().await;
    let mut cfg = env.config();
    // The bridge's fleet lacks two devices mosquitto lets in: s003-d02 (added below) and
    // s004-d02 (never added).
    let fleet_file = env.dir.path().join("devices.csv");
    let without: String = devices()
        .iter()
        .filter(|(d, _)| d != "s003-d02" && d != "s004-d02")
        .map(|(d, s)| format!("{d},{s}\n"))
        .collect();
    std::fs::write(&fleet_file, &without).unwrap();
    cfg.fleet_file = fleet_file.clone();
    let ops = cfg.ops.listen.to_string();
    let token = CancellationToken::new();
    let running = tillstream_store_bridge::start(cfg.clone(), token.clone())
        .await
        .unwrap();
    wait_ready(&ops, Duration::from_secs(60)).await;

    let t3 = "store/s003/s003-d02/pos/order.created";
    let t4 = "store/s004/s004-d02/pos/order.created";
    let added = Device::device(&env.stack.mqtt_endpoint(), "s003-d02").await;
    let never = Device::device(&env.stack.mqtt_endpoint(), "s004-d02").await;
    added.publish(t3, order_json("s003", "s003-d02", 1)).await;
    never.publish(t4, order_json("s004", "s004-d02", 1)).await;
    added.wait_acked(1, Duration::from_secs(30)).await;
    never.wait_acked(1, Duration::from_secs(30)).await;
    let deadline = Instant::now() + Duration::from_secs(60);
    while dead_letters(&env).await.len() < 2 {
        assert!(
            Instant::now() < deadline,
            "the two unknown devices' events were not dead-lettered"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    assert_eq!(
        by_reason(&dead_letters(&env).await),
        [("unknown_device".to_string(), 2)].into()
    );
    assert!(
        env.read(RAW).is_empty(),
        "nothing of unknown devices reaches the raw topic"
    );

    // Onboard s003-d02: the bridge picks the file up while it runs.
    std::fs::write(&fleet_file, format!("{without}s003-d02,s003\n")).unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while metric(&ops, "tillstream_store_bridge_fleet_devices")
        != Some((devices().len() - 1) as f64)
    {
        assert!(Instant::now() < deadline, "the fleet file was not reloaded");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    added.publish(t3, order_json("s003", "s003-d02", 2)).await;
    added.wait_acked(2, Duration::from_secs(30)).await;

    // Re-drive the unknown_device dead letters with the bridge's configuration as it is now.
    let kafka_cfg = env.stack.kafka();
    let registry = env.registry.client();
    let selection = tillctl::dead_letters::Selection {
        reason: Some("unknown_device".into()),
        ..Default::default()
    };
    let revalidator = tillstream_store_bridge::redrive::Revalidator::new(&cfg, registry.clone())
        .await
        .unwrap();
    let redrive = |dry_run: bool| {
        let (kafka_cfg, registry, revalidator, selection) = (
            kafka_cfg.clone(),
            registry.clone(),
            revalidator.clone(),
            selection.clone(),
        );
        async move {
            let stored =
                tillctl::dead_letters::read(&kafka_cfg, &registry, DLQ, Duration::from_secs(30))
                    .await
                    .unwrap();
            tillctl::dead_letters::redrive(
                &kafka_cfg,
                &registry,
                &revalidator,
                &stored,
                &selection,
                dry_run,
                Duration::from_secs(30),
            )
            .await
            .unwrap()
        }
    };
    let dry = redrive(true).await;
    assert!(dry.dry_run);
    assert_eq!(dry.selected, 2);
    assert_eq!(dry.written, [(RAW.to_string(), 1)].into());
    assert_eq!(
        dry.refused_again,
        [("unknown_device".to_string(), 1)].into()
    );

    let first = redrive(false).await;
    assert_eq!(first.written, [(RAW.to_string(), 1)].into(), "{first:?}");
    assert_eq!(
        first.refused_again,
        [("unknown_device".to_string(), 1)].into()
    );
    // A second re-drive (the new dead letter of s004-d02 is selected too) writes s003-d02's event
    // again: the same event id, which the dedup passes on once.
    let second = redrive(false).await;
    assert_eq!(second.selected, 3, "{second:?}");
    assert_eq!(second.written, [(RAW.to_string(), 1)].into());
    assert_eq!(
        second.refused_again,
        [("unknown_device".to_string(), 2)].into()
    );

    // Raw: seq 2 (accepted live) once, seq 1 (re-driven) twice with one event id.
    let deadline = Instant::now() + Duration::from_secs(60);
    let raw = loop {
        let raw = env.read(RAW);
        if raw.len() >= 3 || Instant::now() > deadline {
            break raw;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    let mut seen = std::collections::BTreeMap::<(i64, String), usize>::new();
    for r in &raw {
        let e =
            tillstream_integration_tests::decode_event(&registry, r.payload.as_deref().unwrap())
                .await
                .unwrap();
        assert_eq!(e.device_id(), "s003-d02");
        assert_eq!(r.key_str(), "s003");
        *seen.entry((e.seq(), e.event_id().to_string())).or_default() += 1;
    }
    let counts: Vec<(i64, usize)> = seen.iter().map(|((seq, _), n)| (*seq, *n)).collect();
    assert_eq!(counts, vec![(1, 2), (2, 1)], "{seen:?}");
    // The dead-letter topic keeps every dead letter (the dry run wrote none): 2 originals, 1
    // refused again by the first re-drive, 2 by the second.
    assert_eq!(
        by_reason(&dead_letters(&env).await),
        [("unknown_device".to_string(), 5)].into()
    );
    token.cancel();
    running.wait().await.unwrap();
}
