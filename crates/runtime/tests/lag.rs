//! The consumer-lag gauge's reading on librdkafka's MockCluster: records above the group's committed
//! offset per partition, from the low watermark where the group has committed nothing.

use std::time::Duration;

use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use tillstream_runtime::kafka::{KafkaConfig, LagGauge, read_lag};

#[test]
fn lag_is_the_high_watermark_minus_the_committed_offset() {
    let cluster = MockCluster::new(1).unwrap();
    cluster.create_topic("in", 3, 1).unwrap();
    let brokers = cluster.bootstrap_servers();
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .create()
        .unwrap();
    for (p, n) in [(0, 10), (1, 4), (2, 6)] {
        for i in 0..n {
            let v = format!("{p}-{i}");
            producer
                .send(BaseRecord::<(), _>::to("in").partition(p).payload(&v))
                .unwrap();
        }
    }
    producer.flush(Duration::from_secs(10)).unwrap();

    // The group has committed 7 of partition 0 and all of partition 1; nothing of partition 2.
    let member: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .set("group.id", "lagging")
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset("in", 0, Offset::Offset(7))
        .unwrap();
    tpl.add_partition_offset("in", 1, Offset::Offset(4))
        .unwrap();
    member.assign(&tpl).unwrap();
    member.commit(&tpl, CommitMode::Sync).unwrap();

    let gauge = LagGauge {
        metric: "tillstream_test_consumer_lag_records",
        group_id: "lagging".into(),
        topics: vec!["in".into()],
        interval: Duration::from_secs(1),
    };
    let kafka = KafkaConfig {
        brokers,
        ..KafkaConfig::default()
    };
    let client = gauge.client(&kafka, "test").unwrap();
    let lag = read_lag(&client, &gauge.topics, Duration::from_secs(10)).expect("reading the lag");
    let got: Vec<(i32, i64)> = lag.into_iter().map(|((_, p), l)| (p, l)).collect();
    assert_eq!(got, vec![(0, 3), (1, 0), (2, 6)]);
}
