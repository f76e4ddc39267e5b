//! The input side of every consumer service: [`InputConsumer`] reads the service's topics in the
//! configured [`Assignment`] mode and hands out batches.
//!
//! - **Group**: a consumer-group member. The context logs rebalances, runs the service's
//!   [`PartitionHook`] (start offsets on assign, state hand-over on revoke) and commits stored
//!   offsets on every revoke. An empty-assignment watchdog (tansu 0.6's coordinator can settle a
//!   group in which a live member owns nothing) rejoins the group, and after
//!   `rejoins_before_recreate` fruitless rejoins closes the consumer and creates a new member: a
//!   bounded, logged escalation instead of rejoining forever.
//! - **Static**: the instance assigns itself its share of each topic's partitions and asks the hook
//!   where to start (the projection's database offsets, the dedup's changelog position); what the
//!   hook leaves unset starts from the group's committed offset. No coordinator decides anything.
//!
//! Delivery guarantee: at-least-once. Offsets are stored only when the service says its effects are
//! durable ([`InputConsumer::store_offsets`]) and committed by the auto-commit timer, on revoke and on
//! shutdown.
//!
//! Why one file (~600 lines): the consumer, its assignment modes and the empty-assignment watchdog
//! share one rebalance callback context and its state; split, each part would reach into the
//! others' fields.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};
use std::time::Duration;

use futures::FutureExt;

use rdkafka::ClientContext;
use rdkafka::consumer::{
    BaseConsumer, Consumer, ConsumerContext, RebalanceProtocol, StreamConsumer,
};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::OwnedMessage;
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use rdkafka::types::RDKafkaRespErr;

use super::offsets::{BatchOffsets, commit_stored};
use super::{Assignment, KafkaConfig};
use crate::clock::now_ms;

/// Called when partitions arrive or leave (inside librdkafka's rebalance callback in group mode,
/// from [`InputConsumer::next_batch`] in static mode), before the assignment changes.
pub trait PartitionHook: Send + Sync + 'static {
    /// New partitions: may set each partition's starting offset in `tpl` (e.g. from a database).
    /// Partitions left at `Offset::Stored` start from the group's committed offset.
    fn on_assign(&self, _tpl: &mut TopicPartitionList) {}
    /// Partitions about to leave: drop partition-scoped state. Stored offsets are committed after.
    fn on_revoke(&self, _tpl: &TopicPartitionList) {}
}

impl PartitionHook for () {}

/// How old a batch must be before [`InputConsumer::next_batch`] returns it on a dry queue.
pub const BATCH_SETTLE: Duration = Duration::from_millis(5);

/// Consumer settings that differ between services.
#[derive(Debug, Clone)]
pub struct ConsumerSettings {
    /// The group whose committed offsets the consumer uses (and, in group mode, joins).
    pub group_id: String,
    pub client_id: String,
    /// `read_committed` when the upstream producer is transactional (Apache Kafka), else either.
    pub isolation_level: String,
    /// Where a partition with no committed offset (and no offset from the hook) starts.
    pub auto_offset_reset: String,
}

impl ConsumerSettings {
    pub fn new(group_id: &str, client_id: &str) -> Self {
        ConsumerSettings {
            group_id: group_id.to_string(),
            client_id: client_id.to_string(),
            isolation_level: "read_committed".into(),
            auto_offset_reset: "earliest".into(),
        }
    }
}

/// Partitions currently assigned and when that last changed (or the watchdog last acted).
struct AssignmentWatch {
    assigned: AtomicUsize,
    since_ms: AtomicI64,
}

impl AssignmentWatch {
    fn new() -> Self {
        AssignmentWatch {
            assigned: 0.into(),
            since_ms: now_ms().into(),
        }
    }

    fn set(&self, assigned: usize) {
        self.assigned.store(assigned, Ordering::SeqCst);
        self.since_ms.store(now_ms(), Ordering::SeqCst);
    }

