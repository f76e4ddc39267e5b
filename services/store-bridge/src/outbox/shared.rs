//! Memory shared by the outbox writer and the drainer: the committed records still hot in memory
//! (so the drainer rarely reads the disk), the depth/bytes/fullness counters, and the drainer's
//! wake-up. No I/O; no delivery guarantee of its own (the disk is the record of truth).

use std::collections::VecDeque;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64};

use super::Row;

/// State shared between the writer thread and the drainer.
#[derive(Debug)]
pub struct Shared {
    pub(super) hot: Mutex<Hot>,
    pub notify: tokio::sync::Notify,
    /// Highest id committed (0 = none yet).
    pub committed_max: AtomicU64,
    pub depth: AtomicU64,
    pub bytes: AtomicU64,
    pub full: AtomicBool,
    /// The disk under the outbox cannot take a commit (full or failing): nothing is acked.
    pub disk_stalled: AtomicBool,
    pub oldest_received_at_ms: AtomicI64,
    /// Lowest id present at start (the drainer begins there).
    pub first_id: u64,
}

#[derive(Debug, Default)]
pub(super) struct Hot {
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

    pub(super) fn push_hot(&self, rows: Vec<Row>, cap: usize) {
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
