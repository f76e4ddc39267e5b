//! A partition whose hook chooses a start offset must get that offset committed even when no new
//! record ever arrives: otherwise its consumer lag stays above zero for good after a restart (the
//! dedup's changelog covered records its killed predecessor had not committed yet).
//!
//! On librdkafka's MockCluster, in both assignment modes: a topic holds records, the hook says
//! everything below its end is done, and the test waits for the group's committed offset to reach
//! the end without a single record being handed to the service.

use std::time::{Duration, Instant};

use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use tillstream_runtime::CancellationToken;
use tillstream_runtime::kafka::{
    Assignment, ConsumerSettings, InputConsumer, KafkaConfig, PartitionHook,
};

const TOPIC: &str = "input";
const PARTITIONS: i32 = 3;
const PER_PARTITION: i64 = 7;

/// Starts every partition at its end: "the service's own state covers all of it".
struct AtEnd;

impl PartitionHook for AtEnd {
    fn on_assign(&self, tpl: &mut TopicPartitionList) {
        for p in 0..PARTITIONS {
            tpl.set_partition_offset(TOPIC, p, Offset::Offset(PER_PARTITION))
                .unwrap();
        }
    }
}

fn fill(brokers: &str) {
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()
        .unwrap();
    for p in 0..PARTITIONS {
        for i in 0..PER_PARTITION {
            let payload = format!("{p}-{i}");
            producer
                .send(
                    BaseRecord::<(), _>::to(TOPIC)
                        .partition(p)
                        .payload(&payload),
                )
                .unwrap();
        }
    }
    producer.flush(Duration::from_secs(10)).unwrap();
}

fn committed(brokers: &str, group: &str) -> Vec<Option<i64>> {
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", group)
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    for p in 0..PARTITIONS {
        tpl.add_partition(TOPIC, p);
    }
    let got = c
        .committed_offsets(tpl, Duration::from_secs(5))
        .expect("reading the committed offsets");
    (0..PARTITIONS)
        .map(|p| match got.find_partition(TOPIC, p).map(|e| e.offset()) {
            Some(Offset::Offset(n)) => Some(n),
            _ => None,
        })
        .collect()
}

async fn the_chosen_start_offsets_are_committed(assignment: Assignment) {
    let cluster = MockCluster::new(1).unwrap();
    cluster.create_topic(TOPIC, PARTITIONS, 1).unwrap();
    let brokers = cluster.bootstrap_servers();
    fill(&brokers);
    let group = format!("start-offsets-{}", assignment.as_str());
    let config = KafkaConfig {
        brokers: brokers.clone(),
        assignment,
        session_timeout_ms: 6_000,
        ..KafkaConfig::default()
    };
    let mut consumer = InputConsumer::new(
        &config,
        &ConsumerSettings::new(&group, "start-offsets"),
        "test",
        AtEnd,
        &[TOPIC],
    )
    .unwrap();
    let token = CancellationToken::new();
    let reader = {
        let token = token.clone();
        tokio::spawn(async move {
            let mut handed_out = 0;
            while let Some(batch) = consumer
                .next_batch(&token, 100, Duration::from_millis(10))
                .await
            {
                handed_out += batch.len();
            }
            handed_out
        })
    };
    let want = vec![Some(PER_PARTITION); PARTITIONS as usize];
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut got = Vec::new();
    while Instant::now() < deadline {
        let b = brokers.clone();
        let g = group.clone();
        got = tokio::task::spawn_blocking(move || committed(&b, &g))
            .await
            .unwrap();
        if got == want {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    token.cancel();
    let handed_out = reader.await.unwrap();
    assert_eq!(
        handed_out, 0,
        "records below the chosen start were handed out"
    );
    assert_eq!(
        got, want,
        "committed offsets after the hook started every partition at its end"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn group_mode_commits_the_start_offsets_the_hook_chose() {
    the_chosen_start_offsets_are_committed(Assignment::Group).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn static_mode_commits_the_start_offsets_the_hook_chose() {
    the_chosen_start_offsets_are_committed(Assignment::Static).await;
}
