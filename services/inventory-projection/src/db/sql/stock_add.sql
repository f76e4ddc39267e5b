-- Stock rows the batch only adds to (no blind count): on-hand and version are sums, the last event
-- is the batch's (later in stream order), the flag follows the new on-hand.
INSERT INTO {color}_stock AS t (store_id, sku, on_hand, version, last_event_id, last_occurred_at,
    below_zero)
VALUES {rows}
ON CONFLICT (store_id, sku) DO UPDATE SET
    on_hand = t.on_hand + excluded.on_hand,
    version = t.version + excluded.version,
    last_event_id = excluded.last_event_id,
    last_occurred_at = excluded.last_occurred_at,
    below_zero = CASE WHEN t.on_hand + excluded.on_hand < 0 THEN 1 ELSE 0 END
RETURNING below_zero
