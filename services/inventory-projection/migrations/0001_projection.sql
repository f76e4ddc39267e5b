-- tillstream inventory projection: schema. One SQL dialect, run unchanged on PostgreSQL and SQLite.
-- Integers are BIGINT (money in minor units, times in epoch milliseconds, flags 0/1), text is TEXT.

-- Which table set the analyst views read and the live consumer writes ('blue' or 'green'). The live
-- consumer locks this row at the start of every batch (UPDATE ... RETURNING), so a switch never
-- interleaves with a batch.
CREATE TABLE projection_state (
    id           BIGINT NOT NULL PRIMARY KEY,
    active_color TEXT   NOT NULL,
    switches     BIGINT NOT NULL
);
INSERT INTO projection_state (id, active_color, switches) VALUES (1, 'blue', 0);

-- Reorder points, maintained by people (not derived from events, so not part of a table set):
-- store_id '*' is the default for every store; a row for a store overrides it.
-- `tillstream-inventory-projection reorder-points FILE.csv` upserts rows from a CSV.
CREATE TABLE reorder_point (
    store_id      TEXT   NOT NULL,
    sku           TEXT   NOT NULL,
    reorder_point BIGINT NOT NULL,
    reorder_qty   BIGINT,
    PRIMARY KEY (store_id, sku)
);

-- ---------------------------------------------------------------------------------------------
-- Table set "blue" (the "green" set below is identical with another prefix). The live consumer
-- writes the active set; `rebuild` replays the topic into the other one and switches the views.
-- Every value below is a function of the event stream (event fields, Kafka coordinates and record
-- timestamps): no wall-clock column, so a replay reproduces the tables byte for byte.
-- ---------------------------------------------------------------------------------------------

-- The idempotency gate: one row per event applied. An event id already here is never applied again.
CREATE TABLE blue_applied_event (
    event_id        TEXT   NOT NULL PRIMARY KEY,
    store_id        TEXT   NOT NULL,
    event_type      TEXT   NOT NULL,
    kafka_partition BIGINT NOT NULL,
    kafka_offset    BIGINT NOT NULL
);

-- Next offset to read per (topic, partition): written in the same transaction as the effects, read
-- on partition assignment. The database, not Kafka, is the source of truth for progress.
CREATE TABLE blue_consumer_offset (
    topic           TEXT   NOT NULL,
    kafka_partition BIGINT NOT NULL,
    next_offset     BIGINT NOT NULL,
    PRIMARY KEY (topic, kafka_partition)
);

-- Stock on hand per (store, sku). version = stock movements applied to the row; last_event_id = the
-- latest (in stream order) event that moved it; below_zero = 1 while on_hand < 0 (recorded, flagged,
-- left to the conflict detector).
CREATE TABLE blue_stock (
    store_id         TEXT   NOT NULL,
    sku              TEXT   NOT NULL,
    on_hand          BIGINT NOT NULL,
    version          BIGINT NOT NULL,
    last_event_id    TEXT   NOT NULL,
    last_occurred_at BIGINT NOT NULL,
    below_zero       BIGINT NOT NULL,
    PRIMARY KEY (store_id, sku)
);

-- The stock movement ledger: one row per stock-moving event line. movement is SALE, RETURN,
-- RECEIPT, SHRINK, TRANSFER_IN, TRANSFER_OUT, COUNT_VARIANCE (qty_delta = counted - expected) or
-- COUNT_SET (a count without expected_on_hand: on-hand overwritten, qty_delta NULL).
CREATE TABLE blue_stock_movement (
    event_id        TEXT   NOT NULL,
    line_no         BIGINT NOT NULL,
    store_id        TEXT   NOT NULL,
    sku             TEXT   NOT NULL,
    movement        TEXT   NOT NULL,
    qty_delta       BIGINT,
    counted_qty     BIGINT,
    occurred_at     BIGINT NOT NULL,
    kafka_partition BIGINT NOT NULL,
    kafka_offset    BIGINT NOT NULL,
    PRIMARY KEY (event_id, line_no)
);
CREATE INDEX blue_stock_movement_store_sku ON blue_stock_movement (store_id, sku);

