-- An Idempotency-Key is its customer's own: keyed on the key alone, one customer could
-- learn that another had used a key (their own order with it got 422) or claim a key
-- before its owner did (the owner's order got 422). The key now counts per customer.
ALTER TABLE idempotency_keys ADD COLUMN customer_id text;
UPDATE idempotency_keys SET customer_id = request ->> 'customer_id';
ALTER TABLE idempotency_keys ALTER COLUMN customer_id SET NOT NULL;
ALTER TABLE idempotency_keys DROP CONSTRAINT idempotency_keys_pkey;
ALTER TABLE idempotency_keys ADD PRIMARY KEY (customer_id, idempotency_key);
