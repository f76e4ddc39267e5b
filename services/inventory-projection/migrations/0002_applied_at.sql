-- When each event was applied: the wall-clock time (ms since the Unix epoch) at which the batch that
-- admitted it was written, a few ms before its commit. For freshness questions ("how long after
-- the till sold did this reach the projection?") and the end-to-end latency bench, which reads it
-- instead of polling. Not part of the canonical dump: a replay or rebuild writes other times.
-- NULL for events applied before this migration.
ALTER TABLE blue_applied_event ADD COLUMN applied_at_ms BIGINT;
ALTER TABLE green_applied_event ADD COLUMN applied_at_ms BIGINT;
