//! The drainer's read-only connection to the outbox (WAL: reads never block the writer).
//! No delivery guarantee of its own.

use std::sync::Arc;

use rusqlite::{Connection, params};

use super::{OutboxError, Record, Row, decode_headers};

/// A read-only connection for the drainer (WAL: reads never block the writer).
#[derive(Debug)]
pub struct Reader {
    pub(super) conn: Connection,
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
