-- An order recorded CANCELLED because its stock was no longer held when its event arrived
-- (cancel_reason 'stock_not_held': the API heard no broker acknowledgement, undid the
-- placement and told the client to retry) must not hold the buyer's idempotency key: the
-- client's retry is a new order that was acknowledged, and it must be recorded too.
ALTER TABLE orders DROP CONSTRAINT orders_user_id_idempotency_key_key;
CREATE UNIQUE INDEX orders_one_per_idempotency_key ON orders (user_id, idempotency_key)
    WHERE cancel_reason IS DISTINCT FROM 'stock_not_held';
