-- Rows the broker can never take (a record over its size limit, say), moved out of the
-- outbox so that the rows behind them go on. Kept whole, with the reason, for an operator to
-- fix and re-queue (INSERT ... SELECT back into outbox) or to discard.
CREATE TABLE outbox_dead_letters (
    id           bigint      PRIMARY KEY, -- its outbox id
    event_id     uuid        NOT NULL,
    event_type   text        NOT NULL,
    topic        text        NOT NULL,
    record_key   text        NOT NULL,
    payload      bytea       NOT NULL,
    traceparent  text,
    tracestate   text,
    created_at   timestamptz NOT NULL,
    failed_at    timestamptz NOT NULL DEFAULT now(),
    reason       text        NOT NULL
);
