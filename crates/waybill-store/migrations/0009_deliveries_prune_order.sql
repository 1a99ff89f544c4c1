-- The prune (`fanout.retention`) deletes delivered deliveries older than the retention. It
-- looked for them in id order through the primary key, so with a long history younger than the
-- retention it read every delivered row each minute to find none (2.7 s with 10 M rows,
-- docs/performance.md). Indexed by when they were delivered, it reads only what it deletes.
--
-- Built without CONCURRENTLY, like 0008: writes to a large `deliveries` table wait while it
-- is built.
create index deliveries_delivered_at on deliveries (delivered_at) where status = 'delivered';