-- Sales per store, sku, UTC hour of occurred_at (epoch ms of the hour start) and currency. Money in
-- integer minor units. net = gross - discounts + tax (what the customer paid, as in OrderTotals).
CREATE TABLE blue_sales_hourly (
    store_id           TEXT   NOT NULL,
    sku                TEXT   NOT NULL,
    hour_start         BIGINT NOT NULL,
    currency           TEXT   NOT NULL,
    qty_sold           BIGINT NOT NULL,
    gross_minor        BIGINT NOT NULL,
    discounts_minor    BIGINT NOT NULL,
    tax_minor          BIGINT NOT NULL,
    net_minor          BIGINT NOT NULL,
    qty_returned       BIGINT NOT NULL,
    refunded_minor     BIGINT NOT NULL,
    refunded_tax_minor BIGINT NOT NULL,
    sale_lines         BIGINT NOT NULL,
    refund_lines       BIGINT NOT NULL,
    PRIMARY KEY (store_id, sku, hour_start, currency)
);

-- Stock reservations (soft holds). status: REQUESTED, GRANTED, RELEASED or EXPIRED.
CREATE TABLE blue_reservation (
    store_id       TEXT NOT NULL,
    reservation_id TEXT NOT NULL,
    sku            TEXT NOT NULL,
    status         TEXT NOT NULL,
    requested_qty  BIGINT,
    granted_qty    BIGINT,
    released_qty   BIGINT,
    requested_at   BIGINT,
    granted_at     BIGINT,
    granted_by     TEXT,
    expires_at     BIGINT,
    released_at    BIGINT,
    release_reason TEXT,
    order_ref      TEXT,
    PRIMARY KEY (store_id, reservation_id)
);

-- Sync status per store. last_event_at = latest occurred_at (device clock); last_seen_at = latest
-- Kafka record timestamp (when the cloud had it); lag = record timestamp - occurred_at; an event is
-- "offline" when its lag exceeds the configured threshold (it was buffered on a POS).
CREATE TABLE blue_store_sync (
    store_id             TEXT   NOT NULL PRIMARY KEY,
    last_event_at        BIGINT NOT NULL,
    last_seen_at         BIGINT NOT NULL,
    last_lag_ms          BIGINT NOT NULL,
    max_lag_ms           BIGINT NOT NULL,
    last_business_date   BIGINT NOT NULL,
    events_total         BIGINT NOT NULL,
    offline_events_total BIGINT NOT NULL,
    last_event_id        TEXT   NOT NULL
);

-- Activity per store and business date (days since 1970-01-01; the POS business date when the event
-- has one, else the UTC day of occurred_at).
CREATE TABLE blue_store_day (
    store_id       TEXT   NOT NULL,
    business_date  BIGINT NOT NULL,
    events         BIGINT NOT NULL,
    offline_events BIGINT NOT NULL,
    orders         BIGINT NOT NULL,
    refunds        BIGINT NOT NULL,
    adjustments    BIGINT NOT NULL,
    PRIMARY KEY (store_id, business_date)
);

-- ---------------------------------------------------------------------------------------------
-- Table set "green" (the "blue" set above is identical with another prefix). The live consumer
-- writes the active set; `rebuild` replays the topic into the other one and switches the views.
-- Every value below is a function of the event stream (event fields, Kafka coordinates and record
-- timestamps): no wall-clock column, so a replay reproduces the tables byte for byte.
-- ---------------------------------------------------------------------------------------------

-- The idempotency gate: one row per event applied. An event id already here is never applied again.
CREATE TABLE green_applied_event (
    event_id        TEXT   NOT NULL PRIMARY KEY,
    store_id        TEXT   NOT NULL,
    event_type      TEXT   NOT NULL,
    kafka_partition BIGINT NOT NULL,
    kafka_offset    BIGINT NOT NULL
);

-- Next offset to read per (topic, partition): written in the same transaction as the effects, read
-- on partition assignment. The database, not Kafka, is the source of truth for progress.
CREATE TABLE green_consumer_offset (
    topic           TEXT   NOT NULL,
    kafka_partition BIGINT NOT NULL,
    next_offset     BIGINT NOT NULL,
    PRIMARY KEY (topic, kafka_partition)
);

