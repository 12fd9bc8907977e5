-- The relay sends only the headers a consumer needs before decoding (event type, trace
-- context); the ids travel in the Avro metadata. Trace context gets columns of its own.
--
-- Expand, then contract: `headers` stays (nullable) for one release, so that replicas of the
-- previous release, still running while a rollout migrates, keep inserting, and the new relay
-- reads their trace context from it. A later migration drops it.
ALTER TABLE outbox
    ADD COLUMN traceparent text,
    ADD COLUMN tracestate  text,
    ALTER COLUMN headers DROP NOT NULL;

-- The relay is woken in-process after commit and polls otherwise; the NOTIFY trigger made
-- every outbox-writing commit on the server queue behind one global lock (see outbox.rs).
DROP TRIGGER outbox_notify ON outbox;
DROP FUNCTION outbox_notify();
