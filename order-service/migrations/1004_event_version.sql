-- Stored events can evolve: each row says which shape its `data` was written in, and the
-- service upcasts older shapes when it reads them (src/store/upcaster.rs). Rows written
-- before this column existed are version 1; new rows always name their version.
ALTER TABLE order_events ADD COLUMN event_version smallint NOT NULL DEFAULT 1;
ALTER TABLE order_events ALTER COLUMN event_version DROP DEFAULT;
