-- The dispatcher's claim orders each subscription's due deliveries by (next_attempt_at, id).
-- The index of 0003 ends at next_attempt_at, so Postgres read every due delivery of the
-- subscription and sorted them before taking the first few: with a backlog of thousands, most
-- of a claim's time. With `id` in the index the claim reads exactly the rows it takes (plus
-- any not yet vacuumed), whatever the backlog (docs/performance.md).
--
-- Built without CONCURRENTLY (migrations run in a transaction): on a large `deliveries` table,
-- writes to it wait while it is built. The partial index holds only pending deliveries, so it
-- is built from a scan of the table but is as small as the backlog.
create index deliveries_due_in_order on deliveries (subscription_id, next_attempt_at, id)
    where status = 'pending';
drop index deliveries_due;