    fn stuck(&self, after_ms: u64, now_ms: i64) -> bool {
        is_stuck(
            after_ms,
            self.assigned.load(Ordering::SeqCst),
            self.since_ms.load(Ordering::SeqCst),
            now_ms,
        )
    }
}

/// The watchdog's decision: enabled, nothing assigned, and for longer than `after_ms`.
fn is_stuck(after_ms: u64, assigned: usize, since_ms: i64, now_ms: i64) -> bool {
    after_ms > 0 && assigned == 0 && now_ms.saturating_sub(since_ms) > after_ms as i64
}

/// What the watchdog does about a member that has owned nothing for a whole period.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Recovery {
    /// Leave and rejoin the group with the same consumer.
    Rejoin,
    /// Close the consumer and join as a new member.
    Recreate,
}

impl Recovery {
    /// After `fruitless` rejoins that brought nothing: rejoin again, or escalate.
    fn after(fruitless: u32, rejoins_before_recreate: u32) -> Recovery {
        if fruitless >= rejoins_before_recreate {
            Recovery::Recreate
        } else {
            Recovery::Rejoin
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            Recovery::Rejoin => "rejoin",
            Recovery::Recreate => "recreate",
        }
    }
}

/// Consumer context: logs rebalances, runs the hook, commits stored offsets on revoke, and keeps
/// what the empty-assignment watchdog needs.
pub struct PartitionContext<H> {
    service: &'static str,
    hook: Arc<H>,
    watch: AssignmentWatch,
}

impl<H: PartitionHook> ClientContext for PartitionContext<H> {
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

impl<H: PartitionHook> ConsumerContext for PartitionContext<H> {
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
                } else {
                    store_start_offsets(consumer, tpl, self.service);
                }
                self.watch
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
                self.watch
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

/// Stores the start offsets the hook chose, so the next commit records them. A partition the hook
/// starts at `n` has everything below `n` done (in the service's database or changelog); without
/// this, a partition that receives no new record after the restart keeps the committed offset of
/// the previous owner's last auto-commit, and its consumer lag never falls to zero although
/// nothing is left to process (seen after a SIGKILL: three quiet partitions "stalled" for good).
fn store_start_offsets<C: ConsumerContext>(
    consumer: &impl Consumer<C>,
    tpl: &TopicPartitionList,
    service: &str,
) {
    let mut chosen = TopicPartitionList::new();
    for e in tpl.elements() {
        if let Offset::Offset(n) = e.offset()
            && n >= 0
        {
            let _ = chosen.add_partition_offset(e.topic(), e.partition(), Offset::Offset(n));
        }
    }
    if chosen.count() == 0 {
        return;
    }
    if let Err(e) = consumer.store_offsets(&chosen) {
        tracing::warn!(service, error = %e, "could not store the start offsets the service chose");
    }
}

/// The librdkafka consumer under an [`InputConsumer`].
pub type RawConsumer<H> = StreamConsumer<PartitionContext<H>>;

/// A service's input consumer (see the module doc for the two modes).
pub struct InputConsumer<H: PartitionHook> {
    service: &'static str,
    config: KafkaConfig,
    settings: ConsumerSettings,
    topics: Vec<String>,
    hook: Arc<H>,
    consumer: RawConsumer<H>,
    /// Static mode: whether this instance has assigned itself its partitions yet (it retries on
    /// every `next_batch` while the broker cannot say how many partitions a topic has).
    self_assigned: bool,
    /// Group mode: rejoins since the member last owned a partition.
    fruitless_rejoins: u32,
    errors: ErrorLog,
}

impl<H: PartitionHook> std::fmt::Debug for InputConsumer<H> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InputConsumer")
            .field("service", &self.service)
            .field("assignment", &self.config.assignment)
            .field("topics", &self.topics)
            .finish_non_exhaustive()
    }
}

