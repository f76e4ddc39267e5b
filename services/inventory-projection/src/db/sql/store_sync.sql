-- Store sync status: times and lags are maxima, totals are sums, the last lag and event are the
-- batch's (later in stream order).
INSERT INTO {color}_store_sync AS t (store_id, last_event_at, last_seen_at, last_lag_ms, max_lag_ms,
    last_business_date, events_total, offline_events_total, last_event_id)
VALUES {rows}
ON CONFLICT (store_id) DO UPDATE SET
    last_event_at = CASE WHEN excluded.last_event_at > t.last_event_at
        THEN excluded.last_event_at ELSE t.last_event_at END,
    last_seen_at = CASE WHEN excluded.last_seen_at > t.last_seen_at
        THEN excluded.last_seen_at ELSE t.last_seen_at END,
    last_lag_ms = excluded.last_lag_ms,
    max_lag_ms = CASE WHEN excluded.max_lag_ms > t.max_lag_ms
        THEN excluded.max_lag_ms ELSE t.max_lag_ms END,
    last_business_date = CASE WHEN excluded.last_business_date > t.last_business_date
        THEN excluded.last_business_date ELSE t.last_business_date END,
    events_total = t.events_total + excluded.events_total,
    offline_events_total = t.offline_events_total + excluded.offline_events_total,
    last_event_id = excluded.last_event_id
