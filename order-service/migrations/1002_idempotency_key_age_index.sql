-- Pruning finds keys by age; see shared-events' 0005 for why BRIN.
CREATE INDEX idempotency_keys_created_at ON idempotency_keys USING brin (created_at);
