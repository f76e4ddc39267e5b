//! The outbox quarantine end to end on its real storage: records set aside by the drainer leave the
//! outbox (so the rest drains), `tillctl outbox quarantine` lists them with their reason, and
//! `tillctl outbox redrive` puts them back at the end of the outbox, in their original order, through
//! the running writer.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use tillctl::outbox::{self as ctl, Filter};
use tillstream_store_bridge::config::OutboxConfig;
use tillstream_store_bridge::outbox::{self, Record, WriterMsg};

fn rec(topic: &str, n: u8) -> Record {
    Record {
        topic: topic.into(),
        key: b"s1".to_vec(),
        value: vec![n; 50],
        headers: vec![("h".into(), n.to_string())],
        kind: "OrderCreated".into(),
        store: "s1".into(),
        received_at_ms: tillstream_runtime::clock::now_ms() + i64::from(n),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn quarantined_records_leave_the_outbox_and_redrive_puts_them_back_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = OutboxConfig {
        dir: dir.path().to_path_buf(),
        ..OutboxConfig::default()
    };
    let (ack_tx, mut ack_rx) = tokio::sync::mpsc::unbounded_channel();
    let mut ob = outbox::start::<u8>(&cfg, ack_tx).unwrap();
    for (i, topic) in ["good", "gone", "gone", "good"].into_iter().enumerate() {
        ob.tx
            .send(WriterMsg::Append(rec(topic, i as u8 + 1), i as u8))
            .unwrap();
    }
    let mut acked = Vec::new();
    while acked.len() < 4 {
        acked.extend(ack_rx.recv().await.unwrap());
    }
    // The drainer found topic "gone" cannot take records: ids 2 and 3 are set aside.
    ob.tx
        .send(WriterMsg::Quarantine(2, "topic_unknown".into()))
        .unwrap();
    ob.tx
        .send(WriterMsg::Quarantine(3, "topic_unknown".into()))
        .unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel();
    ob.tx.send(WriterMsg::Flush(tx)).unwrap();
    rx.await.unwrap();
    let left: Vec<u64> = ob
        .reader
        .read_range(1, 100, 100)
        .unwrap()
        .iter()
        .map(|r| r.id)
        .collect();
    assert_eq!(left, vec![1, 4], "set-aside records leave the outbox");
    let listed = ctl::list(dir.path(), &Filter::default()).unwrap();
    assert_eq!(
        listed
            .iter()
            .map(|q| (q.id, q.topic.as_str(), q.reason.as_str()))
            .collect::<Vec<_>>(),
        vec![(2, "gone", "topic_unknown"), (3, "gone", "topic_unknown")]
    );
    let other = Filter {
        topic: Some("good".into()),
        ..Filter::default()
    };
    assert_eq!(ctl::redrive(dir.path(), &other).unwrap(), 0);

    // The topic is back: re-drive them. The running writer appends them as ids 5 and 6.
    let gone = Filter {
        topic: Some("gone".into()),
        ..Filter::default()
    };
    assert_eq!(ctl::redrive(dir.path(), &gone).unwrap(), 2);
    let deadline = Instant::now() + Duration::from_secs(20);
    while ob.shared.committed_max.load(Ordering::Acquire) < 6 {
        if ob.thread.is_finished() {
            panic!("writer stopped: {:?}", ob.thread.join().unwrap());
        }
        assert!(
            Instant::now() < deadline,
            "the writer did not take the re-drive"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let back = ob.reader.read_range(5, 6, 10).unwrap();
    assert_eq!(
        back.iter()
            .map(|r| (r.id, r.record.value[0]))
            .collect::<Vec<_>>(),
        vec![(5, 2), (6, 3)],
        "in their original order, with their bytes"
    );
    assert_eq!(back[0].record.topic, "gone");
    assert_eq!(back[0].record.headers, rec("gone", 2).headers);
    assert!(
        ctl::list(dir.path(), &Filter::default())
            .unwrap()
            .is_empty()
    );
    ob.tx.send(WriterMsg::Shutdown).unwrap();
    ob.thread.join().unwrap().unwrap();
}
