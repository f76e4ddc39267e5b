//! Kafka plumbing shared by every service: client configuration, the idempotent producer, the group
//! consumer whose context commits stored offsets on revoke, offset bookkeeping for batches, and the
//! dead-letter publisher.
//!
//! Delivery guarantee: at-least-once. Consumers run with `enable.auto.offset.store=false`: an offset is
//! stored only by [`store_batch_offsets`], which services call after the batch's effects are durable
//! (delivered to Kafka or committed to the database). Stored offsets are committed by the auto-commit
//! timer, synchronously on every revoke, and on shutdown ([`commit_on_shutdown`]).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use rdkafka::ClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{
    BaseConsumer, CommitMode, Consumer, ConsumerContext, RebalanceProtocol, StreamConsumer,
};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use rdkafka::types::RDKafkaRespErr;
use serde::{Deserialize, Serialize};
use tillstream_contracts::{DeadLetter, EventKind, Registry, SourceKind, codec};

/// Connection settings shared by every Kafka client of a service.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct KafkaConfig {
    /// Bootstrap servers, e.g. `127.0.0.1:19092`.
    pub brokers: String,
    /// Consumer group session timeout. Short in tests; a crashed member's partitions move after this.
    pub session_timeout_ms: u32,
    /// Longest pause between two polls before the member is considered stuck; librdkafka also sends
    /// it as the JoinGroup rebalance timeout, i.e. how long a rejoin waits for members that are gone.
    /// After a broker restart tansu still lists the old members, so a rejoin waits this long.
    pub max_poll_interval_ms: u32,
    /// Idempotent producer (no duplicates from producer retries, per-partition order kept with
    /// several requests in flight). Turn it off only for a broker whose idempotence is broken: tansu
    /// 0.6 panics in its storage task on the first produce after it restarts and then fails every
    /// request. Off, producers keep one request in flight (order kept) and a retry may duplicate a
    /// record, which every tillstream sink absorbs (they are idempotent on the event id).
    pub idempotence: bool,
    /// Self-healing for a group that settled with nothing assigned to this member: after this long
    /// with an empty assignment the member leaves and rejoins the group (at most once per period),
    /// which makes the coordinator rebalance. 0 = off. Off for Apache Kafka, where an empty
    /// assignment only means more members than partitions (a rejoin would just cost a rebalance);
    /// on for tansu 0.6, whose group coordinator can settle a generation in which the only live
    /// member owns no partition after members were killed during a rebalance, and never rebalance it.
    pub empty_assignment_rejoin_ms: u64,
    /// Extra librdkafka properties passed through verbatim (security.protocol, sasl.*, ...).
    pub properties: BTreeMap<String, String>,
}

impl Default for KafkaConfig {
    fn default() -> Self {
        KafkaConfig {
            brokers: "127.0.0.1:19092".into(),
            session_timeout_ms: 10_000,
            max_poll_interval_ms: 60_000,
            idempotence: true,
            empty_assignment_rejoin_ms: 0,
            properties: BTreeMap::new(),
        }
    }
}

impl KafkaConfig {
    /// A librdkafka config with the brokers, the client id and the pass-through properties.
    pub fn client_config(&self, client_id: &str) -> ClientConfig {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", &self.brokers)
            .set("client.id", client_id)
            // Fail fast on a wrong address instead of hanging metadata requests forever.
            .set("socket.connection.setup.timeout.ms", "10000");
        for (k, v) in &self.properties {
            c.set(k, v);
        }
        c
    }
}

/// Standard headers every tillstream record carries.
pub mod headers {
    /// Short record name, e.g. `OrderCreated` (lets consumers route without decoding).
    pub const EVENT_TYPE: &str = "tillstream-event-type";
    pub const EVENT_ID: &str = "tillstream-event-id";
    pub const DEVICE_ID: &str = "tillstream-device-id";
    pub const SEQ: &str = "tillstream-seq";
    /// Service that wrote the record.
    pub const PRODUCER: &str = "tillstream-producer";
}