impl<H: PartitionHook> InputConsumer<H> {
    /// Creates the consumer of `topics`. Group mode subscribes at once; static mode assigns its
    /// partitions on the first [`next_batch`](Self::next_batch) (so a broker that is down at start
    /// only delays it).
    pub fn new(
        config: &KafkaConfig,
        settings: &ConsumerSettings,
        service: &'static str,
        hook: H,
        topics: &[&str],
    ) -> Result<Self, KafkaError> {
        config
            .validate()
            .map_err(|e| KafkaError::ClientCreation(e.to_string()))?;
        let hook = Arc::new(hook);
        let consumer = create(config, settings, service, hook.clone())?;
        let topics: Vec<String> = topics.iter().map(|t| t.to_string()).collect();
        if config.assignment == Assignment::Group {
            let refs: Vec<&str> = topics.iter().map(String::as_str).collect();
            consumer.subscribe(&refs)?;
        }
        tracing::info!(
            service,
            assignment = config.assignment.as_str(),
            ?topics,
            "input consumer created"
        );
        Ok(InputConsumer {
            service,
            config: config.clone(),
            settings: settings.clone(),
            topics,
            hook,
            consumer,
            self_assigned: false,
            fruitless_rejoins: 0,
            errors: ErrorLog::default(),
        })
    }

    pub fn assignment_mode(&self) -> Assignment {
        self.config.assignment
    }

    /// The hook (shared with the consumer's context).
    pub fn hook(&self) -> &Arc<H> {
        &self.hook
    }

    /// The librdkafka consumer, for what this type does not wrap (e.g. transactional offsets).
    /// Do not keep it: the group-mode watchdog may replace it.
    pub fn raw(&self) -> &RawConsumer<H> {
        &self.consumer
    }

    /// Waits for the next batch: the first message (or cancellation, which returns `None`), then
    /// everything already queued, up to `max` messages. When the queue runs dry the batch is
    /// returned once it is [`BATCH_SETTLE`] old (the records of one fetch response arrive together;
    /// a few ms more merges a response that is on its way), and at the latest `linger` after its
    /// first message. So an idle pipeline hands on each record within a few ms, and a backlog fills
    /// batches to `max` (Flink's buffer-timeout lesson: waiting 0 is worse than 5-10 ms). Consumer
    /// errors (broker down, rebalance in progress) are logged and never end the wait.
    ///
    /// Errors are drained at once, not backed off: librdkafka queues one error event per failed
    /// connection attempt, and each `recv` consumes one event, so sleeping per error once left a
    /// partition assignment queued behind hundreds of stale errors for minutes after a broker
    /// outage. When the queue is empty `recv` simply waits.
    pub async fn next_batch(
        &mut self,
        token: &tokio_util::sync::CancellationToken,
        max: usize,
        linger: Duration,
    ) -> Option<Vec<OwnedMessage>> {
        let mut batch = Vec::new();
        let check_every = Duration::from_millis(1_000);
        while batch.is_empty() {
            if token.is_cancelled() {
                return None;
            }
            if self.config.assignment == Assignment::Static && !self.self_assigned {
                self.assign_static_share();
                if !self.self_assigned {
                    tokio::select! {
                        biased;
                        _ = token.cancelled() => return None,
                        _ = tokio::time::sleep(check_every) => continue,
                    }
                }
            }
            let watchdog = self.config.assignment == Assignment::Group
                && self.config.empty_assignment_rejoin_ms > 0;
            tokio::select! {
                biased;
                _ = token.cancelled() => return None,
                m = self.consumer.recv() => match m {
                    Ok(m) => batch.push(m.detach()),
                    Err(e) => self.errors.record(self.service, &e),
                },
                _ = tokio::time::sleep(check_every), if watchdog => self.watchdog(),
            }
        }
        let first = tokio::time::Instant::now();
        let deadline = first + linger;
        let settled = first + BATCH_SETTLE.min(linger);
        while batch.len() < max && tokio::time::Instant::now() < deadline {
            // Whatever is queued already, without waiting.
            match self.consumer.recv().now_or_never() {
                Some(Ok(m)) => {
                    batch.push(m.detach());
                    continue;
                }
                Some(Err(e)) => {
                    self.errors.record(self.service, &e);
                    continue;
                }
                None => {}
            }
            // The queue is dry: wait for more only until the batch has settled.
            if tokio::time::Instant::now() >= settled {
                break;
            }
            tokio::select! {
                biased;
                _ = token.cancelled() => break,
                _ = tokio::time::sleep_until(settled) => break,
                m = self.consumer.recv() => match m {
                    Ok(m) => batch.push(m.detach()),
                    Err(e) => self.errors.record(self.service, &e),
                }
            }
        }
        if self.config.assignment == Assignment::Group {
            self.fruitless_rejoins = 0;
        }
        Some(batch)
    }

