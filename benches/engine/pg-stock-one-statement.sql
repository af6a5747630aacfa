-- pgbench: the same stock change as one statement (a data-modifying CTE), the shape of
-- the service's PostgreSQL path. Run by benches/engine/ceiling.sh.
\set p random(1, 64)
\set d random(0, 1) * 2 - 1
\set k random(1, 1000000000000)
WITH upd AS (
    UPDATE products SET quantity = quantity + :d, version = version + 1, updated_at = 0
     WHERE id = :p AND deleted_at IS NULL AND quantity + :d >= 0 RETURNING id, quantity
), mv AS (
    INSERT INTO stock_movements (product_id, actor_id, delta, quantity_after, reason, idempotency_key, created_at)
    SELECT id, 1, :d, quantity, 'SALE', :client_id || '-' || :k, 0 FROM upd RETURNING id
), claimed AS (
    INSERT INTO idempotency_keys (user_id, key, operation, request_hash, response, created_at)
    SELECT 1, :client_id || '-' || :k, 'adjustStock', '', '{}', 0 FROM mv ON CONFLICT DO NOTHING
)
SELECT upd.quantity, mv.id FROM upd, mv;
