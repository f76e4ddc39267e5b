//! `tillctl outbox`: the store bridge's outbox quarantine, where the bridge sets aside records whose
//! Kafka topic cannot take them (it vanished, or the bridge may not write it) so the rest drains.
//! `list` shows them; `redrive` marks them for the running bridge, which puts them back at the end
//! of its outbox within a few seconds, in their original order (a stopped bridge does so at start).
//!
//! Delivery guarantee: nothing is deleted here. A record leaves the quarantine only when the bridge
//! has committed it back into the outbox, in the same transaction.

use std::path::Path;
use std::time::Duration;

use rusqlite::{Connection, params};
use serde::Serialize;

/// One quarantined record, as `list` shows it.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Quarantined {
    /// Its id in the outbox when it was set aside.
    pub id: u64,
    pub topic: String,
    pub store: String,
    pub kind: String,
    /// Why the bridge set it aside (`topic_unknown`, `not_authorized`, `topic_invalid`).
    pub reason: String,
    /// When the bridge received it from MQTT (epoch ms).
    pub received_at: i64,
    /// When it was set aside (epoch ms).
    pub quarantined_at: i64,
    /// Whether a re-drive was requested and the bridge has not taken it back yet.
    pub redrive_requested: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum OutboxCmdError {
    #[error("no outbox at {0} (give the bridge's outbox.dir)")]
    NoOutbox(String),
    #[error("outbox database: {0}")]
    Sqlite(#[from] rusqlite::Error),
}

fn open(dir: &Path) -> Result<Connection, OutboxCmdError> {
    let path = dir.join("outbox.db");
    if !path.exists() {
        return Err(OutboxCmdError::NoOutbox(path.display().to_string()));
    }
    let conn = Connection::open(&path)?;
    // The bridge writes this file too: wait for its commits rather than fail.
    conn.busy_timeout(Duration::from_secs(30))?;
    Ok(conn)
}

/// Which quarantined records a command acts on (both `None` = all).
#[derive(Debug, Clone, Default)]
pub struct Filter {
    pub topic: Option<String>,
    pub reason: Option<String>,
}

/// The quarantined records, oldest first.
pub fn list(dir: &Path, f: &Filter) -> Result<Vec<Quarantined>, OutboxCmdError> {
    let conn = open(dir)?;
    let mut stmt = conn.prepare(
        "SELECT id, topic, store, kind, reason, received_at, quarantined_at, redrive
         FROM outbox_quarantine
         WHERE (?1 IS NULL OR topic = ?1) AND (?2 IS NULL OR reason = ?2)
         ORDER BY id",
    )?;
    let rows = stmt
        .query_map(params![f.topic, f.reason], |r| {
            Ok(Quarantined {
                id: r.get::<_, i64>(0)? as u64,
                topic: r.get(1)?,
                store: r.get(2)?,
                kind: r.get(3)?,
                reason: r.get(4)?,
                received_at: r.get(5)?,
                quarantined_at: r.get(6)?,
                redrive_requested: r.get::<_, i64>(7)? != 0,
            })
        })?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(rows)
}

/// Marks the matching records for re-drive; returns how many were marked.
pub fn redrive(dir: &Path, f: &Filter) -> Result<usize, OutboxCmdError> {
    let conn = open(dir)?;
    Ok(conn.execute(
        "UPDATE outbox_quarantine SET redrive = 1
         WHERE redrive = 0 AND (?1 IS NULL OR topic = ?1) AND (?2 IS NULL OR reason = ?2)",
        params![f.topic, f.reason],
    )?)
}
