//! The durable outbox: every record the bridge sends to Kafka (converted events and dead letters)
//! is first appended here, in arrival order, by one writer thread that group-commits to SQLite
//! (WAL, `synchronous=FULL`: each commit is fsync'd). Only after the commit are the MQTT messages
//! acked. The drainer then produces the records in id order and reports deliveries, which the
//! writer deletes (piggy-backed on the next commit).
//!
//! Delivery guarantee: a record acked to MQTT is on disk and survives kill -9 and power loss; it
//! leaves the outbox only after Kafka confirmed it (at-least-once: a crash between delivery and
//! delete re-sends it). Ids are assigned in arrival order, so draining in id order keeps every
//! store's order. When full (bytes or age of the oldest record), the writer stops committing and
//! therefore stops acking: MQTT holds the rest; nothing is dropped.

mod disk;
mod reader;
mod shared;
mod writer;

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64};
use std::sync::mpsc::Sender;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rusqlite::{Connection, OpenFlags};

pub use reader::Reader;
pub use shared::Shared;

use crate::config::OutboxConfig;
use shared::Hot;
use writer::Writer;

#[derive(Debug, thiserror::Error)]
pub enum OutboxError {
    #[error("outbox database: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("outbox folder {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("outbox writer stopped")]
    Stopped,
}

impl tillstream_runtime::Classify for OutboxError {
    fn class(&self) -> tillstream_runtime::ErrorClass {
        // The disk under the outbox failing is not something to retry around silently.
        tillstream_runtime::ErrorClass::Fatal
    }
}

/// One Kafka record waiting in the outbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub topic: String,
    pub key: Vec<u8>,
    pub value: Vec<u8>,
    pub headers: Vec<(String, String)>,
    /// Event kind name (metric label).
    pub kind: String,
    /// Store id (metric label, also the key for store events).
    pub store: String,
    pub received_at_ms: i64,
}

impl Record {
    /// Bytes this record counts against the outbox bound.
    pub fn size(&self) -> usize {
        self.topic.len()
            + self.key.len()
            + self.value.len()
            + self.kind.len()
            + self.store.len()
            + self
                .headers
                .iter()
                .map(|(k, v)| k.len() + v.len() + 6)
                .sum::<usize>()
            + 16
    }
}

/// A stored record and its outbox id.
#[derive(Debug, Clone)]
pub struct Row {
    pub id: u64,
    pub record: Arc<Record>,
}

pub(crate) fn encode_headers(h: &[(String, String)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (k, v) in h {
        out.extend_from_slice(&(k.len() as u32).to_le_bytes());
        out.extend_from_slice(k.as_bytes());
        out.extend_from_slice(&(v.len() as u32).to_le_bytes());
        out.extend_from_slice(v.as_bytes());
    }
    out
}

pub(crate) fn decode_headers(mut b: &[u8]) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let take = |b: &mut &[u8]| -> Option<String> {
        let len = u32::from_le_bytes(b.get(..4)?.try_into().ok()?) as usize;
        let s = String::from_utf8_lossy(b.get(4..4 + len)?).into_owned();
        *b = &b[4 + len..];
        Some(s)
    };
    while !b.is_empty() {
        match (take(&mut b), take(&mut b)) {
            (Some(k), Some(v)) => out.push((k, v)),
            _ => break,
        }
    }
    out
}

/// Messages to the writer thread. `A` is what the caller needs back once a record is durable
/// (the MQTT message to ack).
pub enum WriterMsg<A> {
    Append(Record, A),
    /// Already dead-lettered or ignored inputs that need no record but must be acked in order.
    AckOnly(A),
    /// Kafka confirmed these ids.
    Delivered(Vec<u64>),
    /// Replace the record under `id` (Kafka refused it for good: it becomes a dead letter).
    Replace(u64, Record),
    /// Move the record under `id` into the quarantine table with this reason (Kafka cannot take
    /// its topic); `tillctl outbox redrive` puts it back.
    Quarantine(u64, String),
    /// Commit what is pending now, then answer.
    Flush(tokio::sync::oneshot::Sender<()>),
    Shutdown,
}

