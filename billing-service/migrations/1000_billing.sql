-- Customer accounts. The balance may go negative down to the credit limit; billing's
-- domain checks that before charging, under the account row's lock.
CREATE TABLE accounts (
    customer_id        text PRIMARY KEY,
    currency           text NOT NULL,
    balance_minor      bigint NOT NULL,
    credit_limit_minor bigint NOT NULL CHECK (credit_limit_minor >= 0),
    updated_at         timestamptz NOT NULL DEFAULT now()
);

-- Billing's saga state per order (domain::OrderPayment as JSON), locked per event.
CREATE TABLE order_payments (
    order_id    uuid PRIMARY KEY,
    state       jsonb NOT NULL,
    customer_id text GENERATED ALWAYS AS
                (coalesce(state -> 'payment' ->> 'customer_id', state ->> 'customer_id')) STORED,
    updated_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX order_payments_by_customer ON order_payments (customer_id);
