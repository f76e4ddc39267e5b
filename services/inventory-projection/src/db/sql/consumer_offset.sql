-- The next offset per partition, written in the batch's transaction. Offsets only move forward: a
-- late batch from a previous owner cannot move them back.
INSERT INTO {color}_consumer_offset AS t (topic, kafka_partition, next_offset)
VALUES {rows}
ON CONFLICT (topic, kafka_partition) DO UPDATE SET
    next_offset = CASE WHEN excluded.next_offset > t.next_offset
        THEN excluded.next_offset ELSE t.next_offset END
