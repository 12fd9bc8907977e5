-- The order folded from its history, kept on its projection row: a command locks the row and
-- reads the order in one statement instead of re-reading every event. A cache of
-- order_events (which stays the truth): NULL, or written by another format, means "fold the
-- history"; `order-service rebuild-view` rewrites it with the rest of the row.
ALTER TABLE orders_view ADD COLUMN snapshot jsonb;