/// The idempotent producer every service uses: acks=all, idempotence on, retries unbounded within
/// `delivery.timeout.ms`. A full local queue makes `send` wait (back-pressure), never drop.
pub fn producer(config: &KafkaConfig, client_id: &str) -> Result<FutureProducer, KafkaError> {
    let mut c = config.client_config(client_id);
    if config.idempotence {
        c.set("enable.idempotence", "true");
    } else {
        c.set("enable.idempotence", "false")
            .set("max.in.flight.requests.per.connection", "1");
    }
    c.set("acks", "all")
        .set("linger.ms", "5")
        .set("batch.num.messages", "10000")
        .set("queue.buffering.max.messages", "200000")
        .set("compression.type", "none")
        // Same key -> partition mapping as the Java client, so Kafka Connect, ksqlDB or a JVM
        // producer writing the same store id lands in the same partition.
        .set("partitioner", "murmur2_random");
    for (k, v) in &config.properties {
        c.set(k, v);
    }
    c.create()
}

/// Called from inside librdkafka's rebalance callback, before the assignment changes.
pub trait PartitionHook: Send + Sync + 'static {
    /// New partitions: may set each partition's starting offset in `tpl` (e.g. from a database).
    fn on_assign(&self, _tpl: &mut TopicPartitionList) {}
    /// Partitions about to leave: drop partition-scoped state. Stored offsets are committed after.
    fn on_revoke(&self, _tpl: &TopicPartitionList) {}
}

impl PartitionHook for () {}

/// Consumer context: logs rebalances, runs the hook, commits stored offsets on revoke, and keeps
/// what the empty-assignment watchdog of [`next_batch`] needs.
pub struct GroupContext<H> {
    service: &'static str,
    hook: H,
    watchdog: AssignmentWatch,
}

/// Partitions currently assigned and when that last changed (or the watchdog last acted).
struct AssignmentWatch {
    rejoin_after_ms: u64,
    assigned: std::sync::atomic::AtomicUsize,
    since_ms: std::sync::atomic::AtomicI64,
}

impl AssignmentWatch {
    fn new(rejoin_after_ms: u64) -> Self {
        AssignmentWatch {
            rejoin_after_ms,
            assigned: 0.into(),
            since_ms: now_ms().into(),
        }
    }

    fn set(&self, assigned: usize) {
        use std::sync::atomic::Ordering::SeqCst;
        self.assigned.store(assigned, SeqCst);
        self.since_ms.store(now_ms(), SeqCst);
    }

    /// Whether the member has had nothing assigned for longer than the configured period (pure
    /// in its inputs; the caller rejoins and calls `set` again).
    fn stuck(&self, now_ms: i64) -> bool {
        use std::sync::atomic::Ordering::SeqCst;
        is_stuck(
            self.rejoin_after_ms,
            self.assigned.load(SeqCst),
            self.since_ms.load(SeqCst),
            now_ms,
        )
    }
}

/// The watchdog's decision: enabled, nothing assigned, and for longer than `after_ms`.
fn is_stuck(after_ms: u64, assigned: usize, since_ms: i64, now_ms: i64) -> bool {
    after_ms > 0 && assigned == 0 && now_ms.saturating_sub(since_ms) > after_ms as i64
}

impl<H: PartitionHook> ClientContext for GroupContext<H> {
    fn error(&self, error: KafkaError, reason: &str) {
        tracing::warn!(service = self.service, %error, reason, "kafka client error");
    }
}

fn partitions(tpl: &TopicPartitionList) -> Vec<(String, i32)> {
    tpl.elements()
        .iter()
        .map(|e| (e.topic().to_string(), e.partition()))
        .collect()
}

