-- SQLite only. An integer sum that leaves 64 bits becomes a REAL in SQLite, silently (PostgreSQL
-- refuses it with SQLSTATE 22003). These triggers make SQLite refuse it too: the batch is rejected,
-- and the live loop applies it event by event and dead-letters the one that would overflow
-- (reason aggregate_overflow). Only the sums an event's figures feed are guarded; counts of events
-- cannot reach 2^63.
CREATE TRIGGER IF NOT EXISTS {color}_sales_hourly_overflow BEFORE UPDATE ON {color}_sales_hourly
WHEN typeof(NEW.qty_sold) <> 'integer' OR typeof(NEW.gross_minor) <> 'integer'
    OR typeof(NEW.discounts_minor) <> 'integer' OR typeof(NEW.tax_minor) <> 'integer'
    OR typeof(NEW.net_minor) <> 'integer' OR typeof(NEW.qty_returned) <> 'integer'
    OR typeof(NEW.refunded_minor) <> 'integer' OR typeof(NEW.refunded_tax_minor) <> 'integer'
BEGIN
    SELECT RAISE(ABORT, 'aggregate_overflow: sales_hourly');
END
-- statement
CREATE TRIGGER IF NOT EXISTS {color}_stock_overflow BEFORE UPDATE ON {color}_stock
WHEN typeof(NEW.on_hand) <> 'integer'
BEGIN
    SELECT RAISE(ABORT, 'aggregate_overflow: stock');
END
