//! The restore log's row format: a batch's events of one partition in one row (`cd_event_log`),
//! so a restart rebuilds a partition's timelines from its own database, not from a broker that may
//! have compacted or expired them. Pure encoding; no I/O.

use super::DbError;

/// One store event as the restore log keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventRow {
    pub partition: i32,
    pub offset: i64,
    pub record_time: i64,
    pub schema_id: u32,
    pub datum: Vec<u8>,
}

/// One partition's share of a batch in the restore log: its events encoded as
/// `offset i64 | record_time i64 | schema_id u32 | len u32 | datum` (little endian) each.
#[derive(Debug, Clone, Default)]
pub struct LogChunk {
    pub first_offset: i64,
    pub last_offset: i64,
    pub events: usize,
    pub body: Vec<u8>,
}

impl LogChunk {
    /// Appends an event (in offset order).
    pub fn push(&mut self, offset: i64, record_time: i64, schema_id: u32, datum: &[u8]) {
        if self.events == 0 {
            self.first_offset = offset;
        }
        self.last_offset = offset;
        self.events += 1;
        self.body.extend_from_slice(&offset.to_le_bytes());
        self.body.extend_from_slice(&record_time.to_le_bytes());
        self.body.extend_from_slice(&schema_id.to_le_bytes());
        self.body
            .extend_from_slice(&(datum.len() as u32).to_le_bytes());
        self.body.extend_from_slice(datum);
    }
}

/// A log body of `rows` (see [`LogChunk`]).
pub fn encode_log(rows: &[&EventRow]) -> Vec<u8> {
    let mut c = LogChunk::default();
    for r in rows {
        c.push(r.offset, r.record_time, r.schema_id, &r.datum);
    }
    c.body
}

/// The events of a log body ([`encode_log`]).
pub fn decode_log(partition: i32, mut body: &[u8]) -> Result<Vec<EventRow>, DbError> {
    fn take<'a>(b: &mut &'a [u8], n: usize) -> Result<&'a [u8], DbError> {
        if b.len() < n {
            return Err(DbError::Invalid("truncated event log row".into()));
        }
        let (head, rest) = b.split_at(n);
        *b = rest;
        Ok(head)
    }
    let mut out = Vec::new();
    while !body.is_empty() {
        let offset = i64::from_le_bytes(take(&mut body, 8)?.try_into().expect("8 bytes"));
        let record_time = i64::from_le_bytes(take(&mut body, 8)?.try_into().expect("8 bytes"));
        let schema_id = u32::from_le_bytes(take(&mut body, 4)?.try_into().expect("4 bytes"));
        let len = u32::from_le_bytes(take(&mut body, 4)?.try_into().expect("4 bytes")) as usize;
        let datum = take(&mut body, len)?.to_vec();
        out.push(EventRow {
            partition,
            offset,
            record_time,
            schema_id,
            datum,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_bodies_round_trip_and_refuse_truncation() {
        let rows = vec![
            EventRow {
                partition: 3,
                offset: 7,
                record_time: 1_800_000_000_000,
                schema_id: 12,
                datum: vec![1, 2, 3],
            },
            EventRow {
                partition: 3,
                offset: 9,
                record_time: -1,
                schema_id: 0,
                datum: vec![],
            },
        ];
        let refs: Vec<&EventRow> = rows.iter().collect();
        let body = encode_log(&refs);
        assert_eq!(decode_log(3, &body).unwrap(), rows);
        assert!(decode_log(3, &body[..body.len() - 1]).is_err());
    }
}
