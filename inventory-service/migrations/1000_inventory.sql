-- Stock per product. Reservations move units from available to reserved; releases move
-- them back; the CHECKs make overselling impossible even if the domain had a bug.
CREATE TABLE products (
    product_id       text PRIMARY KEY,
    name             text NOT NULL,
    unit_price_minor bigint NOT NULL CHECK (unit_price_minor > 0),
    currency         text NOT NULL,
    available        integer NOT NULL CHECK (available >= 0),
    reserved         integer NOT NULL DEFAULT 0 CHECK (reserved >= 0),
    updated_at       timestamptz NOT NULL DEFAULT now()
);

-- Inventory's saga state per order (domain::OrderStock as JSON), locked per event.
CREATE TABLE order_reservations (
    order_id   uuid PRIMARY KEY,
    state      jsonb NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now()
);
