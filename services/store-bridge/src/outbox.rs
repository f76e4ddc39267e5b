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

use std::collections::VecDeque;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rusqlite::{Connection, OpenFlags, params};

use crate::config::OutboxConfig;
use crate::metrics as m;

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

fn encode_headers(h: &[(String, String)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (k, v) in h {
        out.extend_from_slice(&(k.len() as u32).to_le_bytes());
        out.extend_from_slice(k.as_bytes());
        out.extend_from_slice(&(v.len() as u32).to_le_bytes());
        out.extend_from_slice(v.as_bytes());
    }
    out
}

fn decode_headers(mut b: &[u8]) -> Vec<(String, String)> {
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
    /// Commit what is pending now, then answer.
    Flush(tokio::sync::oneshot::Sender<()>),
    Shutdown,
}

/// State shared between the writer thread and the drainer.
#[derive(Debug)]
pub struct Shared {
    hot: Mutex<Hot>,
    pub notify: tokio::sync::Notify,
    /// Highest id committed (0 = none yet).
    pub committed_max: AtomicU64,
    pub depth: AtomicU64,
    pub bytes: AtomicU64,
    pub full: AtomicBool,
    pub oldest_received_at_ms: AtomicI64,
    /// Lowest id present at start (the drainer begins there).
    pub first_id: u64,
}

#[derive(Debug, Default)]
struct Hot {
    rows: VecDeque<Row>,
    bytes: usize,
}

impl Shared {
    /// Takes up to `max` consecutive rows starting exactly at `next_id` from memory. Rows below
    /// `next_id` are discarded. Returns `None` when memory does not hold `next_id` (read the disk).
    pub fn take_hot(&self, next_id: u64, max: usize) -> Option<Vec<Row>> {
        let mut hot = self.hot.lock().unwrap_or_else(|p| p.into_inner());
        while hot.rows.front().is_some_and(|r| r.id < next_id) {
            let r = hot.rows.pop_front().expect("front exists");
            hot.bytes -= r.record.size();
        }
        match hot.rows.front() {
            Some(r) if r.id == next_id => {
                let mut out = Vec::new();
                let mut expect = next_id;
                while out.len() < max && hot.rows.front().is_some_and(|r| r.id == expect) {
                    let r = hot.rows.pop_front().expect("front exists");
                    hot.bytes -= r.record.size();
                    expect += 1;
                    out.push(r);
                }
                Some(out)
            }
            _ => None,
        }
    }

    /// The lowest id memory holds (rows below it must come from disk).
    pub fn hot_front(&self) -> Option<u64> {
        let hot = self.hot.lock().unwrap_or_else(|p| p.into_inner());
        hot.rows.front().map(|r| r.id)
    }

    fn push_hot(&self, rows: Vec<Row>, cap: usize) {
        let mut hot = self.hot.lock().unwrap_or_else(|p| p.into_inner());
        for r in rows {
            let size = r.record.size();
            // Over the cap the row stays on disk only; the drainer reads it back from there.
            if hot.bytes + size <= cap {
                hot.bytes += size;
                hot.rows.push_back(r);
            }
        }
    }
}

/// Opens (creating if needed) the outbox database with the durability settings.
fn open(path: &Path) -> Result<Connection, OutboxError> {
    let conn = Connection::open(path)?;
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
        );",
    )?;
    Ok(conn)
}

/// A read-only connection for the drainer (WAL: reads never block the writer).
#[derive(Debug)]
pub struct Reader {
    conn: Connection,
}