impl<H: PartitionHook> ConsumerContext for GroupContext<H> {
    fn rebalance(
        &self,
        consumer: &BaseConsumer<Self>,
        err: RDKafkaRespErr,
        tpl: &mut TopicPartitionList,
    ) {
        let cooperative = matches!(
            consumer.rebalance_protocol(),
            RebalanceProtocol::Cooperative
        );
        match err {
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => {
                self.hook.on_assign(tpl);
                tracing::info!(service = self.service, partitions = ?partitions(tpl), "partitions assigned");
                let res = if cooperative {
                    consumer.incremental_assign(tpl)
                } else {
                    consumer.assign(tpl)
                };
                if let Err(e) = res {
                    tracing::error!(service = self.service, error = %e, "assign failed");
                }
                self.watchdog
                    .set(consumer.assignment().map(|t| t.count()).unwrap_or(0));
            }
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS => {
                self.hook.on_revoke(tpl);
                if consumer.assignment_lost() {
                    // Session timed out (broker unreachable, or we stalled): the partitions may
                    // already belong to someone else, and a synchronous commit would block the
                    // rejoin until the coordinator answers. What was stored is redelivered.
                    tracing::warn!(
                        service = self.service,
                        "assignment lost: not committing on revoke"
                    );
                } else {
                    commit_stored(consumer, self.service, "revoke");
                }
                tracing::info!(service = self.service, partitions = ?partitions(tpl), "partitions revoked");
                let res = if cooperative {
                    consumer.incremental_unassign(tpl)
                } else {
                    consumer.unassign()
                };
                if let Err(e) = res {
                    tracing::error!(service = self.service, error = %e, "unassign failed");
                }
                self.watchdog
                    .set(consumer.assignment().map(|t| t.count()).unwrap_or(0));
            }
            other => {
                tracing::error!(service = self.service, error = ?other, "rebalance error");
                let _ = consumer.unassign();
            }
        }
    }

    fn commit_callback(
        &self,
        result: rdkafka::error::KafkaResult<()>,
        offsets: &TopicPartitionList,
    ) {
        match result {
            Ok(()) => tracing::debug!(service = self.service, ?offsets, "offsets committed"),
            Err(KafkaError::ConsumerCommit(RDKafkaErrorCode::NoOffset)) => {}
            Err(e) => tracing::warn!(service = self.service, error = %e, "offset commit failed"),
        }
    }
}

fn commit_stored<C: Consumer<GroupContext<H>>, H: PartitionHook>(
    consumer: &C,
    service: &str,
    why: &str,
) {
    match consumer.commit_consumer_state(CommitMode::Sync) {
        Ok(()) => tracing::debug!(service, why, "stored offsets committed"),
        Err(KafkaError::ConsumerCommit(RDKafkaErrorCode::NoOffset)) => {}
        Err(e) => tracing::warn!(service, why, error = %e, "commit of stored offsets failed"),
    }
}

pub type GroupConsumer<H = ()> = StreamConsumer<GroupContext<H>>;

/// Consumer settings that differ between services.
#[derive(Debug, Clone)]
pub struct GroupSettings<'a> {
    pub group_id: &'a str,
    pub client_id: &'a str,
    /// `read_committed` when the upstream producer is transactional (Apache Kafka), else `read_uncommitted`.
    pub isolation_level: &'a str,
    pub auto_offset_reset: &'a str,
}

impl<'a> GroupSettings<'a> {
    pub fn new(group_id: &'a str, client_id: &'a str) -> Self {
        GroupSettings {
            group_id,
            client_id,
            isolation_level: "read_committed",
            auto_offset_reset: "earliest",
        }
    }
}

/// A subscribed group consumer with manual offset storage and commit-on-revoke.
pub fn group_consumer<H: PartitionHook>(
    config: &KafkaConfig,
    settings: &GroupSettings<'_>,
    service: &'static str,
    hook: H,
    topics: &[&str],
) -> Result<GroupConsumer<H>, KafkaError> {
    let mut c = config.client_config(settings.client_id);
    c.set("group.id", settings.group_id)
        .set("enable.auto.commit", "true")
        .set("auto.commit.interval.ms", "1000")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", settings.auto_offset_reset)
        .set("isolation.level", settings.isolation_level)
        .set("session.timeout.ms", config.session_timeout_ms.to_string())
        .set(
            "max.poll.interval.ms",
            config
                .max_poll_interval_ms
                .max(config.session_timeout_ms)
                .to_string(),
        )
        .set(
            "heartbeat.interval.ms",
            (config.session_timeout_ms / 3).max(100).to_string(),
        )
        .set("enable.partition.eof", "false");
    for (k, v) in &config.properties {
        c.set(k, v);
    }
    let consumer: GroupConsumer<H> = c.create_with_context(GroupContext {
        service,
        hook,
        watchdog: AssignmentWatch::new(config.empty_assignment_rejoin_ms),
    })?;
    consumer.subscribe(topics)?;
    Ok(consumer)
}

