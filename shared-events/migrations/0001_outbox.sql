-- Events waiting to be published, written in the same transaction as the state change
-- that produced them. The relay deletes a row once Kafka acknowledged its record.
CREATE TABLE outbox (
    id          BIGSERIAL PRIMARY KEY,
    event_id    UUID        NOT NULL UNIQUE,
    event_type  TEXT        NOT NULL,
    topic       TEXT        NOT NULL,
    record_key  TEXT        NOT NULL,
    -- Confluent wire format: magic byte, schema id, Avro datum.
    payload     BYTEA       NOT NULL,
    -- Kafka headers: traceparent, correlation id, event id and type.
    headers     JSONB       NOT NULL DEFAULT '{}'::jsonb,
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- Wakes the relay when rows commit. NOTIFY is transactional: a rolled-back insert never
-- wakes anyone, and one notification per statement is enough.
CREATE FUNCTION outbox_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('outbox', '');
    RETURN NULL;
END;
$$;

CREATE TRIGGER outbox_notify
    AFTER INSERT ON outbox
    FOR EACH STATEMENT EXECUTE FUNCTION outbox_notify();
