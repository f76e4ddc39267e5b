//! Plays a fleet plan against a real MQTT broker, one MQTT client per device, QoS 1, like POS apps:
//! a device's publishes go out in plan order; `Offline` disconnects it (what it records meanwhile is
//! published as a burst after `Online`). Delivery guarantee: every publish is re-sent on a new
//! connection until the broker PUBACKs it, and every store event a device recorded is kept in its
//! [`DeviceLedger`] until a sync receipt from the cloud covers it (re-sending what a receipt lists
//! missing, and what stays uncovered too long): a PUBACK only means the broker took it, and a broker
//! crash can still lose it. Duplicates, never loss.
//!
//! Why one file (~630 lines): the publisher's connection loop, PUBACK bookkeeping and receipt
//! handling all drive one device's [`DeviceLedger`]; the ledger itself (pure) is apart in
//! `device.rs`.

use std::time::{Duration, Instant};

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use rumqttc::{AsyncClient, Event, MqttOptions, Outgoing, Packet, QoS};
use tillstream_contracts::DeviceReceipt;
use tokio::task::JoinSet;

use crate::device::DeviceLedger;
use crate::plan::{DevicePlan, Plan, Purpose, Step};

#[derive(Debug, Clone)]
pub struct PublishConfig {
    pub host: String,
    pub port: u16,
    /// TLS: the stack's PKI folder (`tillctl fleet`); each device logs in with its own
    /// `clients/<device>.crt|key`, which makes it that device. `None`: plaintext with the password.
    pub tls_dir: Option<std::path::PathBuf>,
    pub device_password: String,
    /// Fleet-wide publish rate limit (events/s); 0 = as fast as the broker takes them.
    pub rate: u64,
    /// How long an offline period lasts in real time.
    pub offline_for: Duration,
    /// Give up after this long.
    pub timeout: Duration,
    /// Record when each event was first handed to the MQTT client (latency benchmarks).
    pub record_sent: bool,
    /// Keep each device connected after its last publish until sync receipts cover every store
    /// event it recorded (the vendor contract). Off where no pipeline issues receipts (a broker
    /// alone, or a bench that times publishing only).
    pub await_receipts: bool,
    /// A device re-sends what no receipt covers after this long without a receipt.
    pub resend_after: Duration,
    /// Counts the broker's PUBACKs of planned publishes as they arrive (tests fire faults when
    /// the fleet has made a given amount of progress).
    pub acked_progress: Arc<std::sync::atomic::AtomicU64>,
    /// When the broker acknowledged each publish no receipt will ever cover (heartbeats, collision
    /// variants, deliberate duplicates, poison): a broker that crashes can lose those for good,
    /// and a test derives what it may lose from when they were acknowledged.
    pub untracked_acks: Arc<Mutex<Vec<(Instant, Untracked)>>>,
}

/// A publish no sync receipt covers, as [`PublishConfig::untracked_acks`] records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Untracked {
    Heartbeat,
    /// The second content published under this event id (an identity collision).
    CollisionVariant(String),
    /// A deliberate duplicate or a poison payload.
    Other,
}

impl Untracked {
    fn of(p: &crate::plan::Publish) -> Option<Untracked> {
        if tracked(p).is_some() {
            return None;
        }
        Some(match &p.purpose {
            _ if p.topic.starts_with("fleet/") => Untracked::Heartbeat,
            Purpose::Collision => serde_json::from_slice::<serde_json::Value>(&p.payload)
                .ok()
                .and_then(|v| v["event_id"].as_str().map(str::to_string))
                .map_or(Untracked::Other, Untracked::CollisionVariant),
            _ => Untracked::Other,
        })
    }
}

impl Default for PublishConfig {
    fn default() -> Self {
        PublishConfig {
            host: "127.0.0.1".into(),
            port: 11883,
            tls_dir: None,
            device_password: "device-dev".into(),
            rate: 0,
            offline_for: Duration::from_millis(500),
            timeout: Duration::from_secs(600),
            record_sent: false,
            await_receipts: true,
            resend_after: Duration::from_secs(5),
            acked_progress: Default::default(),
            untracked_acks: Default::default(),
        }
    }
}

