-- Durable inventory. PostgreSQL is the truth per SKU and the last line of defence against
-- oversell: Redis admits reservations fast, and inventory-svc records each admitted reservation
-- here (in group commits) before it answers; a reservation that does not fit what this table
-- holds is refused, whatever Redis said.

-- `quantity` was the amount last set by an operator; it becomes the units still available.
-- Its CHECK (>= 0) stays with it.
ALTER TABLE skus RENAME COLUMN quantity TO available;
ALTER TABLE skus
    ADD COLUMN reserved BIGINT NOT NULL DEFAULT 0 CHECK (reserved >= 0),
    ADD COLUMN sold     BIGINT NOT NULL DEFAULT 0 CHECK (sold >= 0),
    -- The fencing token of the last write made under the SKU's distributed lock; a write with
    -- an older token (a holder whose lease ran out while it was paused) is refused.
    ADD COLUMN fence    BIGINT NOT NULL DEFAULT 0;

-- One row per order that holds or held stock.
CREATE TABLE reservations (
    order_id       UUID PRIMARY KEY,
    state          TEXT NOT NULL CHECK (state IN ('reserved', 'committed', 'released')),
    expires_at     TIMESTAMPTZ NOT NULL,
    release_reason TEXT,
    created_at     TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at     TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- The expiry sweeper's work list: only reservations still holding stock.
CREATE INDEX reservations_expiring ON reservations (expires_at) WHERE state = 'reserved';

CREATE TABLE reservation_items (
    order_id         UUID NOT NULL REFERENCES reservations (order_id) ON DELETE CASCADE,
    sku              TEXT NOT NULL REFERENCES skus (sku),
    quantity         BIGINT NOT NULL CHECK (quantity > 0),
    unit_price_cents BIGINT NOT NULL CHECK (unit_price_cents >= 0),
    PRIMARY KEY (order_id, sku)
);

-- Reservations Redis admitted but PostgreSQL refused (Redis counters ran ahead of the truth,
-- e.g. rebuilt while reservations were in flight). The caller was told the stock was
-- insufficient and nothing was taken; operators and tests count these rows, which stay at zero
-- in normal operation.
CREATE TABLE stock_refusals (
    refusal_id BIGSERIAL PRIMARY KEY,
    order_id   UUID NOT NULL,
    sku        TEXT NOT NULL,
    requested  BIGINT NOT NULL,
    available  BIGINT NOT NULL,
    refused_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
