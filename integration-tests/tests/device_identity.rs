//! Device identity on the local stack's mosquitto (TLS only, a certificate per client from the
//! stack's CA, `tillctl fleet` maintaining it): who can connect, as whom, and for how long.
//! Needs the workspace's binaries built (`tillctl`; `cargo build --workspace --bins`).

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::mqttbytes::v5::{Packet, PubAckReason};
use rumqttc::v5::{AsyncClient, Event, MqttOptions};
use tillstream_integration_tests::{MqttSecurity, Stack, Svc};
use tillstream_runtime::mqtt::TlsFiles;

/// Whether an attempt was refused by the broker (not merely unanswered).
fn refused_by_broker(o: &Outcome) -> bool {
    matches!(o, Outcome::Refused(e) if !e.contains("no answer"))
}

/// What became of one connection attempt that publishes one QoS 1 message on `topic`.
#[derive(Debug, PartialEq, Eq)]
enum Outcome {
    /// PUBACK with this reason (connected and published).
    Published(PubAckReason),
    /// No CONNACK: the TLS handshake or the login failed.
    Refused(String),
    /// Logged in, then the connection ended before the PUBACK.
    Dropped(String),
}

async fn attempt(port: u16, transport: rumqttc::Transport, user: &str, topic: &str) -> Outcome {
    static ATTEMPT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = ATTEMPT.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    let mut o = MqttOptions::new(format!("identity-{user}-{n}"), "127.0.0.1", port);
    o.set_transport(transport)
        .set_credentials(user, "device-dev")
        .set_keep_alive(Duration::from_secs(10))
        // rumqttc's default limit is below mosquitto's PUBACK with a reason: it would drop the
        // connection instead of showing the refusal.
        .set_max_packet_size(Some(1 << 20))
        .set_clean_start(true);
    let (client, mut el) = AsyncClient::new(o, 10);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let mut connected = false;
    let outcome = loop {
        match tokio::time::timeout_at(deadline, el.poll()).await {
            Err(_) => break Outcome::Refused("no answer within 10 s".into()),
            Ok(Err(e)) if connected => break Outcome::Dropped(e.to_string()),
            Ok(Err(e)) => break Outcome::Refused(e.to_string()),
            Ok(Ok(Event::Incoming(Packet::ConnAck(_)))) => {
                connected = true;
                client
                    .publish(topic, QoS::AtLeastOnce, false, b"{}".to_vec())
                    .await
                    .unwrap();
            }
            Ok(Ok(Event::Incoming(Packet::PubAck(a)))) => break Outcome::Published(a.reason),
            Ok(Ok(_)) => {}
        }
    };
    let _ = client.try_disconnect();
    outcome
}

