-- An operator's word that dead letters need nothing more done: who said it, when and why.
-- The audit of an acknowledgement is kept here, not in Kafka: a dead letter is never
-- rewritten, and an acknowledged one stays in its topic, listable.
CREATE TABLE dead_letter_acknowledgements (
    acknowledgement_id uuid PRIMARY KEY,
    operator           text NOT NULL,
    reason             text NOT NULL,
    acknowledged_at    timestamptz NOT NULL DEFAULT now(),
    -- The group's cause when a whole group was acknowledged; NULL for letters named one
    -- by one.
    cause              jsonb
);

-- The letters each acknowledgement covers, by their place in their dead-letter topic: a
-- place never holds another record. A letter is acknowledged once.
CREATE TABLE acknowledged_dead_letters (
    dead_letter_topic  text NOT NULL,
    partition          integer NOT NULL,
    "offset"           bigint NOT NULL,
    acknowledgement_id uuid NOT NULL REFERENCES dead_letter_acknowledgements,
    PRIMARY KEY (dead_letter_topic, partition, "offset")
);
CREATE INDEX acknowledged_dead_letters_by_acknowledgement
    ON acknowledged_dead_letters (acknowledgement_id);

-- An audit: rows are only ever added.
CREATE FUNCTION acknowledgements_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION '% is append-only', TG_TABLE_NAME;
END $$;
CREATE TRIGGER dead_letter_acknowledgements_append_only
    BEFORE UPDATE OR DELETE ON dead_letter_acknowledgements
    FOR EACH ROW EXECUTE FUNCTION acknowledgements_append_only();
CREATE TRIGGER acknowledged_dead_letters_append_only
    BEFORE UPDATE OR DELETE ON acknowledged_dead_letters
    FOR EACH ROW EXECUTE FUNCTION acknowledgements_append_only();