impl Reader {
    /// Rows with `from <= id <= to`, ascending, at most `limit`.
    pub fn read_range(
        &mut self,
        from: u64,
        to: u64,
        limit: usize,
    ) -> Result<Vec<Row>, OutboxError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT id, topic, key, value, headers, kind, store, received_at FROM outbox
             WHERE id >= ?1 AND id <= ?2 ORDER BY id LIMIT ?3",
        )?;
        let rows = stmt
            .query_map(params![from as i64, to as i64, limit as i64], |r| {
                let headers: Vec<u8> = r.get(4)?;
                Ok(Row {
                    id: r.get::<_, i64>(0)? as u64,
                    record: Arc::new(Record {
                        topic: r.get(1)?,
                        key: r.get(2)?,
                        value: r.get(3)?,
                        headers: decode_headers(&headers),
                        kind: r.get(5)?,
                        store: r.get(6)?,
                        received_at_ms: r.get(7)?,
                    }),
                })
            })?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(rows)
    }
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

struct Writer<A> {
    conn: Connection,
    cfg: OutboxConfig,
    shared: Arc<Shared>,
    next_id: u64,
    acks: tokio::sync::mpsc::UnboundedSender<Vec<A>>,
}

enum Pending<A> {
    Append(Record, A),
    AckOnly(A),
}

