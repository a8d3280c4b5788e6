-- The order lifecycle (PENDING -> PAID -> SHIPPED -> COMPLETED, PENDING -> CANCELLED | EXPIRED).
-- order-api decides every status change in PostgreSQL, in one transaction with its consequences:
-- the history row, the event to publish (outbox) and the stock to commit or release.

-- Incremented by every status change: the cache and watchers keep the copy with the highest.
ALTER TABLE orders ADD COLUMN version BIGINT NOT NULL DEFAULT 1 CHECK (version >= 1);

-- The expiry task's scan: unpaid orders by deadline.
CREATE INDEX orders_pending_by_deadline ON orders (expires_at) WHERE status = 'PENDING';

-- Every status an order had, one row per version.
CREATE TABLE order_status_history (
    order_id   UUID NOT NULL REFERENCES orders (order_id) ON DELETE CASCADE,
    version    BIGINT NOT NULL CHECK (version >= 1),
    status     TEXT NOT NULL,
    reason     TEXT,
    changed_at TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (order_id, version)
);

-- Events decided with a status change and not yet acknowledged by the broker. Written in the
-- change's transaction, so an event can never be lost or published for a change that did not
-- commit; deleted once the broker acknowledged it. `topic` is the unprefixed name.
CREATE TABLE order_outbox (
    id         BIGSERIAL PRIMARY KEY,
    order_id   UUID NOT NULL,
    topic      TEXT NOT NULL,
    event_type TEXT NOT NULL,
    payload    BYTEA NOT NULL,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    attempts   INT NOT NULL DEFAULT 0,
    last_error TEXT
);

-- Stock still to commit (paid) or release (cancelled, expired) in inventory-svc for an order
-- whose status change committed. At most one per order: only PENDING has stock to settle.
CREATE TABLE stock_settlements (
    order_id        UUID PRIMARY KEY,
    action          TEXT NOT NULL CHECK (action IN ('commit', 'release')),
    reason          TEXT NOT NULL,
    created_at      TIMESTAMPTZ NOT NULL DEFAULT now(),
    attempts        INT NOT NULL DEFAULT 0,
    last_error      TEXT,
    next_attempt_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
