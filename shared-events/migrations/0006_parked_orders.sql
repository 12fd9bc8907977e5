-- Orders a consumer group holds back after dead-lettering one of their records, and the
-- records of theirs it sets aside meanwhile, in the order they came (consumer/parking.rs).
-- Both are written in the transaction of the batch that decides: the dead-letter decision,
-- the parking of a later record, the redrive that ends it.
CREATE TABLE parked_orders (
    consumer_group  text        NOT NULL,
    order_key       text        NOT NULL,
    -- The dead-lettered record: its event coming again (a redrive) ends the parking.
    event_id        uuid        NOT NULL,
    topic           text        NOT NULL,
    kafka_partition integer     NOT NULL,
    kafka_offset    bigint      NOT NULL,
    reason          text        NOT NULL,
    parked_at       timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (consumer_group, order_key)
);

CREATE TABLE parked_records (
    seq             bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    consumer_group  text        NOT NULL,
    order_key       text        NOT NULL,
    topic           text        NOT NULL,
    kafka_partition integer     NOT NULL,
    kafka_offset    bigint      NOT NULL,
    event_id        uuid        NOT NULL,
    event_type      text        NOT NULL,
    -- The event in the registry's wire format, as the outbox writes one.
    payload         bytea       NOT NULL,
    traceparent     text,
    tracestate      text,
    parked_at       timestamptz NOT NULL DEFAULT now(),
    -- A record delivered again (a crash before its offset was committed) is parked once.
    UNIQUE (consumer_group, topic, kafka_partition, kafka_offset)
);
CREATE INDEX parked_records_of_order ON parked_records (consumer_group, order_key, seq);