impl<A: Send + 'static> Writer<A> {
    fn run(mut self, rx: Receiver<WriterMsg<A>>) -> Result<(), OutboxError> {
        let mut pending: VecDeque<Pending<A>> = VecDeque::new();
        let mut deletes: Vec<u64> = Vec::new();
        let mut replaces: Vec<(u64, Record)> = Vec::new();
        let mut flushes: Vec<tokio::sync::oneshot::Sender<()>> = Vec::new();
        let mut shutdown = false;
        let mut last_delete_commit = Instant::now();
        let mut last_gauges = Instant::now() - Duration::from_secs(10);
        let mut was_full = false;
        loop {
            // Wait only when there is nothing to do now.
            let can_append = !pending.is_empty() && !self.is_full();
            let wait = if can_append || !replaces.is_empty() || shutdown {
                Duration::ZERO
            } else if !deletes.is_empty() {
                Duration::from_millis(50).saturating_sub(last_delete_commit.elapsed())
            } else if self.is_full() {
                Duration::from_millis(100)
            } else {
                Duration::from_millis(1000)
            };
            let first = if wait.is_zero() {
                None
            } else {
                match rx.recv_timeout(wait) {
                    Ok(msg) => Some(msg),
                    Err(RecvTimeoutError::Timeout) => None,
                    Err(RecvTimeoutError::Disconnected) => Some(WriterMsg::Shutdown),
                }
            };
            let mut absorb = |msg: WriterMsg<A>| match msg {
                WriterMsg::Append(r, a) => pending.push_back(Pending::Append(r, a)),
                WriterMsg::AckOnly(a) => pending.push_back(Pending::AckOnly(a)),
                WriterMsg::Delivered(ids) => deletes.extend(ids),
                WriterMsg::Replace(id, r) => replaces.push((id, r)),
                WriterMsg::Flush(tx) => flushes.push(tx),
                WriterMsg::Shutdown => shutdown = true,
            };
            if let Some(msg) = first {
                absorb(msg);
            }
            while let Ok(msg) = rx.try_recv() {
                absorb(msg);
            }

            // Take what fits: stop at the first record that would overflow the outbox, so acks
            // stay in arrival order.
            let mut batch: Vec<Pending<A>> = Vec::new();
            let mut batch_bytes = 0u64;
            let mut appended = 0usize;
            let depth_bytes = self.shared.bytes.load(Ordering::Relaxed);
            let aged_out = self.aged_out();
            let mut blocked = false;
            while appended < self.cfg.max_batch {
                match pending.front() {
                    None => break,
                    Some(Pending::AckOnly(_)) => {}
                    Some(Pending::Append(r, _)) => {
                        let size = r.size() as u64;
                        let empty = self.shared.depth.load(Ordering::Relaxed) == 0 && appended == 0;
                        if !empty
                            && (aged_out || depth_bytes + batch_bytes + size > self.cfg.max_bytes)
                        {
                            blocked = true;
                            break;
                        }
                        batch_bytes += size;
                        appended += 1;
                    }
                }
                batch.push(pending.pop_front().expect("front exists"));
            }
            let over = depth_bytes + batch_bytes >= self.cfg.max_bytes;
            self.set_full(blocked || aged_out || over, &mut was_full);

            let deletes_due = deletes.len() >= 1000
                || (!deletes.is_empty()
                    && (last_delete_commit.elapsed() >= Duration::from_millis(50) || shutdown));
            let commit = !batch.is_empty() || !replaces.is_empty() || deletes_due;
            if commit {
                let started = Instant::now();
                let (rows, acks, deleted) = self.commit(batch, &deletes, &replaces)?;
                if !deletes.is_empty() {
                    last_delete_commit = Instant::now();
                }
                deletes.clear();
                replaces.clear();
                metrics::histogram!(m::OUTBOX_COMMIT_SECONDS)
                    .record(started.elapsed().as_secs_f64());
                metrics::histogram!(m::OUTBOX_COMMIT_BATCH_EVENTS).record(rows.len() as f64);
                if let Some(last) = rows.last() {
                    self.shared.committed_max.store(last.id, Ordering::Release);
                }
                if !rows.is_empty() {
                    self.shared.push_hot(rows, self.cfg.hot_bytes);
                    self.shared.notify.notify_one();
                }
                if !acks.is_empty() && self.acks.send(acks).is_err() {
                    tracing::debug!("ack receiver gone (shutting down)");
                }
                if deleted > 0 {
                    self.refresh_oldest()?;
                }
            }
            if pending.is_empty() || self.is_full() {
                for f in flushes.drain(..) {
                    let _ = f.send(());
                }
            }
            if last_gauges.elapsed() >= Duration::from_millis(500) {
                self.gauges();
                last_gauges = Instant::now();
            }
            if shutdown && deletes.is_empty() && replaces.is_empty() {
                // Pending appends that did not fit stay unacked: the broker redelivers them.
                for f in flushes.drain(..) {
                    let _ = f.send(());
                }
                self.gauges();
                let _ = self.conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE);");
                tracing::info!(
                    unstored = pending.len(),
                    depth = self.shared.depth.load(Ordering::Relaxed),
                    "outbox writer stopped"
                );
                return Ok(());
            }
        }
    }

    fn aged_out(&self) -> bool {
        let oldest = self.shared.oldest_received_at_ms.load(Ordering::Relaxed);
        self.shared.depth.load(Ordering::Relaxed) > 0
            && oldest > 0
            && tillstream_runtime::clock::now_ms() - oldest > (self.cfg.max_age_s as i64) * 1000
    }

    fn is_full(&self) -> bool {
        self.shared.full.load(Ordering::Relaxed)
    }

    fn set_full(&self, full: bool, was: &mut bool) {
        if full != *was {
            if full {
                tracing::error!(
                    depth = self.shared.depth.load(Ordering::Relaxed),
                    bytes = self.shared.bytes.load(Ordering::Relaxed),
                    "OUTBOX FULL: not acking MQTT until Kafka drains it (the broker holds new messages)"
                );
            } else {
                tracing::warn!("outbox has room again: acking MQTT");
            }
            *was = full;
        }
        self.shared.full.store(full, Ordering::Relaxed);
        metrics::gauge!(m::OUTBOX_FULL).set(if full { 1.0 } else { 0.0 });
    }

    fn gauges(&self) {
        let depth = self.shared.depth.load(Ordering::Relaxed);
        metrics::gauge!(m::OUTBOX_DEPTH).set(depth as f64);
        metrics::gauge!(m::OUTBOX_BYTES).set(self.shared.bytes.load(Ordering::Relaxed) as f64);
        let oldest = self.shared.oldest_received_at_ms.load(Ordering::Relaxed);
        let age = if depth > 0 && oldest > 0 {
            (tillstream_runtime::clock::now_ms() - oldest).max(0) as f64 / 1000.0
        } else {
            0.0
        };
        metrics::gauge!(m::OUTBOX_OLDEST_AGE_SECONDS).set(age);
    }

    fn refresh_oldest(&self) -> Result<(), OutboxError> {
        let oldest: Option<i64> = self
            .conn
            .prepare_cached("SELECT received_at FROM outbox ORDER BY id LIMIT 1")?
            .query_row([], |r| r.get(0))
            .ok();
        self.shared
            .oldest_received_at_ms
            .store(oldest.unwrap_or(0), Ordering::Relaxed);
        Ok(())
    }

    /// One transaction: appends (in order), replacements and deletes; fsync'd at commit.
    #[allow(clippy::type_complexity)]
    fn commit(
        &mut self,
        batch: Vec<Pending<A>>,
        deletes: &[u64],
        replaces: &[(u64, Record)],
    ) -> Result<(Vec<Row>, Vec<A>, usize), OutboxError> {
        let first_id = self.next_id;
        let mut rows = Vec::new();
        let mut acks = Vec::with_capacity(batch.len());
        let mut added_bytes = 0u64;
        let mut removed_bytes = 0u64;
        let mut deleted = 0usize;
        let tx = self.conn.transaction()?;
        {
            let mut ins = tx.prepare_cached(
                "INSERT INTO outbox (id, topic, key, value, headers, kind, store, received_at, size)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
            )?;
            let mut id = first_id;
            for p in batch {
                match p {
                    Pending::AckOnly(a) => acks.push(a),
                    Pending::Append(r, a) => {
                        let size = r.size() as u64;
                        ins.execute(params![
                            id as i64,
                            r.topic,
                            r.key,
                            r.value,
                            encode_headers(&r.headers),
                            r.kind,
                            r.store,
                            r.received_at_ms,
                            size as i64
                        ])?;
                        added_bytes += size;
                        rows.push(Row {
                            id,
                            record: Arc::new(r),
                        });
                        acks.push(a);
                        id += 1;
                    }
                }
            }
            let mut upd = tx.prepare_cached(
                "UPDATE outbox SET topic = ?2, key = ?3, value = ?4, headers = ?5, kind = ?6,
                 store = ?7, size = ?8 WHERE id = ?1",
            )?;
            for (id, r) in replaces {
                upd.execute(params![
                    *id as i64,
                    r.topic,
                    r.key,
                    r.value,
                    encode_headers(&r.headers),
                    r.kind,
                    r.store,
                    r.size() as i64
                ])?;
            }
            let mut del = tx.prepare_cached("DELETE FROM outbox WHERE id = ?1 RETURNING size")?;
            for id in deletes {
                let size: Option<i64> = del.query_row(params![*id as i64], |r| r.get(0)).ok();
                if let Some(s) = size {
                    removed_bytes += s as u64;
                    deleted += 1;
                }
            }
        }
        tx.commit()?;
        self.next_id = first_id + rows.len() as u64;
        let depth = self.shared.depth.load(Ordering::Relaxed) + rows.len() as u64 - deleted as u64;
        self.shared.depth.store(depth, Ordering::Relaxed);
        let bytes =
            (self.shared.bytes.load(Ordering::Relaxed) + added_bytes).saturating_sub(removed_bytes);
        self.shared.bytes.store(bytes, Ordering::Relaxed);
        if let Some(first) = rows.first()
            && self.shared.oldest_received_at_ms.load(Ordering::Relaxed) == 0
        {
            self.shared
                .oldest_received_at_ms
                .store(first.record.received_at_ms, Ordering::Relaxed);
        }
        if depth == 0 {
            self.shared
                .oldest_received_at_ms
                .store(0, Ordering::Relaxed);
        }
        Ok((rows, acks, deleted))
    }
}

#[cfg(test)]
mod tests {
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
}
