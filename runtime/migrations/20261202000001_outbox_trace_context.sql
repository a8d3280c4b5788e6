-- The W3C traceparent of the status change that wrote an outbox event, so the event published
-- later by the relay continues the trace of the PayOrder/CancelOrder/... call that caused it.
-- NULL when tracing is off.
ALTER TABLE order_outbox ADD COLUMN trace_parent TEXT;
