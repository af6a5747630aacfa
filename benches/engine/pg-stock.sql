-- pgbench: one stock change as a transaction of separate statements, the shape the
-- service's slow path has (the guarded update, the ledger row, the idempotency record).
-- Run by benches/engine/ceiling.sh.
\set p random(1, 64)
\set d random(0, 1) * 2 - 1
\set k random(1, 1000000000000)
BEGIN;
UPDATE products SET quantity = quantity + :d, version = version + 1, updated_at = 0
 WHERE id = :p AND deleted_at IS NULL AND quantity + :d >= 0 RETURNING quantity;
INSERT INTO stock_movements (product_id, actor_id, delta, quantity_after, reason, idempotency_key, created_at)
 VALUES (:p, 1, :d, 0, 'SALE', :client_id || '-' || :k, 0) RETURNING id;
INSERT INTO idempotency_keys (user_id, key, operation, request_hash, response, created_at)
 VALUES (1, :client_id || '-' || :k, 'adjustStock', '', '{}', 0) ON CONFLICT DO NOTHING;
COMMIT;
