-- Trace context through the outbox: the W3C `traceparent` of the message whose event became a
-- shipment's new current event, so that the topic publish and every HTTP delivery of that change
-- continue the courier request's trace (docs/metrics.md, "Traces"). Null when that message was
-- not traced. Rows written by an older version simply have none.
alter table outbox add column traceparent text;
alter table deliveries add column traceparent text;