-- Stock on hand per (store, sku). version = stock movements applied to the row; last_event_id = the
-- latest (in stream order) event that moved it; below_zero = 1 while on_hand < 0 (recorded, flagged,
-- left to the conflict detector).
CREATE TABLE green_stock (
    store_id         TEXT   NOT NULL,
    sku              TEXT   NOT NULL,
    on_hand          BIGINT NOT NULL,
    version          BIGINT NOT NULL,
    last_event_id    TEXT   NOT NULL,
    last_occurred_at BIGINT NOT NULL,
    below_zero       BIGINT NOT NULL,
    PRIMARY KEY (store_id, sku)
);

-- The stock movement ledger: one row per stock-moving event line. movement is SALE, RETURN,
-- RECEIPT, SHRINK, TRANSFER_IN, TRANSFER_OUT, COUNT_VARIANCE (qty_delta = counted - expected) or
-- COUNT_SET (a count without expected_on_hand: on-hand overwritten, qty_delta NULL).
CREATE TABLE green_stock_movement (
    event_id        TEXT   NOT NULL,
    line_no         BIGINT NOT NULL,
    store_id        TEXT   NOT NULL,
    sku             TEXT   NOT NULL,
    movement        TEXT   NOT NULL,
    qty_delta       BIGINT,
    counted_qty     BIGINT,
    occurred_at     BIGINT NOT NULL,
    kafka_partition BIGINT NOT NULL,
    kafka_offset    BIGINT NOT NULL,
    PRIMARY KEY (event_id, line_no)
);
CREATE INDEX green_stock_movement_store_sku ON green_stock_movement (store_id, sku);

-- Sales per store, sku, UTC hour of occurred_at (epoch ms of the hour start) and currency. Money in
-- integer minor units. net = gross - discounts + tax (what the customer paid, as in OrderTotals).
CREATE TABLE green_sales_hourly (
    store_id           TEXT   NOT NULL,
    sku                TEXT   NOT NULL,
    hour_start         BIGINT NOT NULL,
    currency           TEXT   NOT NULL,
    qty_sold           BIGINT NOT NULL,
    gross_minor        BIGINT NOT NULL,
    discounts_minor    BIGINT NOT NULL,
    tax_minor          BIGINT NOT NULL,
    net_minor          BIGINT NOT NULL,
    qty_returned       BIGINT NOT NULL,
    refunded_minor     BIGINT NOT NULL,
    refunded_tax_minor BIGINT NOT NULL,
    sale_lines         BIGINT NOT NULL,
    refund_lines       BIGINT NOT NULL,
    PRIMARY KEY (store_id, sku, hour_start, currency)
);

-- Stock reservations (soft holds). status: REQUESTED, GRANTED, RELEASED or EXPIRED.
CREATE TABLE green_reservation (
    store_id       TEXT NOT NULL,
    reservation_id TEXT NOT NULL,
    sku            TEXT NOT NULL,
    status         TEXT NOT NULL,
    requested_qty  BIGINT,
    granted_qty    BIGINT,
    released_qty   BIGINT,
    requested_at   BIGINT,
    granted_at     BIGINT,
    granted_by     TEXT,
    expires_at     BIGINT,
    released_at    BIGINT,
    release_reason TEXT,
    order_ref      TEXT,
    PRIMARY KEY (store_id, reservation_id)
);

-- Sync status per store. last_event_at = latest occurred_at (device clock); last_seen_at = latest
-- Kafka record timestamp (when the cloud had it); lag = record timestamp - occurred_at; an event is
-- "offline" when its lag exceeds the configured threshold (it was buffered on a POS).
CREATE TABLE green_store_sync (
    store_id             TEXT   NOT NULL PRIMARY KEY,
    last_event_at        BIGINT NOT NULL,
    last_seen_at         BIGINT NOT NULL,
    last_lag_ms          BIGINT NOT NULL,
    max_lag_ms           BIGINT NOT NULL,
    last_business_date   BIGINT NOT NULL,
    events_total         BIGINT NOT NULL,
    offline_events_total BIGINT NOT NULL,
    last_event_id        TEXT   NOT NULL
);

-- Activity per store and business date (days since 1970-01-01; the POS business date when the event
-- has one, else the UTC day of occurred_at).
CREATE TABLE green_store_day (
    store_id       TEXT   NOT NULL,
    business_date  BIGINT NOT NULL,
    events         BIGINT NOT NULL,
    offline_events BIGINT NOT NULL,
    orders         BIGINT NOT NULL,
    refunds        BIGINT NOT NULL,
    adjustments    BIGINT NOT NULL,
    PRIMARY KEY (store_id, business_date)
);
