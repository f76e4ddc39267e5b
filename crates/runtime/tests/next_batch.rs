//! `InputConsumer::next_batch` on librdkafka's MockCluster: a dry queue hands the batch on once it
//! has settled (not after the whole linger), and a backlog fills batches to `max`.

use std::time::{Duration, Instant};

use rdkafka::ClientConfig;
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use tillstream_runtime::CancellationToken;
use tillstream_runtime::kafka::{Assignment, ConsumerSettings, InputConsumer, KafkaConfig};

const TOPIC: &str = "input";

fn produce(brokers: &str, n: usize) {
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()
        .unwrap();
    for i in 0..n {
        let v = i.to_string();
        producer
            .send(BaseRecord::<(), _>::to(TOPIC).partition(0).payload(&v))
            .unwrap();
    }
    producer.flush(Duration::from_secs(10)).unwrap();
}

type Cluster = MockCluster<'static, rdkafka::producer::DefaultProducerContext>;

/// A one-partition topic holding `n` records and a consumer of it (keep the cluster alive).
fn queued(n: usize) -> (Cluster, InputConsumer<()>) {
    let cluster = MockCluster::new(1).unwrap();
    cluster.create_topic(TOPIC, 1, 1).unwrap();
    let brokers = cluster.bootstrap_servers();
    produce(&brokers, n);
    let c = consumer(&brokers);
    (cluster, c)
}

fn consumer(brokers: &str) -> InputConsumer<()> {
    let config = KafkaConfig {
        brokers: brokers.to_string(),
        assignment: Assignment::Static,
        ..KafkaConfig::default()
    };
    InputConsumer::new(
        &config,
        &ConsumerSettings::new("next-batch", "next-batch"),
        "test",
        (),
        &[TOPIC],
    )
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dry_queue_hands_the_batch_on_without_waiting_for_the_linger() {
    let (_cluster, mut c) = queued(3);
    let token = CancellationToken::new();
    let linger = Duration::from_secs(60);
    let mut got = 0;
    let started = Instant::now();
    while got < 3 {
        let batch =
            tokio::time::timeout(Duration::from_secs(30), c.next_batch(&token, 100, linger))
                .await
                .expect("a batch of queued records waited for the whole linger")
                .unwrap();
        got += batch.len();
    }
    assert_eq!(got, 3);
    // Far below the 60 s linger: the batches ended when the queue ran dry.
    assert!(started.elapsed() < Duration::from_secs(30));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backlog_fills_batches_to_max() {
    let (_cluster, mut c) = queued(1_000);
    let token = CancellationToken::new();
    // The first batch can start before the whole fetch response is queued; once it is, every
    // batch is full.
    let mut sizes = Vec::new();
    let mut got = 0;
    while got < 1_000 {
        let batch = c
            .next_batch(&token, 100, Duration::from_secs(5))
            .await
            .unwrap();
        got += batch.len();
        sizes.push(batch.len());
    }
    assert_eq!(got, 1_000);
    let full = sizes.iter().filter(|n| **n == 100).count();
    assert!(full >= 8, "batch sizes under a backlog: {sizes:?}");
}
