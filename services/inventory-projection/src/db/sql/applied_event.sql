-- The idempotency gate: one row per event applied. An event id already here is refused, and the
-- batch applies only the events whose rows come back. applied_at_ms is the batch's write time (not
-- in the canonical dump).
INSERT INTO {color}_applied_event (event_id, store_id, event_type, kafka_partition, kafka_offset,
                                   applied_at_ms)
VALUES {rows}
ON CONFLICT (event_id) DO NOTHING
RETURNING kafka_partition, kafka_offset