/// Opens (creating if needed) the outbox database with the durability settings.
fn open(path: &Path) -> Result<Connection, OutboxError> {
    let conn = Connection::open(path)?;
    // Before the first table (it only takes effect on a new database): lets a writer whose disk
    // filled up give the pages of deleted records back to the filesystem.
    conn.pragma_update(None, "auto_vacuum", "INCREMENTAL")?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.pragma_update(None, "journal_size_limit", 64 * 1024 * 1024)?;
    conn.busy_timeout(Duration::from_secs(10))?;
    conn.execute_batch(
        "CREATE TABLE IF NOT EXISTS outbox (
            id INTEGER PRIMARY KEY,
            topic TEXT NOT NULL,
            key BLOB NOT NULL,
            value BLOB NOT NULL,
            headers BLOB NOT NULL,
            kind TEXT NOT NULL,
            store TEXT NOT NULL,
            received_at INTEGER NOT NULL,
            size INTEGER NOT NULL
        );
        CREATE TABLE IF NOT EXISTS outbox_quarantine (
            id INTEGER PRIMARY KEY,
            topic TEXT NOT NULL,
            key BLOB NOT NULL,
            value BLOB NOT NULL,
            headers BLOB NOT NULL,
            kind TEXT NOT NULL,
            store TEXT NOT NULL,
            received_at INTEGER NOT NULL,
            size INTEGER NOT NULL,
            reason TEXT NOT NULL,
            quarantined_at INTEGER NOT NULL,
            redrive INTEGER NOT NULL DEFAULT 0
        );",
    )?;
    Ok(conn)
}

/// Handles returned by [`start`].
pub struct Outbox<A> {
    pub tx: Sender<WriterMsg<A>>,
    pub shared: Arc<Shared>,
    pub reader: Reader,
    pub thread: std::thread::JoinHandle<Result<(), OutboxError>>,
}

impl<A> std::fmt::Debug for Outbox<A> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Outbox")
            .field("shared", &self.shared)
            .finish_non_exhaustive()
    }
}

