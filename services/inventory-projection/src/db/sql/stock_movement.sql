-- The stock movement ledger: one row per stock-moving event line, written once.
INSERT INTO {color}_stock_movement (event_id, line_no, store_id, sku, movement, qty_delta,
    counted_qty, occurred_at, kafka_partition, kafka_offset)
VALUES {rows}
ON CONFLICT (event_id, line_no) DO NOTHING
