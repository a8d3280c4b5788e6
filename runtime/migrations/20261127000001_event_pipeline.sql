-- The asynchronous pipeline (consumer-worker). Events of one order travel on different topics,
-- so they may arrive in any order. A status change that arrives before its order was recorded
-- waits here (its event id is already in processed_events, in the same transaction) until the
-- order's `order-created` arrives; both are then applied together, so the final state is the
-- same whatever the order of arrival.
CREATE TABLE parked_events (
    event_id  UUID PRIMARY KEY,
    order_id  UUID NOT NULL,
    topic     TEXT NOT NULL,
    payload   BYTEA NOT NULL,
    parked_at TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE INDEX parked_events_by_order ON parked_events (order_id);
