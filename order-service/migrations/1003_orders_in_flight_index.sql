-- Admission control counts the sagas in flight every half second (up to its threshold);
-- a partial index holds just those, so the count never scans the finished orders.
CREATE INDEX orders_view_in_flight ON orders_view (order_id)
    WHERE status NOT IN ('COMPLETED', 'CANCELLED');
