-- Stock rows a blind count in the batch overwrote: on-hand is the batch's (count plus what came
-- after it), version still a sum.
INSERT INTO {color}_stock AS t (store_id, sku, on_hand, version, last_event_id, last_occurred_at,
    below_zero)
VALUES {rows}
ON CONFLICT (store_id, sku) DO UPDATE SET
    on_hand = excluded.on_hand,
    version = t.version + excluded.version,
    last_event_id = excluded.last_event_id,
    last_occurred_at = excluded.last_occurred_at,
    below_zero = excluded.below_zero
RETURNING below_zero
