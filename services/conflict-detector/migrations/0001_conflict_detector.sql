-- tillstream conflict detector: schema. One dialect for PostgreSQL and SQLite; `{BLOB}` and
-- `{AUTO_ID}` are replaced per backend (BYTEA / BLOB, BIGSERIAL / INTEGER AUTOINCREMENT).
-- Every table is prefixed `cd_` and the migrations are recorded in `_conflict_detector_migrations`:
-- services sharing one PostgreSQL database never touch each other's tables.
-- Integers are BIGINT (times in epoch milliseconds), JSON documents are TEXT.

-- The restore log: the store events the rules took in, one row per input partition per batch
-- (`body`: each event's offset, record time, schema id and Avro datum, see `db::encode_log`), in
-- the batch's transaction. A partition's state is rebuilt by replaying its rows in offset order;
-- the in-memory event-id gate is rebuilt from them too (one row per batch, not per event: a row
-- per event cost as much as the rest of the service together).
CREATE TABLE cd_event_log (
    kafka_partition BIGINT NOT NULL,
    first_offset    BIGINT NOT NULL,
    last_offset     BIGINT NOT NULL,
    events          BIGINT NOT NULL,
    body            {BLOB} NOT NULL,
    PRIMARY KEY (kafka_partition, first_offset)
);

-- Next offset per input partition, written in the batch's own transaction: the consumer starts
-- here (Kafka's committed offsets are only a hint for tools).
CREATE TABLE cd_offset (
    topic           TEXT   NOT NULL,
    kafka_partition BIGINT NOT NULL,
    next_offset     BIGINT NOT NULL,
    PRIMARY KEY (topic, kafka_partition)
);

-- Every approved price list read from the append-only history topic (every store's: an instance
-- needs the lists of whichever stores it is given).
CREATE TABLE cd_price_list (
    event_id       TEXT   NOT NULL PRIMARY KEY,
    store_id       TEXT   NOT NULL,
    price_list_id  TEXT   NOT NULL,
    effective_from BIGINT NOT NULL,
    body           TEXT   NOT NULL
);

-- The conflicts: the detector's verdicts and the dedup's identity collisions. status: open (needs
-- review), closed (info or auto-resolved), resolved (by a reviewer), superseded (no longer holds).
-- `verdict` is the core's JSON (what a supersede needs); queued_at is when it entered the queue
-- (wall clock: only the queue's age reads it, no output does).
CREATE TABLE cd_conflict (
    conflict_id     TEXT   NOT NULL PRIMARY KEY,
    base_id         TEXT   NOT NULL,
    generation      BIGINT NOT NULL,
    store_id        TEXT   NOT NULL,
    kafka_partition BIGINT NOT NULL,
    rule            TEXT   NOT NULL,
    triage          TEXT   NOT NULL,
    owner           TEXT   NOT NULL,
    status          TEXT   NOT NULL,
    sku             TEXT,
    detected_at     BIGINT NOT NULL,
    queued_at       BIGINT NOT NULL,
    detector        TEXT   NOT NULL,
    explanation     TEXT   NOT NULL,
    verdict         TEXT   NOT NULL,
    resolution      TEXT,
    resolved_by     TEXT,
    resolved_at     BIGINT,
    superseded_by   TEXT
);
CREATE INDEX cd_conflict_queue ON cd_conflict (status, queued_at);
CREATE INDEX cd_conflict_partition ON cd_conflict (kafka_partition, status);

-- Every compensation written (reversals too), and which reversal undid it.
CREATE TABLE cd_compensation (
    compensation_id TEXT NOT NULL PRIMARY KEY,
    conflict_id     TEXT NOT NULL,
    body            TEXT NOT NULL,
    reverses        TEXT,
    reversed_by     TEXT
);
CREATE INDEX cd_compensation_conflict ON cd_compensation (conflict_id);

-- Reviewers' decisions: who, when, why, what it did.
CREATE TABLE cd_audit (
    audit_id    TEXT   NOT NULL PRIMARY KEY,
    conflict_id TEXT   NOT NULL,
    action      TEXT   NOT NULL,
    who         TEXT   NOT NULL,
    why         TEXT   NOT NULL,
    at          BIGINT NOT NULL,
    outcome     TEXT   NOT NULL
);
CREATE INDEX cd_audit_conflict ON cd_audit (conflict_id);

-- Records to publish (conflicts, resolutions, compensations), written in the transaction that
-- decided them; the publisher sends them in id order per partition and deletes what the broker
-- acknowledged.
CREATE TABLE cd_outbox (
    outbox_id       {AUTO_ID},
    kafka_partition BIGINT NOT NULL,
    topic           TEXT   NOT NULL,
    record_key      TEXT   NOT NULL,
    record_id       TEXT   NOT NULL,
    event_type      TEXT   NOT NULL,
    payload         {BLOB} NOT NULL
);
CREATE INDEX cd_outbox_partition ON cd_outbox (kafka_partition, outbox_id);