#[derive(Debug, Clone, Default)]
pub struct PublishReport {
    pub publishes: u64,
    pub acked: u64,
    pub resent: u64,
    pub reconnects: u64,
    /// Receipts the devices applied.
    pub receipts: u64,
    /// Events re-sent because a receipt listed them missing.
    pub resent_missing: u64,
    /// Events re-sent because no receipt covered them in time.
    pub resent_overdue: u64,
    /// Store events no receipt covered when the device stopped (0 when receipts were awaited).
    pub uncovered: u64,
    pub elapsed: Duration,
    /// (event id, when its first publish was due: the paced schedule, or the hand-over to the MQTT
    /// client when unpaced), when `record_sent`.
    pub sent: Vec<(String, Instant)>,
}

impl PublishReport {
    /// Adds another publish's counts (a later phase of the same run) to this one.
    pub fn absorb(&mut self, r: &PublishReport) {
        self.publishes += r.publishes;
        self.acked += r.acked;
        self.resent += r.resent;
        self.reconnects += r.reconnects;
        self.receipts += r.receipts;
        self.resent_missing += r.resent_missing;
        self.resent_overdue += r.resent_overdue;
        self.uncovered += r.uncovered;
        self.sent.extend(r.sent.iter().cloned());
        self.elapsed += r.elapsed;
    }

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
                Some(Ok(Ok(r))) => report.absorb(&r),
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

/// What a device's publish carries for receipt accounting: (seq, occurred_at) of a store event it
/// recorded (`Purpose::Event` on a `store/` topic); `None` for heartbeats, deliberate duplicates,
/// collision variants and poison, which receipts never cover.
fn tracked(p: &crate::plan::Publish) -> Option<(i64, i64)> {
    if p.purpose != Purpose::Event || !p.topic.starts_with("store/") {
        return None;
    }
    let v: serde_json::Value = serde_json::from_slice(&p.payload).ok()?;
    Some((v["seq"].as_i64()?, v["occurred_at"].as_i64()?))
}

/// A publish handed to the MQTT client of one connection, in the order the client sends them.
#[derive(Debug)]
struct Issued {
    /// Position in the segment, or `None` for a re-send the ledger asked for.
    index: Option<usize>,
    /// What it is, when no receipt covers it.
    untracked: Option<Untracked>,
    /// Packet id, once the client has sent it.
    pkid: Option<u16>,
    acked: bool,
}

/// One segment publish as the sender task hands it over: (position in the segment, topic,
/// payload, what receipts track of it, whether to record its hand-over time).
type SegmentPublish = (
    usize,
    String,
    Vec<u8>,
    Option<(i64, i64)>,
    bool,
    Option<Untracked>,
);

/// What one connection achieved.
struct ConnectionOutcome {
    /// Segment positions not acknowledged (to publish again on the next connection), in order.
    unacked: Vec<usize>,
    /// Segment publishes handed to the client / acknowledged on this connection.
    issued: u64,
    acked: u64,
    /// Why the connection ended early (`None`: the segment is done).
    failed: Option<String>,
    sent: Vec<(String, Instant)>,
}

/// Everything one connection of a device needs.
struct Connection<'a> {
    device_id: &'a str,
    cfg: &'a PublishConfig,
    segment: &'a [&'a crate::plan::Publish],
    /// Segment positions still to publish, in order.
    pending: Vec<usize>,
    /// Whether to stay connected until receipts cover everything the device holds.
    await_receipts: bool,
    /// Pacing: this device's publish number of `pending[0]`, its rate and its start.
    pace_from: u64,
    rate: f64,
    started: Instant,
}

