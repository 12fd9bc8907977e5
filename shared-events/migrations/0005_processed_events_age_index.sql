-- Pruning finds rows by age. BRIN, not B-tree: rows arrive in time order, so a BRIN index
-- is a few pages and costs the hot dedup insert next to nothing.
CREATE INDEX processed_events_processed_at ON processed_events USING brin (processed_at);