/// Every topic published under `store/#` that reaches an operator's subscription.
struct Observer {
    topics: Arc<Mutex<Vec<String>>>,
    _client: AsyncClient,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Observer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn observe(stack: &Stack) -> Observer {
    let (transport, password) = stack.mqtt_login("admin");
    let mut o = MqttOptions::new("identity-observer", "127.0.0.1", stack.mqtt_port());
    o.set_transport(transport)
        .set_credentials("admin", password)
        .set_max_packet_size(Some(1 << 20));
    let (client, mut el) = AsyncClient::new(o, 10);
    client.subscribe("store/#", QoS::AtLeastOnce).await.unwrap();
    loop {
        if let Event::Incoming(Packet::SubAck(_)) = el.poll().await.unwrap() {
            break;
        }
    }
    let topics = Arc::new(Mutex::new(Vec::new()));
    let task = {
        let topics = topics.clone();
        tokio::spawn(async move {
            loop {
                if let Ok(Event::Incoming(Packet::Publish(p))) = el.poll().await {
                    topics
                        .lock()
                        .unwrap()
                        .push(String::from_utf8_lossy(&p.topic).into_owned());
                }
            }
        })
    };
    Observer {
        topics,
        _client: client,
        task,
    }
}

impl Observer {
    /// Waits (bounded) until `topic` was seen `n` times.
    async fn wait_for(&self, topic: &str, n: usize) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.count(topic) < n {
            assert!(
                Instant::now() < deadline,
                "{topic} seen {} times, not {n}",
                self.count(topic)
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn count(&self, topic: &str) -> usize {
        self.topics
            .lock()
            .unwrap()
            .iter()
            .filter(|t| *t == topic)
            .count()
    }
}

/// A publish the broker must not deliver: refused with PUBACK 135 (or the connection dropped on
/// the refusal, as rumqttc's rustls and mosquitto sometimes do); what reached the observer is
/// checked at the end of the test.
fn not_published(o: &Outcome) -> bool {
    matches!(
        o,
        Outcome::Published(PubAckReason::NotAuthorized) | Outcome::Dropped(_)
    )
}

fn tls(files: &TlsFiles) -> rumqttc::Transport {
    files.transport().unwrap()
}

fn own_topic(device: &str) -> String {
    let store = device.split('-').next().unwrap();
    format!("store/{store}/{device}/pos/order.created")
}

fn tillctl(stack: &Stack, args: &[&str]) -> String {
    let out = stack.tillctl(args).unwrap();
    assert!(
        out.status.success(),
        "tillctl {args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn fleet_file(dir: &Path) -> PathBuf {
    let f = dir.join("devices.csv");
    std::fs::copy(
        tillstream_integration_tests::repo().join("config/fleet/devices.csv"),
        &f,
    )
    .unwrap();
    f
}

/// The broker takes a client's identity from a certificate of the fleet's CA, whose key the client
/// proves it holds in the handshake: no device can log in as another, not with a certificate of
/// its own making (another CA), not without one, and not in plaintext; a user name naming another
/// device changes nothing. (Presenting another device's certificate without its key fails in the
/// client's own TLS library before it reaches the broker, so there is nothing to test there.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_cannot_log_in_with_another_devices_certificate_or_without_one() {
    let stack = Stack::start(&[Svc::Mosquitto], None).unwrap();
    let pki = stack.mqtt_tls_dir().unwrap();
    let port = stack.mqtt_port();
    let d1 = TlsFiles::in_pki_dir(&pki, "s001-d01");
    let observer = observe(&stack).await;
    let (mine, victim) = (own_topic("s001-d01"), own_topic("s001-d02"));

    // The control: its own certificate, its own topic.
    assert_eq!(
        attempt(port, tls(&d1), "s001-d01", &mine).await,
        Outcome::Published(PubAckReason::Success)
    );
    observer.wait_for(&mine, 1).await;
    // The user name a client sends is ignored: the certificate names it. s001-d01 claiming to be
    // s001-d02 is still s001-d01, refused on s001-d02's topic.
    let o = attempt(port, tls(&d1), "s001-d02", &victim).await;
    assert!(not_published(&o), "{o:?}");
    // Under its own name it may not write another device's topic either.
    let o = attempt(port, tls(&d1), "s001-d01", &victim).await;
    assert!(not_published(&o), "{o:?}");
    // A certificate for s001-d02 from a CA of its own: refused.
    let dir = tempfile::tempdir().unwrap();
    let rogue = dir.path().join("rogue");
    // A CA of its own, with the stack's tillctl: the same kind of certificate, another issuer.
    for args in [&["init"][..], &["sync", "--service", "s001-d02"][..]] {
        let out = stack
            .tillctl(&[&["fleet", "--pki", &rogue.display().to_string()][..], args].concat())
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let forged = TlsFiles {
        ca_file: d1.ca_file.clone(),
        ..TlsFiles::in_pki_dir(&rogue, "s001-d02")
    };
    let refused = attempt(port, tls(&forged), "s001-d02", &own_topic("s001-d02")).await;
    assert!(refused_by_broker(&refused), "{refused:?}");

    // TLS without a client certificate: refused.
    let no_cert = rumqttc::Transport::tls_with_config(rumqttc::TlsConfiguration::Simple {
        ca: std::fs::read(&d1.ca_file).unwrap(),
        alpn: None,
        client_auth: None,
    });
    let refused = attempt(port, no_cert, "s001-d02", &own_topic("s001-d02")).await;
    assert!(refused_by_broker(&refused), "{refused:?}");

    // Plaintext, with the password that works on a plaintext stack: refused.
    let refused = attempt(
        port,
        rumqttc::Transport::Tcp,
        "s001-d02",
        &own_topic("s001-d02"),
    )
    .await;
    assert!(refused_by_broker(&refused), "{refused:?}");
    // Nothing reached s001-d02's topic: after a second control message has arrived, none of the
    // refused publishes (which all ended before it started) can still be on its way.
    assert_eq!(
        attempt(port, tls(&d1), "s001-d01", &mine).await,
        Outcome::Published(PubAckReason::Success)
    );
    observer.wait_for(&mine, 2).await;
    assert_eq!(observer.count(&victim), 0, "published in s001-d02's name");

    // The same password on a plaintext stack logs in: the refusals above are TLS's doing.
    let plain = Stack::start_with(&[Svc::Mosquitto], None, MqttSecurity::Plaintext).unwrap();
    assert_eq!(
        attempt(
            plain.mqtt_port(),
            rumqttc::Transport::Tcp,
            "s001-d02",
            &own_topic("s001-d02")
        )
        .await,
        Outcome::Published(PubAckReason::NoMatchingSubscribers)
    );
}

/// Waits (bounded) until a new connection with `files` is refused: mosquitto applies a reloaded
/// revocation list from the next connection it accepts after handling the SIGHUP.
async fn until_refused(port: u16, files: &TlsFiles, device: &str) -> Outcome {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let o = attempt(port, tls(files), device, &own_topic(device)).await;
        if matches!(o, Outcome::Refused(_)) || Instant::now() > deadline {
            return o;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// `tillctl fleet add` onboards a till (fleet file, ACL, certificate shown once); `rotate` gives it
/// a second certificate while the first keeps working (the till stays online and can switch when
/// it likes); revoking the old serial refuses only it; revoking the device refuses the new one too
/// and takes it out of the fleet file and the ACL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotation_keeps_a_device_online_and_a_revoked_one_is_refused() {
    let stack = Stack::start(&[Svc::Mosquitto], None).unwrap();
    let port = stack.mqtt_port();
    let dir = tempfile::tempdir().unwrap();
    let fleet = fleet_file(dir.path());
    let fleet_arg = fleet.display().to_string();
    let (first, second) = (dir.path().join("first"), dir.path().join("second"));
    let files = |d: &Path| TlsFiles {
        ca_file: d.join("ca.crt"),
        cert_file: d.join("s001-d09.crt"),
        key_file: d.join("s001-d09.key"),
    };

    // Not a device yet: no certificate to present at all, and the ACL does not know it.
    tillctl(
        &stack,
        &[
            "fleet",
            "add",
            "s001-d09",
            "s001",
            "--fleet",
            &fleet_arg,
            "--out",
            &first.display().to_string(),
        ],
    );
    assert!(
        std::fs::read_to_string(&fleet)
            .unwrap()
            .contains("s001-d09,s001")
    );
    let key_mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(first.join("s001-d09.key"))
            .unwrap()
            .permissions(),
    );
    assert_eq!(key_mode & 0o777, 0o600);
    // The ACL reload is asynchronous in mosquitto: wait for the device's topic to be granted.
    let deadline = Instant::now() + Duration::from_secs(10);
    let published = loop {
        let o = attempt(
            port,
            tls(&files(&first)),
            "s001-d09",
            &own_topic("s001-d09"),
        )
        .await;
        if o == Outcome::Published(PubAckReason::NoMatchingSubscribers) || Instant::now() > deadline
        {
            break o;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(
        published,
        Outcome::Published(PubAckReason::NoMatchingSubscribers)
    );

    // A connection held across the rotation keeps publishing.
    let mut o = MqttOptions::new("held-s001-d09", "127.0.0.1", port);
    o.set_transport(tls(&files(&first)))
        .set_keep_alive(Duration::from_secs(10));
    let (held, mut held_el) = AsyncClient::new(o, 10);
    let publish_held = || async {
        held.publish(
            own_topic("s001-d09"),
            QoS::AtLeastOnce,
            false,
            b"{}".to_vec(),
        )
        .await
        .unwrap()
    };
    loop {
        if let Event::Incoming(Packet::ConnAck(_)) = held_el.poll().await.unwrap() {
            break;
        }
    }
    let held_task = tokio::spawn(async move {
        let mut acks = Vec::new();
        while acks.len() < 2 {
            match held_el.poll().await {
                Ok(Event::Incoming(Packet::PubAck(a))) => acks.push(a.reason),
                Ok(_) => {}
                Err(e) => panic!("the held connection dropped: {e}"),
            }
        }
        acks
    });
    publish_held().await;

    let rotated = tillctl(
        &stack,
        &[
            "fleet",
            "rotate",
            "s001-d09",
            "--grace",
            "1h",
            "--out",
            &second.display().to_string(),
        ],
    );
    assert!(rotated.contains("written to"), "{rotated}");
    // Both certificates work during the grace period, and the held connection still publishes.
    for d in [&first, &second] {
        assert_eq!(
            attempt(port, tls(&files(d)), "s001-d09", &own_topic("s001-d09")).await,
            Outcome::Published(PubAckReason::NoMatchingSubscribers),
            "{}",
            d.display()
        );
    }
    publish_held().await;
    let acks = tokio::time::timeout(Duration::from_secs(10), held_task)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(acks, vec![PubAckReason::NoMatchingSubscribers; 2]);

    // Ending the grace early: the first certificate's serial revoked, the second still works.
    let listed = tillctl(&stack, &["fleet", "list"]);
    let old_serial = listed
        .lines()
        .find(|l| l.contains("s001-d09") && l.contains("Retiring"))
        .and_then(|l| l.split_whitespace().next())
        .unwrap_or_else(|| panic!("no retiring certificate in:\n{listed}"))
        .to_string();
    tillctl(
        &stack,
        &[
            "fleet",
            "revoke",
            "s001-d09",
            "--serial",
            &old_serial,
            "--fleet",
            &fleet_arg,
        ],
    );
    let refused = until_refused(port, &files(&first), "s001-d09").await;
    assert!(refused_by_broker(&refused), "{refused:?}");
    assert_eq!(
        attempt(
            port,
            tls(&files(&second)),
            "s001-d09",
            &own_topic("s001-d09")
        )
        .await,
        Outcome::Published(PubAckReason::NoMatchingSubscribers)
    );
    assert!(
        std::fs::read_to_string(&fleet)
            .unwrap()
            .contains("s001-d09"),
        "one serial keeps the device"
    );

    // Revoking the device: refused with its remaining certificate, gone from the fleet file.
    tillctl(
        &stack,
        &["fleet", "revoke", "s001-d09", "--fleet", &fleet_arg],
    );
    let refused = until_refused(port, &files(&second), "s001-d09").await;
    assert!(refused_by_broker(&refused), "{refused:?}");
    assert!(
        !std::fs::read_to_string(&fleet)
            .unwrap()
            .contains("s001-d09")
    );
    // The rest of the fleet is untouched.
    let d1 = TlsFiles::in_pki_dir(&stack.mqtt_tls_dir().unwrap(), "s001-d01");
    assert_eq!(
        attempt(port, tls(&d1), "s001-d01", &own_topic("s001-d01")).await,
        Outcome::Published(PubAckReason::NoMatchingSubscribers)
    );
}
