-- Reservations: every field first-wins (the stored value beats the batch's) except expires_at,
-- where the latest known value wins; the status follows from the merged fields with the same rule
-- as `ReservationRow::status` (EXPIRED > RELEASED > GRANTED > REQUESTED).
INSERT INTO {color}_reservation AS t (store_id, reservation_id, sku, status, requested_qty,
    granted_qty, released_qty, requested_at, granted_at, granted_by, expires_at, released_at,
    release_reason, order_ref)
VALUES {rows}
ON CONFLICT (store_id, reservation_id) DO UPDATE SET
    requested_qty = COALESCE(t.requested_qty, excluded.requested_qty),
    granted_qty = COALESCE(t.granted_qty, excluded.granted_qty),
    released_qty = COALESCE(t.released_qty, excluded.released_qty),
    requested_at = COALESCE(t.requested_at, excluded.requested_at),
    granted_at = COALESCE(t.granted_at, excluded.granted_at),
    granted_by = COALESCE(t.granted_by, excluded.granted_by),
    expires_at = COALESCE(excluded.expires_at, t.expires_at),
    released_at = COALESCE(t.released_at, excluded.released_at),
    release_reason = COALESCE(t.release_reason, excluded.release_reason),
    order_ref = COALESCE(t.order_ref, excluded.order_ref),
    status = CASE
        WHEN COALESCE(t.release_reason, excluded.release_reason) = 'EXPIRED' THEN 'EXPIRED'
        WHEN COALESCE(t.released_at, excluded.released_at) IS NOT NULL THEN 'RELEASED'
        WHEN COALESCE(t.granted_at, excluded.granted_at) IS NOT NULL THEN 'GRANTED'
        ELSE 'REQUESTED' END