    /// Static mode: assign this instance's share of every topic, starting where the hook says.
    fn assign_static_share(&mut self) {
        let mut tpl = TopicPartitionList::new();
        for topic in &self.topics {
            let count = match super::read::partition_count(
                self.consumer.client(),
                topic,
                Duration::from_secs(5),
            ) {
                Ok(n) if n > 0 => n,
                Ok(_) => {
                    tracing::warn!(
                        service = self.service,
                        topic,
                        "topic has no partitions (yet): will retry"
                    );
                    return;
                }
                Err(e) => {
                    tracing::warn!(service = self.service, topic, error = %e, "cannot read the topic's partitions: will retry");
                    return;
                }
            };
            for p in self.config.static_share(count) {
                if let Err(e) = tpl.add_partition_offset(topic, p, Offset::Stored) {
                    tracing::error!(service = self.service, topic, partition = p, error = %e, "cannot add partition");
                    return;
                }
            }
        }
        crate::retry::blocking(|| self.hook.on_assign(&mut tpl));
        if let Err(e) = self.consumer.assign(&tpl) {
            tracing::warn!(service = self.service, error = %e, "static assign failed: will retry");
            return;
        }
        store_start_offsets(&self.consumer, &tpl, self.service);
        self.self_assigned = true;
        self.consumer.context().watch.set(tpl.count());
        tracing::info!(
            service = self.service,
            index = self.config.static_index,
            count = self.config.static_count,
            partitions = ?partitions(&tpl),
            "partitions assigned (static)"
        );
    }

    /// Group mode: acts on a member that has owned nothing for a whole period.
    fn watchdog(&mut self) {
        let after = self.config.empty_assignment_rejoin_ms;
        if !self.consumer.context().watch.stuck(after, now_ms()) {
            return;
        }
        let action = Recovery::after(self.fruitless_rejoins, self.config.rejoins_before_recreate);
        tracing::warn!(
            service = self.service,
            after_ms = after,
            fruitless_rejoins = self.fruitless_rejoins,
            action = action.as_str(),
            topics = ?self.topics,
            "no partition assigned for too long"
        );
        metrics::counter!(
            format!("tillstream_{}_consumer_recoveries_total", self.service.replace('-', "_")),
            "action" => action.as_str()
        )
        .increment(1);
        let refs: Vec<&str> = self.topics.iter().map(String::as_str).collect();
        match action {
            Recovery::Rejoin => {
                self.fruitless_rejoins += 1;
                // Counted from now, so a rejoin that again yields nothing waits a whole period.
                self.consumer.context().watch.set(0);
                self.consumer.unsubscribe();
                if let Err(e) = self.consumer.subscribe(&refs) {
                    tracing::error!(service = self.service, error = %e, "re-subscribe failed");
                }
            }
            Recovery::Recreate => {
                let fresh = match create(
                    &self.config,
                    &self.settings,
                    self.service,
                    self.hook.clone(),
                ) {
                    Ok(c) => c,
                    Err(e) => {
                        tracing::error!(service = self.service, error = %e, "cannot create a new consumer");
                        self.consumer.context().watch.set(0);
                        return;
                    }
                };
                if let Err(e) = fresh.subscribe(&refs) {
                    tracing::error!(service = self.service, error = %e, "new consumer cannot subscribe");
                    self.consumer.context().watch.set(0);
                    return;
                }
                let old = std::mem::replace(&mut self.consumer, fresh);
                self.fruitless_rejoins = 0;
                // Closing leaves the group, which tansu may take its session timeout to answer:
                // not on this task's time.
                tokio::task::spawn_blocking(move || drop(old));
            }
        }
    }

