-- The idempotency gate: one row per event applied. An event id already here is refused, and the
-- batch applies only the events whose rows come back.
INSERT INTO {color}_applied_event (event_id, store_id, event_type, kafka_partition, kafka_offset)
VALUES {rows}
ON CONFLICT (event_id) DO NOTHING
RETURNING kafka_partition, kafka_offset
