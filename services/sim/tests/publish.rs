//! The simulator's publisher against a real mosquitto (the project's config: auth, ACL, persistence):
//! every planned publish reaches the broker, in per-device order, under each device's own user.

use std::collections::BTreeMap;
use std::time::Duration;

use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use tillstream_integration_tests::{Stack, Svc};
use tillstream_sim::plan::{FleetSpec, PoisonSpec, Step, generate};
use tillstream_sim::publish::{PublishConfig, publish};

#[tokio::test(flavor = "multi_thread")]
async fn every_planned_publish_reaches_the_broker_in_device_order() {
    let spec = FleetSpec {
        events: 1_500,
        stores: 3,
        devices_per_store: 2,
        poison: PoisonSpec {
            bad_json: 2,
            ..Default::default()
        },
        ..FleetSpec::default()
    };
    let plan = generate(&spec);
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("devices.csv");
    std::fs::write(&csv, plan.fleet_csv()).unwrap();
    let stack = Stack::start(&[Svc::Mosquitto], Some(&csv)).unwrap();

    // An observer subscribed to everything before the fleet starts.
    let mut opts = MqttOptions::new("observer", "127.0.0.1", stack.mqtt_port());
    let (transport, password) = stack.mqtt_login("admin");
    opts.set_transport(transport)
        .set_credentials("admin", password)
        .set_max_packet_size(16 << 20, 16 << 20)
        .set_keep_alive(Duration::from_secs(30));
    let (client, mut events) = AsyncClient::new(opts, 1024);
    client.subscribe("store/#", QoS::AtLeastOnce).await.unwrap();
    client.subscribe("fleet/#", QoS::AtLeastOnce).await.unwrap();
    loop {
        if let Event::Incoming(Packet::SubAck(_)) = events.poll().await.unwrap() {
            break;
        }
    }
    let _ = events.poll().await;

    let expected: usize = plan.publishes();
    let collector = tokio::spawn(async move {
        let mut got: BTreeMap<String, Vec<Vec<u8>>> = BTreeMap::new();
        let mut n = 0;
        while n < expected {
            match tokio::time::timeout(Duration::from_secs(60), events.poll()).await {
                Ok(Ok(Event::Incoming(Packet::Publish(p)))) => {
                    got.entry(p.topic.clone())
                        .or_default()
                        .push(p.payload.to_vec());
                    n += 1;
                }
                Ok(Ok(_)) => {}
                Ok(Err(e)) => panic!("observer: {e}"),
                Err(_) => break,
            }
        }
        got
    });

    let cfg = PublishConfig {
        port: stack.mqtt_port(),
        tls_dir: stack.mqtt_tls_dir(),
        offline_for: Duration::from_millis(50),
        timeout: Duration::from_secs(120),
        // A broker alone: nothing issues receipts.
        await_receipts: false,
        ..Default::default()
    };
    let report = publish(&plan, &cfg).await.unwrap();
    assert_eq!(report.acked as usize, expected, "{report:?}");
    let got = collector.await.unwrap();

    // Per device (the observer sees one topic per device for health, a shared one per store for the
    // rest): compare per topic the exact sequence of payloads each device published.
    let mut want: BTreeMap<String, Vec<Vec<u8>>> = BTreeMap::new();
    for d in &plan.devices {
        for s in &d.steps {
            if let Step::Publish(p) = s {
                want.entry(p.topic.clone())
                    .or_default()
                    .push(p.payload.clone());
            }
        }
    }
    assert_eq!(got.values().map(Vec::len).sum::<usize>(), expected);
    for (topic, payloads) in &want {
        let mut w = payloads.clone();
        let mut g = got.get(topic).cloned().unwrap_or_default();
        w.sort();
        g.sort();
        assert_eq!(g.len(), w.len(), "{topic}");
        assert!(g == w, "{topic}: payloads differ");
    }
    // Health topics carry one device each: there the order must be exactly the plan's order.
    for (topic, payloads) in want.iter().filter(|(t, _)| t.starts_with("fleet/")) {
        assert_eq!(got.get(topic), Some(payloads), "{topic} out of order");
    }
}