/// Waits for the next batch: the first message (or cancellation, which returns `None`), then whatever
/// else arrives within `linger`, up to `max` messages. Consumer errors (broker down, rebalance in
/// progress) are logged and never end the loop.
///
/// Errors are drained at once, not backed off: librdkafka queues one error event per failed
/// connection attempt, and each `recv` consumes one event, so sleeping per error once left a
/// partition assignment queued behind hundreds of stale errors for minutes after a broker outage.
/// When the queue is empty `recv` simply waits.
pub async fn next_batch<H: PartitionHook>(
    consumer: &GroupConsumer<H>,
    token: &tokio_util::sync::CancellationToken,
    max: usize,
    linger: Duration,
) -> Option<Vec<rdkafka::message::OwnedMessage>> {
    let mut batch = Vec::new();
    let mut errors = ErrorLog::default();
    let watch = &consumer.context().watchdog;
    let check_every = Duration::from_millis(watch.rejoin_after_ms.clamp(1_000, 5_000));
    // First message: block until one arrives or we are told to stop.
    while batch.is_empty() {
        tokio::select! {
            biased;
            _ = token.cancelled() => return None,
            m = consumer.recv() => match m {
                Ok(m) => batch.push(m.detach()),
                Err(e) => errors.record(&e),
            },
            _ = tokio::time::sleep(check_every), if watch.rejoin_after_ms > 0 => {
                if watch.stuck(now_ms()) {
                    rejoin(consumer);
                }
            }
        }
    }
    let deadline = tokio::time::Instant::now() + linger;
    while batch.len() < max {
        tokio::select! {
            biased;
            _ = token.cancelled() => break,
            _ = tokio::time::sleep_until(deadline) => break,
            m = consumer.recv() => match m {
                Ok(m) => batch.push(m.detach()),
                Err(e) => errors.record(&e),
            }
        }
    }
    Some(batch)
}

/// Leaves and rejoins the group with the same subscription (the empty-assignment watchdog).
fn rejoin<H: PartitionHook>(consumer: &GroupConsumer<H>) {
    let ctx = consumer.context();
    let topics: Vec<String> = match consumer.subscription() {
        Ok(t) => t.elements().iter().map(|e| e.topic().to_string()).collect(),
        Err(e) => {
            tracing::warn!(service = ctx.service, error = %e, "cannot read the subscription");
            return;
        }
    };
    tracing::warn!(
        service = ctx.service,
        after_ms = ctx.watchdog.rejoin_after_ms,
        ?topics,
        "no partition assigned for too long: rejoining the consumer group"
    );
    // Counted from now, so a rejoin that again yields nothing waits a full period before the next.
    ctx.watchdog.set(0);
    consumer.unsubscribe();
    let refs: Vec<&str> = topics.iter().map(String::as_str).collect();
    if let Err(e) = consumer.subscribe(&refs) {
        tracing::error!(service = ctx.service, error = %e, "re-subscribe failed");
    }
}

/// Logs consumer errors without flooding: the first one, then one summary every 5 s.
#[derive(Default)]
struct ErrorLog {
    suppressed: u64,
    last: Option<std::time::Instant>,
}

impl ErrorLog {
    fn record(&mut self, e: &KafkaError) {
        let now = std::time::Instant::now();
        match self.last {
            Some(t) if now.duration_since(t) < Duration::from_secs(5) => self.suppressed += 1,
            _ => {
                tracing::warn!(error = %e, suppressed = self.suppressed, "consume error (librdkafka retries by itself)");
                self.suppressed = 0;
                self.last = Some(now);
            }
        }
    }
}

/// Highest processed offset per (topic, partition) of a batch; `store` stores offset + 1 for each.
#[derive(Debug, Default, Clone)]
pub struct BatchOffsets {
    next: HashMap<(String, i32), i64>,
}

impl BatchOffsets {
    pub fn new() -> Self {
        Self::default()
    }