    /// Stores the batch's offsets for the next commit. Call only after the batch's effects are
    /// durable. A partition revoked meanwhile fails to store: that is harmless (its new owner
    /// re-reads the batch, and every sink is idempotent), so it is logged, not returned.
    pub fn store_offsets(&self, offsets: &BatchOffsets) {
        if offsets.is_empty() {
            return;
        }
        if let Err(e) = self.consumer.store_offsets(&offsets.to_tpl()) {
            tracing::warn!(service = self.service, error = %e, "could not store offsets (partition revoked?): batch will be re-read");
        }
    }

    /// Moves a partition's next read to `offset`.
    pub fn seek(&self, topic: &str, partition: i32, offset: i64) -> Result<(), KafkaError> {
        self.consumer.seek(
            topic,
            partition,
            Offset::Offset(offset),
            Duration::from_secs(10),
        )
    }

    /// Commits stored offsets synchronously; call once the loop has stopped taking new messages.
    pub fn commit_on_shutdown(&self) {
        match self
            .consumer
            .commit_consumer_state(rdkafka::consumer::CommitMode::Sync)
        {
            Ok(()) => tracing::info!(service = self.service, "final offsets committed"),
            Err(KafkaError::ConsumerCommit(RDKafkaErrorCode::NoOffset)) => {
                tracing::info!(service = self.service, "no offsets to commit at shutdown")
            }
            Err(e) => tracing::warn!(service = self.service, error = %e, "final commit failed"),
        }
    }
}

fn create<H: PartitionHook>(
    config: &KafkaConfig,
    settings: &ConsumerSettings,
    service: &'static str,
    hook: Arc<H>,
) -> Result<RawConsumer<H>, KafkaError> {
    let mut c = config.consumer_config(&settings.client_id);
    c.set("group.id", &settings.group_id)
        .set("enable.auto.commit", "true")
        .set("auto.commit.interval.ms", "1000")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", &settings.auto_offset_reset)
        .set("isolation.level", &settings.isolation_level)
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
    c.create_with_context(PartitionContext {
        service,
        hook,
        watch: AssignmentWatch::new(),
    })
}

/// Logs consumer errors without flooding: the first one, then one summary every 5 s.
#[derive(Default)]
struct ErrorLog {
    suppressed: u64,
    last: Option<std::time::Instant>,
}

impl ErrorLog {
    fn record(&mut self, service: &str, e: &KafkaError) {
        let now = std::time::Instant::now();
        match self.last {
            Some(t) if now.duration_since(t) < Duration::from_secs(5) => self.suppressed += 1,
            _ => {
                tracing::warn!(service, error = %e, suppressed = self.suppressed, "consume error (librdkafka retries by itself)");
                self.suppressed = 0;
                self.last = Some(now);
            }
        }
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
        let w = AssignmentWatch::new();
        assert!(!w.stuck(20_000, now_ms()));
        assert!(w.stuck(20_000, now_ms() + 20_001));
        w.set(2);
        assert!(!w.stuck(20_000, now_ms() + 60_000));
    }

    #[test]
    fn the_watchdog_escalates_after_the_configured_fruitless_rejoins() {
        let actions: Vec<Recovery> = (0..4).map(|n| Recovery::after(n, 2)).collect();
        assert_eq!(
            actions,
            vec![
                Recovery::Rejoin,
                Recovery::Rejoin,
                Recovery::Recreate,
                Recovery::Recreate
            ]
        );
        assert_eq!(Recovery::after(0, 0), Recovery::Recreate);
    }
}
