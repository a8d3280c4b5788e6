-- The orders schema: every order, its lines and history, the events and stock settlements its
-- status changes still owe, and the Kafka events consumer-worker applied. Written by order-api
-- and by consumer-worker, its persistence worker; no other service reads it. Applied with
-- search_path = orders (the schema the connection uses), by both of them at start-up and by
-- `order-api --migrate-only` (sqlx takes an advisory lock, so concurrent starts are safe).
--
-- An installation from before the per-service schemas (every table in `public`, migrated up to
-- 20261206000001 from runtime/migrations) has its tables moved here, rows, indexes, constraints
-- and sequences with them; a new one has them created. docs/deployment.md, "Upgrading to one
-- schema per service".
DO $$
DECLARE
    owned CONSTANT TEXT[] := ARRAY['orders', 'order_items', 'processed_events',
        'order_status_history', 'order_outbox', 'stock_settlements', 'parked_events'];
    name TEXT;
BEGIN
    IF to_regclass('public.orders') IS NOT NULL THEN
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
        RETURN;
    END IF;

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
        -- Incremented by every status change: the cache and watchers keep the highest.
        version         BIGINT NOT NULL DEFAULT 1 CHECK (version >= 1),
        -- Recorded CANCELLED on arrival because its stock was no longer held (its event reached
        -- the log after its reservation was given back, so no client was told it exists). No
        -- request can write this column.
        voided          BOOLEAN NOT NULL DEFAULT false
    );

    -- One order per idempotency key, whatever happens upstream; a voided order does not hold
    -- its key (the client's retry is the order it heard of).
    CREATE UNIQUE INDEX orders_one_per_idempotency_key ON orders (user_id, idempotency_key)
        WHERE NOT voided;
    -- ListOrders: one user's orders, newest first, keyset-paginated.
    CREATE INDEX orders_by_user_newest ON orders (user_id, created_at DESC, order_id DESC);
    -- The expiry task's scan: unpaid orders by deadline.
    CREATE INDEX orders_pending_by_deadline ON orders (expires_at) WHERE status = 'PENDING';

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
    -- change's transaction, so an event can never be lost or published for a change that did
    -- not commit; deleted once the broker acknowledged it. `topic` is the unprefixed name;
    -- `trace_parent` the W3C traceparent of the call that caused it (NULL when tracing is off).
    CREATE TABLE order_outbox (
        id           BIGSERIAL PRIMARY KEY,
        order_id     UUID NOT NULL,
        topic        TEXT NOT NULL,
        event_type   TEXT NOT NULL,
        payload      BYTEA NOT NULL,
        created_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
        attempts     INT NOT NULL DEFAULT 0,
        last_error   TEXT,
        trace_parent TEXT
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

    -- Events of one order travel on different topics, so they may arrive in any order. A status
    -- change that arrives before its order was recorded waits here (its event id is already in
    -- processed_events, in the same transaction) until the order's `order-created` arrives;
    -- both are then applied together.
    CREATE TABLE parked_events (
        event_id  UUID PRIMARY KEY,
        order_id  UUID NOT NULL,
        topic     TEXT NOT NULL,
        payload   BYTEA NOT NULL,
        parked_at TIMESTAMPTZ NOT NULL DEFAULT now()
    );
    CREATE INDEX parked_events_by_order ON parked_events (order_id);
END
$$;