    /// Records that the message at `offset` has been handled.
    pub fn done(&mut self, topic: &str, partition: i32, offset: i64) {
        let e = self
            .next
            .entry((topic.to_string(), partition))
            .or_insert(offset + 1);
        *e = (*e).max(offset + 1);
    }

    pub fn is_empty(&self) -> bool {
        self.next.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = (&(String, i32), &i64)> {
        self.next.iter()
    }

    pub fn to_tpl(&self) -> TopicPartitionList {
        let mut tpl = TopicPartitionList::new();
        for ((t, p), o) in &self.next {
            let _ = tpl.add_partition_offset(t, *p, Offset::Offset(*o));
        }
        tpl
    }

    pub fn clear(&mut self) {
        self.next.clear();
    }
}

/// Stores the batch's offsets for the next commit. Call only after the batch's effects are durable.
/// A partition revoked meanwhile fails to store: that is harmless (its new owner re-reads the batch,
/// and every sink is idempotent), so it is logged, not returned.
pub fn store_batch_offsets<H: PartitionHook>(consumer: &GroupConsumer<H>, offsets: &BatchOffsets) {
    if offsets.is_empty() {
        return;
    }
    if let Err(e) = consumer.store_offsets(&offsets.to_tpl()) {
        tracing::warn!(error = %e, "could not store offsets (partition revoked?): batch will be re-read");
    }
}

/// Commits stored offsets synchronously; call once the loop has stopped taking new messages.
pub fn commit_on_shutdown<H: PartitionHook>(consumer: &GroupConsumer<H>, service: &str) {
    match consumer.commit_consumer_state(CommitMode::Sync) {
        Ok(()) => tracing::info!(service, "final offsets committed"),
        Err(KafkaError::ConsumerCommit(RDKafkaErrorCode::NoOffset)) => {
            tracing::info!(service, "no offsets to commit at shutdown")
        }
        Err(e) => tracing::warn!(service, error = %e, "final commit failed"),
    }
}

/// Kafka headers from (name, value) pairs.
pub fn make_headers(pairs: &[(&str, &str)]) -> OwnedHeaders {
    pairs.iter().fold(OwnedHeaders::new(), |h, (k, v)| {
        h.insert(Header {
            key: k,
            value: Some(v.as_bytes()),
        })
    })
}

/// Sends one record and waits for its delivery report, retrying transient failures with backoff
/// until `token` is cancelled. Returns (partition, offset).
pub async fn send_with_retry(
    producer: &FutureProducer,
    topic: &str,
    key: &[u8],
    payload: &[u8],
    headers: Option<OwnedHeaders>,
    token: &tokio_util::sync::CancellationToken,
) -> Result<(i32, i64), KafkaError> {
    let mut backoff = Duration::from_millis(50);
    loop {
        let mut record = FutureRecord::to(topic).key(key).payload(payload);
        if let Some(h) = &headers {
            record = record.headers(h.clone());
        }
        match producer.send(record, rdkafka::util::Timeout::Never).await {
            Ok(d) => return Ok((d.partition, d.offset)),
            Err((e, _)) => {
                use crate::error::{Classify, ErrorClass};
                if e.class() != ErrorClass::Retryable || token.is_cancelled() {
                    return Err(e);
                }
                tracing::warn!(topic, error = %e, backoff_ms = backoff.as_millis() as u64, "delivery failed, retrying");
                tokio::select! {
                    _ = token.cancelled() => return Err(e),
                    _ = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
        }
    }
}

/// Publishes dead letters: Avro `DeadLetter` records (registered schema), keyed by store when known.
#[derive(Clone)]
pub struct DeadLetters {
    producer: FutureProducer,
    topic: Arc<str>,
    registry: Registry,
    service: &'static str,
    counter_name: &'static str,
}

impl std::fmt::Debug for DeadLetters {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeadLetters")
            .field("topic", &self.topic)
            .finish_non_exhaustive()
    }
}

/// Where a bad input came from (for the dead-letter record).
#[derive(Debug, Clone)]
pub struct Source<'a> {
    pub kind: SourceKind,
    pub topic: &'a str,
    pub partition: Option<i32>,
    pub offset: Option<i64>,
    pub key: Option<&'a [u8]>,
    pub headers: BTreeMap<String, String>,
}

#[derive(Debug, thiserror::Error)]
pub enum DeadLetterError {
    #[error("dead-letter schema: {0}")]
    Registry(#[from] tillstream_contracts::RegistryError),
    #[error("dead-letter encoding: {0}")]
    Codec(#[from] tillstream_contracts::CodecError),
    #[error("dead-letter delivery: {0}")]
    Kafka(#[from] KafkaError),
}

impl DeadLetters {
    /// `counter_name` is the service's `tillstream_<service>_dead_letters_total` metric.
    pub fn new(
        producer: FutureProducer,
        topic: &str,
        registry: Registry,
        service: &'static str,
        counter_name: &'static str,
    ) -> Self {
        DeadLetters {
            producer,
            topic: topic.into(),
            registry,
            service,
            counter_name,
        }
    }

    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// Builds the dead-letter record for `payload` (pure; deterministic id from the source coordinates
    /// and the payload, so a redelivered bad input maps to the same id).
    #[allow(clippy::too_many_arguments)]
    pub fn record(
        &self,
        source: &Source<'_>,
        payload: &[u8],
        reason: &str,
        detail: &str,
        store_id: Option<&str>,
        device_id: Option<&str>,
        event_id: Option<&str>,
        now_ms: i64,
    ) -> DeadLetter {
        let identity = format!(
            "{}|{}|{:?}|{:?}|{:x}",
            self.service,
            source.topic,
            source.partition,
            source.offset,
            xxhash_rust::xxh3::xxh3_64(payload)
        );
        DeadLetter {
            dead_letter_id: uuid_v5(&identity),
            service: self.service.to_string(),
            reason: reason.to_string(),
            detail: detail.to_string(),
            source_kind: source.kind,
            source_topic: source.topic.to_string(),
            source_partition: source.partition,
            source_offset: source.offset,
            key: source.key.map(<[u8]>::to_vec),
            payload: payload.to_vec(),
            headers: source.headers.clone(),
            store_id: store_id.map(str::to_string),
            device_id: device_id.map(str::to_string),
            event_id: event_id.map(str::to_string),
            failed_at: now_ms,
        }
    }

    /// Writes a dead letter and waits until Kafka holds it (retrying transient failures).
    pub async fn publish(
        &self,
        record: &DeadLetter,
        token: &tokio_util::sync::CancellationToken,
    ) -> Result<(), DeadLetterError> {
        let id = self.registry.schema_id(EventKind::DeadLetter, 1).await?;
        let datum = codec::encode_record(EventKind::DeadLetter, record)?;
        let payload = codec::frame(id, datum);
        let key = record.store_id.as_deref().unwrap_or("_unknown");
        let headers = make_headers(&[
            (headers::EVENT_TYPE, EventKind::DeadLetter.name()),
            (headers::PRODUCER, self.service),
            ("tillstream-dead-letter-reason", &record.reason),
        ]);
        send_with_retry(
            &self.producer,
            &self.topic,
            key.as_bytes(),
            &payload,
            Some(headers),
            token,
        )
        .await?;
        metrics::counter!(self.counter_name, "reason" => record.reason.clone()).increment(1);
        tracing::warn!(
            service = self.service,
            reason = %record.reason,
            detail = %record.detail,
            topic = %record.source_topic,
            "input dead-lettered"
        );
        Ok(())
    }

    pub fn producer(&self) -> &FutureProducer {
        &self.producer
    }
}

/// A deterministic UUIDv5 (OID namespace) of `name`.
pub fn uuid_v5(name: &str) -> String {
    uuid::Uuid::new_v5(&uuid::Uuid::NAMESPACE_OID, name.as_bytes()).to_string()
}

/// Milliseconds since the Unix epoch by the local clock.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Reads every record currently in `topic` (all partitions, from the low watermark to the high
/// watermark seen at the start) without joining a consumer group and without committing anything.
/// Blocking: call it from `spawn_blocking` or a blocking context. Fails if the end is not reached
/// within `timeout` or the topic does not exist.
pub fn read_topic_to_end(
    config: &KafkaConfig,
    topic: &str,
    timeout: Duration,
) -> Result<Vec<rdkafka::message::OwnedMessage>, ReadError> {
    use rdkafka::Message;
    let mut cfg = config.client_config("tillstream-reader");
    cfg.set("group.id", "tillstream-reader")
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "false");
    let consumer: BaseConsumer = cfg.create()?;
    let md = consumer.fetch_metadata(Some(topic), Duration::from_secs(10))?;
    let parts: Vec<i32> = md
        .topics()
        .iter()
        .find(|t| t.name() == topic)
        .map(|t| t.partitions().iter().map(|p| p.id()).collect())
        .unwrap_or_default();
    if parts.is_empty() {
        return Err(ReadError::NoTopic(topic.to_string()));
    }
    let mut tpl = TopicPartitionList::new();
    let mut remaining = std::collections::BTreeMap::new();
    for p in parts {
        let (lo, hi) = consumer.fetch_watermarks(topic, p, Duration::from_secs(10))?;
        if hi > lo {
            remaining.insert(p, hi);
            tpl.add_partition_offset(topic, p, Offset::Offset(lo))?;
        }
    }
    let mut out = Vec::new();
    if remaining.is_empty() {
        return Ok(out);
    }
    consumer.assign(&tpl)?;
    let deadline = std::time::Instant::now() + timeout;
    while !remaining.is_empty() {
        if std::time::Instant::now() > deadline {
            return Err(ReadError::Timeout {
                topic: topic.to_string(),
                read: out.len(),
            });
        }
        let Some(m) = consumer.poll(Duration::from_millis(200)) else {
            continue;
        };
        let m = m?;
        if let Some(hi) = remaining.get(&m.partition())
            && m.offset() + 1 >= *hi
        {
            remaining.remove(&m.partition());
        }
        out.push(m.detach());
    }
    Ok(out)
}

#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("topic {0} does not exist")]
    NoTopic(String),
    #[error("reading {topic}: end not reached in time ({read} records read)")]
    Timeout { topic: String, read: usize },
    #[error(transparent)]
    Kafka(#[from] KafkaError),
}

/// Headers of a record as a map (values lossily decoded as UTF-8).
pub fn header_map(m: &impl rdkafka::Message) -> BTreeMap<String, String> {
    use rdkafka::message::Headers;
    m.headers()
        .map(|h| {
            h.iter()
                .map(|x| {
                    (
                        x.key.to_string(),
                        x.value
                            .map(|v| String::from_utf8_lossy(v).into_owned())
                            .unwrap_or_default(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Flushes the producer, waiting at most `timeout`.
pub fn flush(producer: &FutureProducer, timeout: Duration) {
    if let Err(e) = producer.flush(timeout) {
        tracing::warn!(error = %e, "producer flush incomplete");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_watchdog_acts_only_when_enabled_empty_and_overdue() {
        // Off (0): never, however long the assignment has been empty.
        assert!(!is_stuck(0, 0, 0, 1_000_000));
        // Something assigned: never.
        assert!(!is_stuck(20_000, 3, 0, 1_000_000));
        // Empty, but not yet for the whole period.
        assert!(!is_stuck(20_000, 0, 100_000, 120_000));
        // Empty for longer than the period.
        assert!(is_stuck(20_000, 0, 100_000, 120_001));
        let w = AssignmentWatch::new(20_000);
        assert!(!w.stuck(now_ms()));
        assert!(w.stuck(now_ms() + 20_001));
        w.set(2);
        assert!(!w.stuck(now_ms() + 60_000));
    }

    #[test]
    fn batch_offsets_keep_the_highest_plus_one() {
        let mut b = BatchOffsets::new();
        b.done("t", 0, 5);
        b.done("t", 0, 3);
        b.done("t", 1, 0);
        let mut v: Vec<_> = b.iter().map(|((t, p), o)| (t.clone(), *p, *o)).collect();
        v.sort();
        assert_eq!(v, vec![("t".into(), 0, 6), ("t".into(), 1, 1)]);
        assert_eq!(b.to_tpl().count(), 2);
    }

    #[test]
    fn uuid_v5_is_deterministic() {
        assert_eq!(uuid_v5("a"), uuid_v5("a"));
        assert_ne!(uuid_v5("a"), uuid_v5("b"));
    }
}
