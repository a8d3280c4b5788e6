-- Once the broker acknowledged an order's `order-created` event, that order exists: no later
-- failure gives its stock back or lets a retry of its key place another (docs/orders.md).

-- A reservation is confirmed when an order that exists claims it (consumer-worker applying
-- `order-created`, or order-api persisting a cached order first). A confirmed reservation never
-- expires: its order's payment commits it, its cancellation or expiry releases it. An
-- unconfirmed one is held for its placement (until `expires_at`, which now means the
-- placement's deadline plus a grace period, on PostgreSQL's clock); after that, once the order
-- log is known to hold no order for it, its stock returns (inventory-svc's orphan sweep).
ALTER TABLE reservations ADD COLUMN confirmed_at TIMESTAMPTZ;

-- Reservations made before this migration: those whose order is already persisted belong to
-- it. Stop consumer-worker and order-api before upgrading (docs/deployment.md), so no order is
-- persisted meanwhile without confirming its reservation; orders still in the log are
-- confirmed by the new worker as it applies them.
UPDATE reservations r SET confirmed_at = now()
WHERE r.state = 'reserved' AND EXISTS (SELECT 1 FROM orders o WHERE o.order_id = r.order_id);

-- The orphan sweep's work list: reservations held for a placement that no order confirmed.
DROP INDEX reservations_expiring;
CREATE INDEX reservations_unconfirmed ON reservations (expires_at)
    WHERE state = 'reserved' AND confirmed_at IS NULL;

-- An order recorded CANCELLED on arrival because its stock was no longer held (its event
-- reached the log after its reservation was given back, so no client was told it exists) was
-- marked by `cancel_reason = 'stock_not_held'`, a text a client can also send as a cancel
-- reason. The mark gets a column of its own, which no request can write.
ALTER TABLE orders ADD COLUMN voided BOOLEAN NOT NULL DEFAULT false;
UPDATE orders SET voided = true
WHERE cancel_reason = 'stock_not_held' AND status = 'CANCELLED' AND version = 1;

-- A voided order does not hold its idempotency key: the client's retry is the order it heard of.
DROP INDEX orders_one_per_idempotency_key;
CREATE UNIQUE INDEX orders_one_per_idempotency_key ON orders (user_id, idempotency_key)
    WHERE NOT voided;
