//! Plays a fleet plan against a real MQTT broker, one MQTT client per device, QoS 1, like POS apps:
//! a device's publishes go out in plan order; `Offline` disconnects it (what it records meanwhile is
//! published as a burst after `Online`). Delivery guarantee: a publish counts as done when the broker
//! PUBACKs it; a device whose connection drops re-sends everything not yet acknowledged (duplicates,
//! never loss), as a real POS outbox would.

use std::time::{Duration, Instant};

use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use tokio::task::JoinSet;

use crate::plan::{DevicePlan, Plan, Step};

#[derive(Debug, Clone)]
pub struct PublishConfig {
    pub host: String,
    pub port: u16,
    pub device_password: String,
    /// Fleet-wide publish rate limit (events/s); 0 = as fast as the broker takes them.
    pub rate: u64,
    /// How long an offline period lasts in real time.
    pub offline_for: Duration,
    /// Give up after this long.
    pub timeout: Duration,
    /// Record when each event was first handed to the MQTT client (latency benchmarks).
    pub record_sent: bool,
}

impl Default for PublishConfig {
    fn default() -> Self {
        PublishConfig {
            host: "127.0.0.1".into(),
            port: 11883,
            device_password: "device-dev".into(),
            rate: 0,
            offline_for: Duration::from_millis(500),
            timeout: Duration::from_secs(600),
            record_sent: false,
        }
    }
}

#[derive(Debug, Clone, Default)]
pub struct PublishReport {
    pub publishes: u64,
    pub acked: u64,
    pub resent: u64,
    pub reconnects: u64,
    pub elapsed: Duration,
    /// (event id, first hand-over to the MQTT client), when `record_sent`.
    pub sent: Vec<(String, Instant)>,
}

impl PublishReport {
    pub fn rate(&self) -> f64 {
        self.acked as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error("device {device}: {detail}")]
    Device { device: String, detail: String },
    #[error("publishing did not finish within {0:?}")]
    Timeout(Duration),
    #[error("price lists: {0}")]
    PriceLists(String),
}

/// Plays the cloud's pricing service: produces the plan's approved price lists, in approval order,
/// to the downlink topic (key `{store}/price-list`, Confluent-framed `PriceListApproved` v1), and
/// waits for every delivery report. The store bridge's downlink delivers the latest list of each
/// store as a retained MQTT message. Returns how many lists were produced.
pub async fn publish_price_lists(
    plan: &Plan,
    kafka: &tillstream_runtime::kafka::KafkaConfig,
    registry: &tillstream_contracts::Registry,
    topic: &str,
) -> Result<usize, PublishError> {
    use tillstream_contracts::{DeviceEvent, EventKind, codec};
    use tillstream_runtime::kafka;
    if plan.price_lists.is_empty() {
        return Ok(0);
    }
    let err = |e: &dyn std::fmt::Display| PublishError::PriceLists(e.to_string());
    let id = registry
        .schema_id(EventKind::PriceListApproved, 1)
        .await
        .map_err(|e| err(&e))?;
    let producer = kafka::producer(kafka, "tillstream-sim-pricing").map_err(|e| err(&e))?;
    let token = tokio_util::sync::CancellationToken::new();
    for list in &plan.price_lists {
        let event = DeviceEvent::from(list.clone());
        let payload = codec::frame(id, event.encode().map_err(|e| err(&e))?);
        let headers = kafka::make_headers(&[
            ("tillstream-event-type", "PriceListApproved"),
            ("tillstream-event-id", &list.event_id),
        ]);
        let key = crate::plan::price_list_key(&list.store_id);
        tokio::time::timeout(
            Duration::from_secs(60),
            kafka::send_with_retry(
                &producer,
                topic,
                key.as_bytes(),
                &payload,
                Some(headers),
                &token,
            ),
        )
        .await
        .map_err(|_| err(&format!("{topic} did not take the price lists within 60 s")))?
        .map_err(|e| err(&e))?;
    }
    Ok(plan.price_lists.len())
}

/// Publishes every device's plan concurrently and waits until the broker acknowledged everything.
pub async fn publish(plan: &Plan, cfg: &PublishConfig) -> Result<PublishReport, PublishError> {
    let started = Instant::now();
    let per_device_rate = if cfg.rate == 0 {
        0.0
    } else {
        cfg.rate as f64 / plan.devices.len().max(1) as f64
    };
    let mut set = JoinSet::new();
    for d in &plan.devices {
        let d = d.clone();
        let cfg = cfg.clone();
        set.spawn(async move { run_device(d, cfg, per_device_rate).await });
    }
    let mut report = PublishReport::default();
    let deadline = tokio::time::sleep(cfg.timeout);
    tokio::pin!(deadline);
    loop {
        tokio::select! {
            _ = &mut deadline => {
                set.abort_all();
                return Err(PublishError::Timeout(cfg.timeout));
            }
            next = set.join_next() => match next {
                None => break,
                Some(Ok(Ok(r))) => {
                    report.publishes += r.publishes;
                    report.acked += r.acked;
                    report.resent += r.resent;
                    report.reconnects += r.reconnects;
                    report.sent.extend(r.sent);
                }
                Some(Ok(Err(e))) => {
                    set.abort_all();
                    return Err(e);
                }
                Some(Err(e)) => {
                    set.abort_all();
                    return Err(PublishError::Device { device: "?".into(), detail: e.to_string() });
                }
            }
        }
    }
    report.elapsed = started.elapsed();
    Ok(report)
}

