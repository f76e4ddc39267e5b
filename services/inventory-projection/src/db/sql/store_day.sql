-- Activity per store and business date: every column is a sum.
INSERT INTO {color}_store_day AS t (store_id, business_date, events, offline_events, orders, refunds,
    adjustments)
VALUES {rows}
ON CONFLICT (store_id, business_date) DO UPDATE SET
    events = t.events + excluded.events,
    offline_events = t.offline_events + excluded.offline_events,
    orders = t.orders + excluded.orders,
    refunds = t.refunds + excluded.refunds,
    adjustments = t.adjustments + excluded.adjustments
