-- Analyst views over the active table set. `{c}` is replaced by the active colour (blue/green) and
-- `{now_ms}` by the dialect's "now in epoch ms" (the only dialect-specific text; used by
-- store_sync_status alone). Recreated on every start and by `rebuild` when it switches sets.
-- Statements are separated by lines holding only ';;'.

-- Stock on hand per (store, sku). below_zero = 1: the stream sold more than it knew was there.
CREATE VIEW stock_on_hand AS
SELECT store_id, sku, on_hand, version, last_event_id, last_occurred_at, below_zero
FROM {c}_stock
;;
-- The stock movement ledger (one row per stock-moving event line).
CREATE VIEW stock_movement AS
SELECT event_id, line_no, store_id, sku, movement, qty_delta, counted_qty, occurred_at,
       kafka_partition, kafka_offset
FROM {c}_stock_movement
;;
-- Sales per store, sku, UTC hour (hour_start in epoch ms) and currency; money in minor units.
CREATE VIEW sales_hourly AS
SELECT store_id, sku, hour_start, currency, qty_sold, gross_minor, discounts_minor, tax_minor,
       net_minor, qty_returned, refunded_minor, refunded_tax_minor, sale_lines, refund_lines
FROM {c}_sales_hourly
;;
-- Reservations (soft holds) and their status: REQUESTED, GRANTED, RELEASED, EXPIRED.
CREATE VIEW reservation AS
SELECT store_id, reservation_id, sku, status, requested_qty, granted_qty, released_qty,
       requested_at, granted_at, granted_by, expires_at, released_at, release_reason, order_ref
FROM {c}_reservation
;;
-- Activity per store and business date.
CREATE VIEW store_day_activity AS
SELECT store_id, business_date, events, offline_events, orders, refunds, adjustments
FROM {c}_store_day
;;
-- Where the projection stands in the topic, per partition.
CREATE VIEW projection_offsets AS
SELECT topic, kafka_partition, next_offset FROM {c}_consumer_offset
;;
-- Sync status per store. events_today / offline_events_today are for the store's latest business
-- date; minutes_since_seen is measured against the database clock at query time.
CREATE VIEW store_sync_status AS
SELECT s.store_id, s.last_event_at, s.last_seen_at, s.last_lag_ms, s.max_lag_ms,
       s.last_business_date, s.events_total, s.offline_events_total, s.last_event_id,
       COALESCE(d.events, 0) AS events_today,
       COALESCE(d.offline_events, 0) AS offline_events_today,
       ({now_ms} - s.last_seen_at) / 60000 AS minutes_since_seen
FROM {c}_store_sync s
LEFT JOIN {c}_store_day d ON d.store_id = s.store_id AND d.business_date = s.last_business_date
;;
-- Stock at or below its reorder point (a store's own row, else the '*' default for the sku).
CREATE VIEW stock_below_reorder_point AS
SELECT s.store_id, s.sku, s.on_hand,
       COALESCE(rs.reorder_point, rd.reorder_point) AS reorder_point,
       COALESCE(rs.reorder_qty, rd.reorder_qty) AS reorder_qty,
       s.below_zero
FROM {c}_stock s
LEFT JOIN reorder_point rs ON rs.store_id = s.store_id AND rs.sku = s.sku
LEFT JOIN reorder_point rd ON rd.store_id = '*' AND rd.sku = s.sku
WHERE s.on_hand <= COALESCE(rs.reorder_point, rd.reorder_point)
;;
-- Sell-through per store: units sold (net of returns) / (units sold + units on hand).
CREATE VIEW sell_through_by_store AS
SELECT st.store_id,
       COALESCE(sa.units_sold, 0) AS units_sold,
       st.units_on_hand,
       CAST(COALESCE(sa.units_sold, 0) AS DOUBLE PRECISION)
         / NULLIF(COALESCE(sa.units_sold, 0) + st.units_on_hand, 0) AS sell_through
FROM (SELECT store_id, SUM(CASE WHEN on_hand > 0 THEN on_hand ELSE 0 END) AS units_on_hand
      FROM {c}_stock GROUP BY store_id) st
LEFT JOIN (SELECT store_id, SUM(qty_sold - qty_returned) AS units_sold
           FROM {c}_sales_hourly GROUP BY store_id) sa ON sa.store_id = st.store_id
;;
-- On hand minus units held by granted, unreleased reservations.
CREATE VIEW stock_available AS
SELECT s.store_id, s.sku, s.on_hand,
       COALESCE(r.held, 0) AS held,
       s.on_hand - COALESCE(r.held, 0) AS available
FROM {c}_stock s
LEFT JOIN (SELECT store_id, sku, SUM(COALESCE(granted_qty, requested_qty)) AS held
           FROM {c}_reservation WHERE status = 'GRANTED' GROUP BY store_id, sku) r
  ON r.store_id = s.store_id AND r.sku = s.sku
