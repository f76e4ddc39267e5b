//! The records a decision becomes, Confluent-framed and ready for the outbox: a raised verdict (its
//! conflict, its compensations, an auto resolution), a supersede (resolution and reversals), a
//! reviewer's resolution. Pure functions of their inputs and the schema ids; no I/O.

use tillstream_contracts::{Compensation, ConflictResolved, EventKind, codec};

use crate::config::DetectorConfig;
use crate::core::{Verdict, records};
use crate::db::OutboxRecord;
use crate::error::DetectorError;

/// Registry ids of the schemas the detector writes.
#[derive(Debug, Clone, Copy)]
pub struct SchemaIds {
    pub conflict: u32,
    pub resolved: u32,
    pub compensation: u32,
}

impl SchemaIds {
    /// The versions written: the latest of each.
    pub const KINDS: [EventKind; 3] = [
        EventKind::ConflictDetected,
        EventKind::ConflictResolved,
        EventKind::Compensation,
    ];

    pub async fn fetch(
        registry: &tillstream_contracts::Registry,
    ) -> Result<SchemaIds, DetectorError> {
        let id = |k: EventKind| registry.schema_id(k, k.latest_version());
        Ok(SchemaIds {
            conflict: id(EventKind::ConflictDetected).await?,
            resolved: id(EventKind::ConflictResolved).await?,
            compensation: id(EventKind::Compensation).await?,
        })
    }
}

/// Builds outbox records for one partition.
#[derive(Debug, Clone)]
pub struct Encoder {
    pub ids: SchemaIds,
    pub conflicts_topic: String,
    pub compensations_topic: String,
}

impl Encoder {
    pub fn new(ids: SchemaIds, cfg: &DetectorConfig) -> Self {
        Encoder {
            ids,
            conflicts_topic: cfg.conflicts_topic.clone(),
            compensations_topic: cfg.compensations_topic.clone(),
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn record<T: serde::Serialize>(
        &self,
        partition: i32,
        kind: EventKind,
        schema_id: u32,
        topic: &str,
        key: &str,
        record_id: &str,
        value: &T,
    ) -> Result<OutboxRecord, DetectorError> {
        let datum = codec::encode_record(kind, value)?;
        Ok(OutboxRecord {
            partition,
            topic: topic.to_string(),
            key: key.to_string(),
            record_id: record_id.to_string(),
            event_type: kind.name(),
            payload: codec::frame(schema_id, datum),
        })
    }

    pub fn compensation(
        &self,
        partition: i32,
        c: &Compensation,
    ) -> Result<OutboxRecord, DetectorError> {
        self.record(
            partition,
            EventKind::Compensation,
            self.ids.compensation,
            &self.compensations_topic,
            &c.store_id,
            &c.compensation_id,
            c,
        )
    }

    pub fn resolved(
        &self,
        partition: i32,
        r: &ConflictResolved,
    ) -> Result<OutboxRecord, DetectorError> {
        self.record(
            partition,
            EventKind::ConflictResolved,
            self.ids.resolved,
            &self.conflicts_topic,
            &r.store_id,
            &records::resolved_id(r),
            r,
        )
    }

    /// A new verdict: conflict, compensations, and the auto resolution if it has one.
    pub fn raised(&self, partition: i32, v: &Verdict) -> Result<Vec<OutboxRecord>, DetectorError> {
        let c = records::detected(v);
        let mut out = vec![self.record(
            partition,
            EventKind::ConflictDetected,
            self.ids.conflict,
            &self.conflicts_topic,
            &c.store_id,
            &c.conflict_id,
            &c,
        )?];
        for comp in &v.compensations {
            out.push(self.compensation(partition, comp)?);
        }
        if let Some(r) = records::auto_resolution(v) {
            out.push(self.resolved(partition, &r)?);
        }
        Ok(out)
    }

    /// A resolution and the compensations it wrote.
    pub fn resolution(
        &self,
        partition: i32,
        r: &ConflictResolved,
        comps: &[Compensation],
    ) -> Result<Vec<OutboxRecord>, DetectorError> {
        let mut out = vec![self.resolved(partition, r)?];
        for c in comps {
            out.push(self.compensation(partition, c)?);
        }
        Ok(out)
    }
}
