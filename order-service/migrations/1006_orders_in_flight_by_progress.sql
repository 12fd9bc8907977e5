-- Orders in flight by the time of their last event: `GET /sagas/stuck` reads the oldest
-- (those that made no progress for longest) without scanning the finished orders, and
-- admission control's count of the sagas in flight uses it as it used the index it replaces.
CREATE INDEX orders_view_in_flight_by_progress ON orders_view (updated_at)
    WHERE status NOT IN ('COMPLETED', 'CANCELLED');
DROP INDEX orders_view_in_flight;