async fn run_device(
    plan: DevicePlan,
    cfg: PublishConfig,
    rate: f64,
) -> Result<PublishReport, PublishError> {
    let mut report = PublishReport::default();
    let err = |detail: String| PublishError::Device {
        device: plan.device_id.clone(),
        detail,
    };
    // Split the plan into online segments; each segment is published over one connection.
    let mut segments: Vec<Vec<&crate::plan::Publish>> = vec![Vec::new()];
    let mut offline_before: Vec<bool> = vec![false];
    for s in &plan.steps {
        match s {
            Step::Publish(p) => segments.last_mut().expect("non-empty").push(p),
            Step::Offline => {}
            Step::Online => {
                segments.push(Vec::new());
                offline_before.push(true);
            }
        }
    }
    let started = Instant::now();
    let mut sent_total = 0u64;
    for (i, seg) in segments.iter().enumerate() {
        if offline_before[i] {
            tokio::time::sleep(cfg.offline_for).await;
        }
        let mut pending: Vec<&crate::plan::Publish> = seg.clone();
        // Keep (re)connecting until every publish of the segment is acknowledged.
        while !pending.is_empty() {
            let mut opts = MqttOptions::new(
                format!("sim-{}", plan.device_id),
                cfg.host.clone(),
                cfg.port,
            );
            opts.set_credentials(plan.device_id.clone(), cfg.device_password.clone())
                .set_keep_alive(Duration::from_secs(15))
                .set_clean_session(true)
                .set_max_packet_size(16 * 1024 * 1024, 16 * 1024 * 1024)
                .set_inflight(100);
            let (client, mut eventloop) = AsyncClient::new(opts, 256);
            let to_send: Vec<(String, Vec<u8>, bool)> = pending
                .iter()
                .map(|p| {
                    let record = cfg.record_sent && p.purpose == crate::plan::Purpose::Event;
                    (p.topic.clone(), p.payload.clone(), record)
                })
                .collect();
            let n = to_send.len();
            let pace_from = sent_total;
            sent_total += n as u64;
            let sender = tokio::spawn({
                let client = client.clone();
                async move {
                    let mut sent = Vec::new();
                    for (k, (topic, payload, record)) in to_send.into_iter().enumerate() {
                        if rate > 0.0 {
                            // Pace this device: publish k of the run is due at k / rate seconds.
                            let due = Duration::from_secs_f64((pace_from + k as u64) as f64 / rate);
                            if let Some(wait) = due.checked_sub(started.elapsed()) {
                                tokio::time::sleep(wait).await;
                            }
                        }
                        let id = record
                            .then(|| {
                                serde_json::from_slice::<serde_json::Value>(&payload)
                                    .ok()
                                    .and_then(|v| v["event_id"].as_str().map(str::to_string))
                            })
                            .flatten();
                        if client
                            .publish(topic, QoS::AtLeastOnce, false, payload)
                            .await
                            .is_err()
                        {
                            return (k, sent);
                        }
                        if let Some(id) = id {
                            sent.push((id, Instant::now()));
                        }
                    }
                    (n, sent)
                }
            });
            // Acks arrive in order for QoS 1 from one client: count them.
            let mut acked = 0usize;
            let mut failed = None;
            while acked < n {
                match tokio::time::timeout(Duration::from_secs(30), eventloop.poll()).await {
                    Ok(Ok(Event::Incoming(Packet::PubAck(_)))) => acked += 1,
                    Ok(Ok(Event::Incoming(Packet::ConnAck(c))))
                        if c.code != rumqttc::ConnectReturnCode::Success =>
                    {
                        return Err(err(format!("connection refused: {:?}", c.code)));
                    }
                    Ok(Ok(_)) => {}
                    Ok(Err(e)) => {
                        failed = Some(e.to_string());
                        break;
                    }
                    Err(_) => {
                        failed = Some("no progress for 30 s".into());
                        break;
                    }
                }
            }
            if failed.is_some() {
                sender.abort();
            } else if let Ok((_, sent)) = sender.await {
                report.sent.extend(sent);
            }
            report.publishes += n as u64;
            report.acked += acked as u64;
            pending.drain(..acked);
            if failed.is_some() {
                // Unacknowledged publishes go out again on a new connection: duplicates, not loss.
                report.resent += pending.len() as u64;
                report.reconnects += 1;
                tokio::time::sleep(Duration::from_millis(200)).await;
            } else {
                let _ = client.disconnect().await;
                // Drive the event loop so the DISCONNECT is actually sent.
                let _ = tokio::time::timeout(Duration::from_millis(200), eventloop.poll()).await;
            }
        }
    }
    Ok(report)
}
