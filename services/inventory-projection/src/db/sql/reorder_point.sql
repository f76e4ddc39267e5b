-- Reorder points maintained by people (not part of a table set): the file's values replace what
-- was there.
INSERT INTO reorder_point (store_id, sku, reorder_point, reorder_qty)
VALUES {rows}
ON CONFLICT (store_id, sku) DO UPDATE SET
    reorder_point = excluded.reorder_point,
    reorder_qty = excluded.reorder_qty
