-- The source of truth: every fact of every order, in the order it was recorded. Rows are
-- only ever appended; the trigger refuses updates and deletes.
CREATE TABLE order_events (
    order_id     uuid NOT NULL,
    sequence     integer NOT NULL,
    event_id     uuid NOT NULL UNIQUE,
    event_type   text NOT NULL,
    producer     text NOT NULL,
    causation_id uuid,
    occurred_at  timestamptz NOT NULL,
    data         jsonb NOT NULL,
    PRIMARY KEY (order_id, sequence)
);

CREATE FUNCTION order_events_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'order_events is append-only';
END $$;
CREATE TRIGGER order_events_append_only BEFORE UPDATE OR DELETE ON order_events
    FOR EACH ROW EXECUTE FUNCTION order_events_append_only();

-- The read model (a projection of order_events), rebuilt by `order-service rebuild-view`.
-- Commands lock an order's row here before reading its history.
CREATE TABLE orders_view (
    order_id         uuid PRIMARY KEY,
    customer_id      text NOT NULL,
    status           text NOT NULL,
    currency         text NOT NULL,
    total_minor      bigint NOT NULL,
    lines            jsonb NOT NULL,
    shipping_address jsonb NOT NULL,
    outcome_reason   text,
    saga_deadline    timestamptz NOT NULL,
    placed_at        timestamptz NOT NULL,
    updated_at       timestamptz NOT NULL,
    version          integer NOT NULL
);
CREATE INDEX orders_view_by_customer ON orders_view (customer_id, order_id DESC);
CREATE INDEX orders_view_by_status ON orders_view (status, order_id DESC);
CREATE INDEX orders_view_deadlines ON orders_view (saga_deadline)
    WHERE status NOT IN ('COMPLETED', 'CANCELLED', 'CANCELLING');

-- order-service's copy of inventory's catalog, kept current from ProductUpserted.
CREATE TABLE catalog (
    product_id         text PRIMARY KEY,
    name               text NOT NULL,
    unit_price_minor   bigint NOT NULL,
    currency           text NOT NULL,
    available_quantity integer NOT NULL,
    updated_at         timestamptz NOT NULL
);

-- POST /orders requests by Idempotency-Key: a replay gets the original answer.
CREATE TABLE idempotency_keys (
    idempotency_key text PRIMARY KEY,
    request         jsonb NOT NULL,
    order_id        uuid NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now()
);
