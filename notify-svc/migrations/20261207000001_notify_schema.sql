-- The notify schema: user notifications, one row per order event, made from the event by
-- notify-svc's own consumer group and written in the transaction of the event's batch, together
-- with the announcement to live subscribers (pg_notify). Delivery through the configured sink
-- (log or webhook) is tracked on the same row, so a crash between storing and delivering loses
-- nothing. Written and read by notify-svc only; applied with search_path = notify at its
-- start-up and by `notify-svc --migrate-only`.
--
-- An installation from before the per-service schemas (every table in `public`, migrated up to
-- 20261206000001 from runtime/migrations) has its table moved here, rows and indexes with it; a
-- new one has it created. docs/deployment.md, "Upgrading to one schema per service".
DO $$
BEGIN
    IF to_regclass('public.notifications') IS NOT NULL THEN
        IF to_regclass('public._sqlx_migrations') IS NULL OR NOT EXISTS (
            SELECT 1 FROM public._sqlx_migrations WHERE version = 20261206000001 AND success
        ) THEN
            RAISE EXCEPTION 'schema public holds orderflow tables older than migration '
                '20261206000001: upgrade to the last release with one schema first '
                '(docs/deployment.md, "Upgrading to one schema per service")';
        END IF;
        EXECUTE format('ALTER TABLE public.notifications SET SCHEMA %I', current_schema());
        RETURN;
    END IF;

    CREATE TABLE notifications (
        -- UUID v7: time-ordered, so it breaks ties between rows of one batch (same created_at).
        notification_id     UUID PRIMARY KEY,
        -- The event it was made from. A redelivered event (at-least-once Kafka consumption) hits
        -- this constraint and is skipped (ON CONFLICT DO NOTHING): one notification per event.
        event_id            UUID NOT NULL UNIQUE,
        user_id             TEXT NOT NULL,
        order_id            UUID NOT NULL,
        -- The unprefixed topic of the event, e.g. 'order-paid'.
        event_type          TEXT NOT NULL,
        text                TEXT NOT NULL,
        -- When it was stored (the batch transaction's start).
        created_at          TIMESTAMPTZ NOT NULL DEFAULT now(),

        -- Delivery through the sink: 'pending' until the sink accepted it ('delivered') or it
        -- was given up on after the last allowed attempt ('failed'; see last_delivery_error).
        delivery_state      TEXT NOT NULL DEFAULT 'pending'
                                CHECK (delivery_state IN ('pending', 'delivered', 'failed')),
        delivery_attempts   INT NOT NULL DEFAULT 0 CHECK (delivery_attempts >= 0),
        -- A pending notification is not tried again before this (capped exponential backoff).
        next_delivery_at    TIMESTAMPTZ NOT NULL DEFAULT now(),
        delivered_at        TIMESTAMPTZ,
        -- Why the latest failed attempt failed (kept once delivered, for the record).
        last_delivery_error TEXT,
        CHECK ((delivery_state = 'delivered') = (delivered_at IS NOT NULL))
    );

    -- ListNotifications: one user's notifications, newest first, keyset-paginated on
    -- (created_at, notification_id).
    CREATE INDEX notifications_by_user_newest
        ON notifications (user_id, created_at DESC, notification_id DESC);

    -- The delivery task's work list: only notifications still to deliver, by when they are due.
    -- Delivered and failed rows (nearly all of them) stay out of it.
    CREATE INDEX notifications_due ON notifications (next_delivery_at)
        WHERE delivery_state = 'pending';
END
$$;