/// Opens the outbox in `cfg.dir` and starts the writer thread. Durable acks come back on `acks`
/// in exactly the order the messages were sent to the writer.
pub fn start<A: Send + 'static>(
    cfg: &OutboxConfig,
    acks: tokio::sync::mpsc::UnboundedSender<Vec<A>>,
) -> Result<Outbox<A>, OutboxError> {
    std::fs::create_dir_all(&cfg.dir).map_err(|source| OutboxError::Io {
        path: cfg.dir.display().to_string(),
        source,
    })?;
    let path = cfg.dir.join("outbox.db");
    let conn = open(&path)?;
    if cfg.disk_reserve_bytes > 0 {
        // The WAL's content must fit into the main file for a checkpoint to give its space
        // back: keep the WAL within half the reserve, which a full disk gets back.
        let pages = (cfg.disk_reserve_bytes / 2 / 4096).max(16);
        conn.pragma_update(None, "wal_autocheckpoint", pages as i64)?;
    }
    let (min, max, count, bytes): (Option<i64>, Option<i64>, i64, Option<i64>) = conn.query_row(
        "SELECT MIN(id), MAX(id), COUNT(*), SUM(size) FROM outbox",
        [],
        |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
    )?;
    let oldest: Option<i64> = conn
        .query_row(
            "SELECT received_at FROM outbox ORDER BY id LIMIT 1",
            [],
            |r| r.get(0),
        )
        .ok();
    let max = max.unwrap_or(0) as u64;
    let shared = Arc::new(Shared {
        hot: Mutex::new(Hot::default()),
        notify: tokio::sync::Notify::new(),
        committed_max: AtomicU64::new(max),
        depth: AtomicU64::new(count as u64),
        bytes: AtomicU64::new(bytes.unwrap_or(0) as u64),
        full: AtomicBool::new(false),
        disk_stalled: AtomicBool::new(false),
        oldest_received_at_ms: AtomicI64::new(oldest.unwrap_or(0)),
        first_id: min.map(|v| v as u64).unwrap_or(max + 1),
    });
    if count > 0 {
        tracing::info!(
            records = count,
            first = min,
            last = max,
            "outbox holds records from a previous run: draining them first"
        );
    }
    let reader = Reader {
        conn: Connection::open_with_flags(
            &path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?,
    };
    reader.conn.busy_timeout(Duration::from_secs(10))?;
    let (tx, rx) = std::sync::mpsc::channel();
    let writer = Writer {
        conn,
        cfg: cfg.clone(),
        shared: shared.clone(),
        next_id: max + 1,
        acks,
        reserve: disk::Reserve::take(&cfg.dir, cfg.disk_reserve_bytes),
        stalled: None,
        redriving: Default::default(),
        last_redrive_check: std::time::Instant::now(),
    };
    let thread = std::thread::Builder::new()
        .name("outbox-writer".into())
        .spawn(move || writer.run(rx))
        .map_err(|source| OutboxError::Io {
            path: "outbox-writer thread".into(),
            source,
        })?;
    Ok(Outbox {
        tx,
        shared,
        reader,
        thread,
    })
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::Ordering;

    use super::*;

    fn rec(store: &str, n: usize) -> Record {
        Record {
            topic: "t".into(),
            key: store.as_bytes().to_vec(),
            value: vec![n as u8; 100],
            headers: vec![("a".into(), n.to_string()), ("b".into(), String::new())],
            kind: "OrderCreated".into(),
            store: store.into(),
            received_at_ms: tillstream_runtime::clock::now_ms(),
        }
    }

    fn cfg(dir: &Path) -> OutboxConfig {
        OutboxConfig {
            dir: dir.to_path_buf(),
            ..OutboxConfig::default()
        }
    }

    #[test]
    fn headers_round_trip() {
        let h = vec![("x".to_string(), "1".to_string()), ("y".into(), "".into())];
        assert_eq!(decode_headers(&encode_headers(&h)), h);
    }

    #[tokio::test]
    async fn acks_come_back_in_order_after_commit_and_rows_survive_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let (ack_tx, mut ack_rx) = tokio::sync::mpsc::unbounded_channel();
        let ob = start::<u32>(&cfg(dir.path()), ack_tx).unwrap();
        for i in 0..10u32 {
            if i == 4 {
                ob.tx.send(WriterMsg::AckOnly(i)).unwrap();
            } else {
                ob.tx
                    .send(WriterMsg::Append(rec("s1", i as usize), i))
                    .unwrap();
            }
        }
        let mut got = Vec::new();
        while got.len() < 10 {
            got.extend(ack_rx.recv().await.unwrap());
        }
        assert_eq!(got, (0..10).collect::<Vec<_>>());
        assert_eq!(ob.shared.committed_max.load(Ordering::Relaxed), 9);
        let hot = ob.shared.take_hot(1, 100).unwrap();
        assert_eq!(hot.len(), 9);
        assert_eq!(hot[3].record.value[0], 3);
        assert_eq!(hot[4].record.value[0], 5);
        // Deliver the first three, then stop.
        ob.tx.send(WriterMsg::Delivered(vec![1, 2, 3])).unwrap();
        ob.tx.send(WriterMsg::Shutdown).unwrap();
        ob.thread.join().unwrap().unwrap();
        drop(ob.reader);

        // Restart: the six undelivered rows are there, from id 4.
        let (ack_tx, _ack_rx) = tokio::sync::mpsc::unbounded_channel();
        let mut ob = start::<u32>(&cfg(dir.path()), ack_tx).unwrap();
        assert_eq!(ob.shared.first_id, 4);
        assert_eq!(ob.shared.depth.load(Ordering::Relaxed), 6);
        let rows = ob.reader.read_range(4, 9, 100).unwrap();
        assert_eq!(
            rows.iter().map(|r| r.id).collect::<Vec<_>>(),
            vec![4, 5, 6, 7, 8, 9]
        );
        assert_eq!(*rows[0].record, {
            let mut r = rec("s1", 3);
            r.received_at_ms = rows[0].record.received_at_ms;
            r
        });
        assert!(ob.shared.take_hot(4, 10).is_none());
        ob.tx.send(WriterMsg::Shutdown).unwrap();
        ob.thread.join().unwrap().unwrap();
    }

    #[tokio::test]
    async fn a_full_outbox_stops_acking_until_deliveries_free_room() {
        let dir = tempfile::tempdir().unwrap();
        let one = rec("s1", 0).size() as u64;
        let c = OutboxConfig {
            max_bytes: one * 3,
            ..cfg(dir.path())
        };
        let (ack_tx, mut ack_rx) = tokio::sync::mpsc::unbounded_channel();
        let ob = start::<u32>(&c, ack_tx).unwrap();
        for i in 0..5u32 {
            ob.tx
                .send(WriterMsg::Append(rec("s1", i as usize), i))
                .unwrap();
        }
        let mut got = Vec::new();
        while got.len() < 3 {
            got.extend(ack_rx.recv().await.unwrap());
        }
        assert_eq!(got, vec![0, 1, 2]);
        // Two are held back, unacked, and the alarm is up.
        let waited = tokio::time::timeout(Duration::from_millis(400), ack_rx.recv()).await;
        assert!(waited.is_err(), "nothing more may be acked while full");
        assert!(ob.shared.full.load(Ordering::Relaxed));
        ob.tx.send(WriterMsg::Delivered(vec![1, 2])).unwrap();
        while got.len() < 5 {
            got.extend(ack_rx.recv().await.unwrap());
        }
        assert_eq!(got, vec![0, 1, 2, 3, 4]);
        ob.tx.send(WriterMsg::Shutdown).unwrap();
        ob.thread.join().unwrap().unwrap();
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn a_full_disk_stops_acking_keeps_deleting_and_resumes_by_itself() {
        let disk = tillstream_integration_tests::SmallDisk::mount("4m");
        let c = OutboxConfig {
            max_batch: 20,
            disk_reserve_bytes: 512 * 1024,
            ..cfg(disk.path())
        };
        let (ack_tx, mut ack_rx) = tokio::sync::mpsc::unbounded_channel();
        let ob = start::<u32>(&c, ack_tx).unwrap();
        let big = |i: u32| Record {
            value: vec![i as u8; 8 * 1024],
            ..rec("s1", i as usize)
        };
        // Twice what the disk holds.
        let total = 500u32;
        for i in 0..total {
            ob.tx.send(WriterMsg::Append(big(i), i)).unwrap();
        }
        let mut got: Vec<u32> = Vec::new();
        while let Ok(Some(b)) = tokio::time::timeout(Duration::from_secs(2), ack_rx.recv()).await {
            got.extend(b);
        }
        assert!(
            !got.is_empty() && (got.len() as u32) < total,
            "the disk must fill up part of the way: {} acked",
            got.len()
        );
        assert!(
            ob.shared.disk_stalled.load(Ordering::Relaxed),
            "the writer says its disk is stalled"
        );
        assert!(
            !ob.thread.is_finished(),
            "the writer must not stop on a full disk"
        );
        // Kafka confirms what is stored: the deletes must commit on the full disk, room returns,
        // and the rest is appended and acked by itself, in order.
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        let mut delivered = 0usize;
        while (got.len() as u32) < total {
            assert!(
                std::time::Instant::now() < deadline,
                "stuck at {} of {total} acks",
                got.len()
            );
            if delivered < got.len() {
                let ids: Vec<u64> = (delivered as u64 + 1..=got.len() as u64).collect();
                delivered = got.len();
                ob.tx.send(WriterMsg::Delivered(ids)).unwrap();
            }
            if let Ok(Some(b)) =
                tokio::time::timeout(Duration::from_millis(500), ack_rx.recv()).await
            {
                got.extend(b);
            }
        }
        assert_eq!(got, (0..total).collect::<Vec<_>>(), "acks in arrival order");
        assert!(!ob.shared.disk_stalled.load(Ordering::Relaxed));
        ob.tx.send(WriterMsg::Shutdown).unwrap();
        ob.thread.join().unwrap().unwrap();
    }
}
