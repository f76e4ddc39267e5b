-- Raised verdicts waiting in the batch loop's memory before they are written (`detector.hold_ms`),
-- per input partition: written with each batch that changes the count, so an operator (or the
-- simulator's oracle) can tell that nothing more is coming once the offsets reached the end, the
-- outbox is empty and nothing waits. A restore resets its partition's row.
CREATE TABLE cd_held (
    kafka_partition BIGINT NOT NULL PRIMARY KEY,
    verdicts        BIGINT NOT NULL
);
