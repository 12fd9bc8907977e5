-- Shipping's saga state per order (domain::OrderShipment as JSON), locked per event.
-- Shipping alone decides whether an order ships: the saga's point of no return.
CREATE TABLE order_shipments (
    order_id   uuid PRIMARY KEY,
    state      jsonb NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now()
);
