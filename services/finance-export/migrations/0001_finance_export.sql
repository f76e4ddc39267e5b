-- The finance export's ledger (own namespace: fe_ tables, migrations recorded in
-- _finance_export_migrations). Portable SQL: runs unchanged on PostgreSQL and SQLite.
-- Integers are BIGINT (money in minor units, dates in days since the epoch, flags 0/1): one type
-- that binds and reads as i64 on both drivers.

-- The gate: one row per event (or compensation) ever admitted; also the per-device seq record
-- reconciliation reads gaps from, and the offsets a manifest reports.
CREATE TABLE fe_event (
    event_id TEXT PRIMARY KEY,
    store_id TEXT NOT NULL,
    device_id TEXT NOT NULL,
    seq BIGINT NOT NULL,
    business_date BIGINT NOT NULL,
    -- sale, refund, loyalty, day_close, compensation, other
    kind TEXT NOT NULL,
    -- the order a sale or refund refers to ('' otherwise)
    order_ref TEXT NOT NULL,
    currency TEXT NOT NULL,
    n_lines BIGINT NOT NULL,
    -- the dead-letter reason of an event that could not be booked ('' when booked)
    refused TEXT NOT NULL,
    topic TEXT NOT NULL,
    kafka_partition BIGINT NOT NULL,
    kafka_offset BIGINT NOT NULL,
    -- the store's export that delivered its lines (NULL until then)
    export_seq BIGINT
);
CREATE INDEX fe_event_device ON fe_event (device_id, seq);
CREATE INDEX fe_event_day ON fe_event (store_id, business_date, device_id);
CREATE INDEX fe_event_pending ON fe_event (store_id, export_seq, business_date);
CREATE INDEX fe_event_order ON fe_event (store_id, order_ref);

-- The double-entry lines; debits = credits per event and currency.
CREATE TABLE fe_line (
    event_id TEXT NOT NULL,
    line_no BIGINT NOT NULL,
    source TEXT NOT NULL,
    reference TEXT NOT NULL,
    sku TEXT NOT NULL,
    tender TEXT NOT NULL,
    account_role TEXT NOT NULL,
    account_code TEXT NOT NULL,
    debit_minor BIGINT NOT NULL,
    credit_minor BIGINT NOT NULL,
    PRIMARY KEY (event_id, line_no)
);

-- Every StoreDayClosed, with the till's declared figures (JSON).
CREATE TABLE fe_day_close (
    event_id TEXT PRIMARY KEY,
    store_id TEXT NOT NULL,
    business_date BIGINT NOT NULL,
    device_id TEXT NOT NULL,
    seq BIGINT NOT NULL,
    first_seq BIGINT NOT NULL,
    last_seq BIGINT NOT NULL,
    figures TEXT NOT NULL
);
CREATE INDEX fe_day_close_day ON fe_day_close (store_id, business_date, device_id);

-- Store-days known to the ledger: open until exported.
CREATE TABLE fe_store_day (
    store_id TEXT NOT NULL,
    business_date BIGINT NOT NULL,
    exported BIGINT NOT NULL,
    PRIMARY KEY (store_id, business_date)
);

-- Per store: since when lines or closes for exported days wait for delivery (NULL: nothing).
CREATE TABLE fe_store (
    store_id TEXT PRIMARY KEY,
    pending_since_ms BIGINT
);

-- Exports, numbered per store. delivered = the files are in place.
CREATE TABLE fe_export (
    store_id TEXT NOT NULL,
    export_seq BIGINT NOT NULL,
    business_date BIGINT NOT NULL,
    kind TEXT NOT NULL,
    name TEXT NOT NULL,
    reason TEXT NOT NULL,
    missing_close TEXT NOT NULL,
    delivered BIGINT NOT NULL,
    PRIMARY KEY (store_id, export_seq)
);

-- The reconciliation records an export reported (JSON), per device-day.
CREATE TABLE fe_export_recon (
    store_id TEXT NOT NULL,
    export_seq BIGINT NOT NULL,
    business_date BIGINT NOT NULL,
    device_id TEXT NOT NULL,
    status TEXT NOT NULL,
    revised BIGINT NOT NULL,
    record TEXT NOT NULL,
    PRIMARY KEY (store_id, export_seq, business_date, device_id)
);

-- The next offset per input partition, written in each batch's transaction.
CREATE TABLE fe_consumer_offset (
    topic TEXT NOT NULL,
    kafka_partition BIGINT NOT NULL,
    next_offset BIGINT NOT NULL,
    PRIMARY KEY (topic, kafka_partition)
);
