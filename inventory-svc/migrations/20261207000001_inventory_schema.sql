-- The inventory schema: the stock of every SKU and the reservations held against it.
-- PostgreSQL is the truth per SKU and the last line of defence against oversell: Redis admits
-- reservations fast, and inventory-svc records each admitted reservation here (in group commits)
-- before it answers; a reservation that does not fit what these rows hold is refused, whatever
-- Redis said. Written and read by inventory-svc only; applied with search_path = inventory at
-- its start-up and by `inventory-svc --migrate-only`.
--
-- An installation from before the per-service schemas (every table in `public`, migrated up to
-- 20261206000001 from runtime/migrations) has its tables moved here, rows, indexes, constraints
-- and sequences with them; a new one has them created. docs/deployment.md, "Upgrading to one
-- schema per service".
DO $$
DECLARE
    owned CONSTANT TEXT[] := ARRAY['skus', 'reservations', 'reservation_items', 'stock_refusals'];
    name TEXT;
BEGIN
    IF to_regclass('public.skus') IS NOT NULL THEN
        IF to_regclass('public._sqlx_migrations') IS NULL OR NOT EXISTS (
            SELECT 1 FROM public._sqlx_migrations WHERE version = 20261206000001 AND success
        ) THEN
            RAISE EXCEPTION 'schema public holds orderflow tables older than migration '
                '20261206000001: upgrade to the last release with one schema first '
                '(docs/deployment.md, "Upgrading to one schema per service")';
        END IF;
        FOREACH name IN ARRAY owned LOOP
            EXECUTE format('ALTER TABLE public.%I SET SCHEMA %I', name, current_schema());
        END LOOP;
        -- The column was `quantity` once; its check keeps the name a new table gives it.
        ALTER TABLE skus RENAME CONSTRAINT skus_quantity_check TO skus_available_check;
        RETURN;
    END IF;

    -- One row per SKU: its price and its units available, reserved and sold.
    CREATE TABLE skus (
        sku         TEXT PRIMARY KEY,
        price_cents BIGINT NOT NULL CHECK (price_cents >= 0),
        available   BIGINT NOT NULL CHECK (available >= 0),
        updated_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
        reserved    BIGINT NOT NULL DEFAULT 0 CHECK (reserved >= 0),
        sold        BIGINT NOT NULL DEFAULT 0 CHECK (sold >= 0),
        -- The fencing token of the last write made under the SKU's distributed lock; a write
        -- with an older token (a holder whose lease ran out while it was paused) is refused.
        fence       BIGINT NOT NULL DEFAULT 0
    );

    -- One row per order that holds or held stock. A reservation is confirmed when an order that
    -- exists claims it; a confirmed one never expires (its order's payment commits it, its
    -- cancellation or expiry releases it). An unconfirmed one is held for its placement, until
    -- `expires_at` (the placement's deadline plus a grace period, on PostgreSQL's clock); after
    -- that, once the order log is known to hold no order for it, its stock returns.
    CREATE TABLE reservations (
        order_id       UUID PRIMARY KEY,
        state          TEXT NOT NULL CHECK (state IN ('reserved', 'committed', 'released')),
        expires_at     TIMESTAMPTZ NOT NULL,
        release_reason TEXT,
        created_at     TIMESTAMPTZ NOT NULL DEFAULT now(),
        updated_at     TIMESTAMPTZ NOT NULL DEFAULT now(),
        confirmed_at   TIMESTAMPTZ
    );
    -- The orphan sweep's work list: reservations held for a placement no order confirmed.
    CREATE INDEX reservations_unconfirmed ON reservations (expires_at)
        WHERE state = 'reserved' AND confirmed_at IS NULL;

    CREATE TABLE reservation_items (
        order_id         UUID NOT NULL REFERENCES reservations (order_id) ON DELETE CASCADE,
        sku              TEXT NOT NULL REFERENCES skus (sku),
        quantity         BIGINT NOT NULL CHECK (quantity > 0),
        unit_price_cents BIGINT NOT NULL CHECK (unit_price_cents >= 0),
        PRIMARY KEY (order_id, sku)
    );

    -- Reservations Redis admitted but PostgreSQL refused (Redis counters ran ahead of the truth,
    -- e.g. rebuilt while reservations were in flight). The caller was told the stock was
    -- insufficient and nothing was taken; operators and tests count these rows, which stay at
    -- zero in normal operation.
    CREATE TABLE stock_refusals (
        refusal_id BIGSERIAL PRIMARY KEY,
        order_id   UUID NOT NULL,
        sku        TEXT NOT NULL,
        requested  BIGINT NOT NULL,
        available  BIGINT NOT NULL,
        refused_at TIMESTAMPTZ NOT NULL DEFAULT now()
    );
END
$$;
