-- Durable store of orderflow. Every service that touches PostgreSQL applies these migrations at
-- start-up (sqlx takes an advisory lock, so replicas starting together are safe).

-- One row per SKU: its price and the quantity last set by an operator.
CREATE TABLE skus (
    sku         TEXT PRIMARY KEY,
    price_cents BIGINT NOT NULL CHECK (price_cents >= 0),
    quantity    BIGINT NOT NULL CHECK (quantity >= 0),
    updated_at  TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE TABLE orders (
    order_id        UUID PRIMARY KEY,
    user_id         TEXT NOT NULL,
    idempotency_key TEXT NOT NULL,
    status          TEXT NOT NULL CHECK (status IN
                        ('PENDING', 'PAID', 'SHIPPED', 'COMPLETED', 'CANCELLED', 'EXPIRED')),
    total_cents     BIGINT NOT NULL CHECK (total_cents >= 0),
    currency        TEXT NOT NULL,
    payment_id      TEXT,
    tracking_number TEXT,
    cancel_reason   TEXT,
    created_at      TIMESTAMPTZ NOT NULL,
    updated_at      TIMESTAMPTZ NOT NULL,
    expires_at      TIMESTAMPTZ,
    -- One order per idempotency key, whatever happens upstream.
    UNIQUE (user_id, idempotency_key)
);

-- ListOrders: one user's orders, newest first, keyset-paginated.
CREATE INDEX orders_by_user_newest ON orders (user_id, created_at DESC, order_id DESC);

CREATE TABLE order_items (
    order_id         UUID NOT NULL REFERENCES orders (order_id) ON DELETE CASCADE,
    line_no          INT NOT NULL CHECK (line_no >= 0),
    sku              TEXT NOT NULL,
    quantity         BIGINT NOT NULL CHECK (quantity > 0),
    unit_price_cents BIGINT NOT NULL CHECK (unit_price_cents >= 0),
    PRIMARY KEY (order_id, line_no)
);

-- Every Kafka event applied, recorded in the same transaction as its effect: a redelivered
-- event finds its id here and changes nothing.
CREATE TABLE processed_events (
    event_id     UUID PRIMARY KEY,
    topic        TEXT NOT NULL,
    order_id     UUID NOT NULL,
    processed_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