async fn run_device(
    plan: DevicePlan,
    cfg: PublishConfig,
    rate: f64,
) -> Result<PublishReport, PublishError> {
    let mut report = PublishReport::default();
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
    let numbering_started_at = plan
        .steps
        .iter()
        .filter_map(|s| match s {
            Step::Publish(p) => tracked(p).map(|(_, at)| at),
            _ => None,
        })
        .min()
        .unwrap_or(i64::MIN);
    let started = Instant::now();
    let ledger = Arc::new(Mutex::new(DeviceLedger::new(
        numbering_started_at,
        cfg.resend_after,
        started,
    )));
    let mut sent_total = 0u64;
    let last_segment = segments.len() - 1;
    for (i, seg) in segments.iter().enumerate() {
        if offline_before[i] {
            tokio::time::sleep(cfg.offline_for).await;
        }
        let mut pending: Vec<usize> = (0..seg.len()).collect();
        let pace_from = sent_total;
        sent_total += seg.len() as u64;
        // Keep (re)connecting until every publish of the segment is acknowledged (and, after the
        // last one, until receipts cover everything the device recorded).
        loop {
            let conn = Connection {
                device_id: &plan.device_id,
                cfg: &cfg,
                segment: seg,
                pace_from: pace_from + (seg.len() - pending.len()) as u64,
                pending: std::mem::take(&mut pending),
                await_receipts: cfg.await_receipts && i == last_segment,
                rate,
                started,
            };
            let out = conn.run(&ledger).await?;
            report.publishes += out.issued;
            report.acked += out.acked;
            report.sent.extend(out.sent);
            pending = out.unacked;
            match out.failed {
                None => break,
                Some(why) => {
                    // Unacknowledged publishes go out again on a new connection: duplicates,
                    // not loss.
                    tracing::debug!(device = %plan.device_id, %why, "connection lost; reconnecting");
                    report.resent += pending.len() as u64;
                    report.reconnects += 1;
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        }
    }
    let l = ledger.lock().unwrap_or_else(|p| p.into_inner());
    report.receipts = l.receipts;
    report.resent_missing = l.resent_missing;
    report.resent_overdue = l.resent_overdue;
    report.uncovered = l.held() as u64;
    Ok(report)
}

impl Connection<'_> {
    async fn run(
        self,
        ledger: &Arc<Mutex<DeviceLedger>>,
    ) -> Result<ConnectionOutcome, PublishError> {
        let device = self.device_id.to_string();
        let err = |detail: String| PublishError::Device {
            device: device.clone(),
            detail,
        };
        let cfg = self.cfg;
        let mut opts = MqttOptions::new(
            format!("sim-{}", self.device_id),
            cfg.host.clone(),
            cfg.port,
        );
        let transport =
            tillstream_runtime::mqtt::transport_in(cfg.tls_dir.as_deref(), self.device_id)
                .map_err(|e| err(e.to_string()))?;
        opts.set_transport(transport)
            .set_credentials(self.device_id.to_string(), cfg.device_password.clone())
            .set_keep_alive(Duration::from_secs(15))
            .set_clean_session(true)
            .set_max_packet_size(16 * 1024 * 1024, 16 * 1024 * 1024)
            .set_inflight(100);
        let (client, mut eventloop) = AsyncClient::new(opts, 256);
        let receipt_topic = receipt_topic(self.device_id);
        let watch_receipts = cfg.await_receipts;
        if watch_receipts {
            // Retained: the latest receipt arrives right after the subscription.
            client
                .subscribe(receipt_topic.clone(), QoS::AtLeastOnce)
                .await
                .map_err(|e| err(e.to_string()))?;
        }
        ledger
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .connected(Instant::now());
        let issued: Arc<Mutex<VecDeque<Issued>>> = Arc::new(Mutex::new(VecDeque::new()));
        let (resend_tx, mut resend_rx) =
            tokio::sync::mpsc::unbounded_channel::<Vec<(i64, String, Vec<u8>)>>();
        let segment_done = Arc::new(std::sync::atomic::AtomicBool::new(self.pending.is_empty()));
        // What the sender handed to the client, with when each was due: shared, so the sender can
        // be stopped at any point without losing it.
        let sent: Arc<Mutex<Vec<(String, Instant)>>> = Arc::new(Mutex::new(Vec::new()));
        // One task hands every publish of this connection to the client (segment publishes, paced,
        // and the ledger's re-sends), so `issued` is in exactly the client's sending order.
        let sender = {
            let client = client.clone();
            let issued = issued.clone();
            let ledger = ledger.clone();
            let segment_done = segment_done.clone();
            let sent = sent.clone();
            let to_send: Vec<SegmentPublish> = self
                .pending
                .iter()
                .map(|k| {
                    let p = self.segment[*k];
                    let record = cfg.record_sent && p.purpose == Purpose::Event;
                    (
                        *k,
                        p.topic.clone(),
                        p.payload.clone(),
                        tracked(p),
                        record,
                        Untracked::of(p),
                    )
                })
                .collect();
            let (rate, started, pace_from) = (self.rate, self.started, self.pace_from);
            tokio::spawn(async move {
                let publish = |topic: String,
                               payload: Vec<u8>,
                               index: Option<usize>,
                               untracked: Option<Untracked>| {
                    issued
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .push_back(Issued {
                            index,
                            untracked,
                            pkid: None,
                            acked: false,
                        });
                    client.publish(topic, QoS::AtLeastOnce, false, payload)
                };
                for (n, (k, topic, payload, track, record, untracked)) in
                    to_send.into_iter().enumerate()
                {
                    while let Ok(again) = resend_rx.try_recv() {
                        for (_, t, p) in again {
                            if publish(t, p, None, None).await.is_err() {
                                return;
                            }
                        }
                    }
                    // When this publish is due: what a latency is measured from, so time spent
                    // behind schedule (client or broker too slow) counts instead of hiding.
                    let scheduled = if rate > 0.0 {
                        // Pace this device: publish k of the run is due at k / rate seconds.
                        let due = Duration::from_secs_f64((pace_from + n as u64) as f64 / rate);
                        if let Some(wait) = due.checked_sub(started.elapsed()) {
                            tokio::time::sleep(wait).await;
                        }
                        started + due
                    } else {
                        Instant::now()
                    };
                    let id = record
                        .then(|| {
                            serde_json::from_slice::<serde_json::Value>(&payload)
                                .ok()
                                .and_then(|v| v["event_id"].as_str().map(str::to_string))
                        })
                        .flatten();
                    if let Some((seq, _)) = track {
                        ledger.lock().unwrap_or_else(|p| p.into_inner()).sent(
                            seq,
                            &topic,
                            &payload,
                            Instant::now(),
                        );
                    }
                    if publish(topic, payload, Some(k), untracked).await.is_err() {
                        return;
                    }
                    if let Some(id) = id {
                        sent.lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .push((id, scheduled));
                    }
                }
                segment_done.store(true, std::sync::atomic::Ordering::SeqCst);
                // Then only re-sends, until the connection is done with.
                while let Some(again) = resend_rx.recv().await {
                    for (_, t, p) in again {
                        if publish(t, p, None, None).await.is_err() {
                            return;
                        }
                    }
                }
            })
        };
        let mut tick = tokio::time::interval(Duration::from_millis(250));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut failed = None;
        let mut last_progress = Instant::now();
        loop {
            let all_acked = {
                let q = issued.lock().unwrap_or_else(|p| p.into_inner());
                q.iter().all(|i| i.acked)
            };
            if segment_done.load(std::sync::atomic::Ordering::SeqCst) && all_acked {
                let covered = ledger.lock().unwrap_or_else(|p| p.into_inner()).is_empty();
                if !self.await_receipts || covered {
                    break;
                }
            }
            tokio::select! {
                ev = eventloop.poll() => {
                    match ev {
                        Ok(Event::Outgoing(Outgoing::Publish(pkid))) => {
                            let mut q = issued.lock().unwrap_or_else(|p| p.into_inner());
                            if let Some(i) = q.iter_mut().find(|i| i.pkid.is_none()) {
                                i.pkid = Some(pkid);
                            }
                        }
                        Ok(Event::Incoming(Packet::PubAck(a))) => {
                            last_progress = Instant::now();
                            let mut q = issued.lock().unwrap_or_else(|p| p.into_inner());
                            if let Some(i) = q.iter_mut().find(|i| !i.acked && i.pkid == Some(a.pkid)) {
                                i.acked = true;
                                if i.index.is_some() {
                                    cfg.acked_progress.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                                }
                                if let Some(u) = i.untracked.take() {
                                    cfg.untracked_acks
                                        .lock()
                                        .unwrap_or_else(|p| p.into_inner())
                                        .push((Instant::now(), u));
                                }
                            }
                        }
                        Ok(Event::Incoming(Packet::Publish(p))) if p.topic == receipt_topic => {
                            last_progress = Instant::now();
                            match serde_json::from_slice::<DeviceReceipt>(&p.payload) {
                                Ok(r) => {
                                    let again = ledger
                                        .lock()
                                        .unwrap_or_else(|p| p.into_inner())
                                        .apply(&r, Instant::now());
                                    if !again.is_empty() {
                                        let _ = resend_tx.send(again);
                                    }
                                }
                                Err(e) => tracing::warn!(device = %self.device_id, error = %e, "unreadable receipt"),
                            }
                        }
                        Ok(Event::Incoming(Packet::ConnAck(c)))
                            if c.code != rumqttc::ConnectReturnCode::Success =>
                        {
                            sender.abort();
                            return Err(err(format!("connection refused: {:?}", c.code)));
                        }
                        Ok(Event::Incoming(Packet::SubAck(s))) => {
                            if s.return_codes.iter().any(|c| matches!(c, rumqttc::SubscribeReasonCode::Failure)) {
                                sender.abort();
                                return Err(err(format!("subscription to {receipt_topic} refused")));
                            }
                        }
                        Ok(_) => {}
                        Err(e) => {
                            failed = Some(e.to_string());
                            break;
                        }
                    }
                }
                _ = tick.tick() => {
                    if segment_done.load(std::sync::atomic::Ordering::SeqCst) && watch_receipts {
                        let again = ledger
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .overdue(Instant::now());
                        if !again.is_empty() {
                            let _ = resend_tx.send(again);
                        }
                    }
                    let waiting_on_acks = !issued.lock().unwrap_or_else(|p| p.into_inner()).iter().all(|i| i.acked);
                    if waiting_on_acks && last_progress.elapsed() > Duration::from_secs(30) {
                        failed = Some("no progress for 30 s".into());
                        break;
                    }
                }
            }
        }
        // The sender is stopped, never awaited: re-sends it may still hold are covered (or go out
        // again on the next connection), and awaiting it while nobody polls the event loop
        // deadlocked a device once its re-sends filled the client's request queue (its pings
        // stopped, mosquitto timed it out, and it never reconnected: issue 16, 1M run).
        drop(resend_tx);
        sender.abort();
        let sent = if failed.is_some() {
            Vec::new()
        } else {
            std::mem::take(&mut *sent.lock().unwrap_or_else(|p| p.into_inner()))
        };
        if failed.is_none() {
            // Never waits for room in the client's request queue (the stopped sender may have
            // filled it): without room, dropping the event loop closes the connection all the same.
            if client.try_disconnect().is_ok() {
                // Drive the event loop so the DISCONNECT is actually sent.
                let _ = tokio::time::timeout(Duration::from_millis(200), eventloop.poll()).await;
            }
        }
        let q = issued.lock().unwrap_or_else(|p| p.into_inner());
        let acked_idx: std::collections::BTreeSet<usize> = q
            .iter()
            .filter(|i| i.acked)
            .filter_map(|i| i.index)
            .collect();
        let issued_n = q.iter().filter(|i| i.index.is_some()).count() as u64;
        let unacked: Vec<usize> = self
            .pending
            .iter()
            .copied()
            .filter(|k| !acked_idx.contains(k))
            .collect();
        Ok(ConnectionOutcome {
            acked: acked_idx.len() as u64,
            issued: issued_n,
            unacked,
            failed,
            sent,
        })
    }
}

/// The MQTT topic of a device's sync receipt (retained; only that device may read it).
pub fn receipt_topic(device_id: &str) -> String {
    format!("device/{device_id}/receipt")
}
