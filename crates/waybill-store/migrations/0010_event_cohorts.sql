-- `tracking_events` is partitioned by shipment cohort: the events of the shipments created in
-- one calendar month (UTC) live in one partition, `tracking_events_YYYY_MM`. Retention
-- (`database.shipment_retention`) then forgets a month of shipments by dropping one partition,
-- instead of a delete that runs for hours and leaves the table to vacuum.
--
-- The partition key is the shipment id. Shipment ids encode their month: at the start of a
-- month the worker moves `shipments_id_seq` to that month's base, `waybill_cohort_base(month)`,
-- so a shipment's id says which partition holds its whole history. The primary key and every
-- lookup stay `(shipment_id, event_id)` and every lookup by shipment reads one partition.
--
-- Why by shipment and not by event time: the merge needs a shipment's whole history (the
-- current event is a fold over all of it; an out-of-order event reloads every stored key). A
-- partition of event times would drop the old half of a long-lived shipment's history and make
-- the fold disagree with what was published. A cohort partition holds whole histories, so a
-- merge never needs another partition, and dropping one forgets whole shipments.
--
-- On an existing installation this migration renames the old table to
-- `tracking_events_initial` and attaches it, unchanged, as the partition of every shipment
-- created before the migration (no rows are copied; attaching checks its ids once, a scan).

-- The first shipment id of a month's cohort: months since January 2000, shifted left by 32
-- (room for 4 billion shipments a month; ids stay below 2^53 for ten thousand years).
create function waybill_cohort_base(month timestamptz) returns bigint
    language sql stable
    return ((extract(year from month at time zone 'UTC')::bigint - 2000) * 12
            + extract(month from month at time zone 'UTC')::bigint - 1) << 32;

alter table tracking_events rename to tracking_events_initial;
alter index tracking_events_pkey rename to tracking_events_initial_pkey;

create table tracking_events
(
    like tracking_events_initial including defaults including constraints including comments,
    primary key (shipment_id, event_id),
    constraint tracking_events_shipment_fkey foreign key (shipment_id)
        references shipments (id) on delete cascade
) partition by range (shipment_id);

-- The ids below the current month's base: every shipment created before this migration.
do
$$
    begin
        execute format('alter table tracking_events_initial add constraint tracking_events_initial_ids'
                           ' check (shipment_id < %s)', waybill_cohort_base(now()));
        execute format('alter table tracking_events attach partition tracking_events_initial'
                           ' for values from (minvalue) to (%s)', waybill_cohort_base(now()));
        alter table tracking_events_initial drop constraint tracking_events_initial_ids;
    end
$$;

-- A shipment id no partition covers: one created with an explicit id, or one whose cohort
-- retention dropped while a late event for it was being merged. It stays empty in normal use;
-- the worker's maintenance creates a month's partition before the month's ids are handed out.
create table tracking_events_default partition of tracking_events default;

-- Creates the partitions of `at`'s month and the next, when missing, and moves the shipment id
-- sequence to `at`'s month when it is behind. Returns the partitions it created. Serialised by
-- an advisory lock (the sequence must never move backwards). Called by this migration and by
-- the worker's maintenance.
create function waybill_ensure_cohorts(at timestamptz) returns setof text
    language plpgsql as
$$
declare
    month timestamptz;
    name  text;
begin
    perform pg_advisory_xact_lock(hashtext('waybill_ensure_cohorts'));
    for month in select generate_series(date_trunc('month', at, 'UTC'),
                                        date_trunc('month', at, 'UTC') + interval '1 month',
                                        interval '1 month')
        loop
            name := 'tracking_events_' || to_char(month at time zone 'UTC', 'YYYY_MM');
            continue when to_regclass(name) is not null;
            -- Built apart and attached, so the parent is only share-locked (attaching a
            -- partition does not block reads or writes; creating one in place would).
            execute format('create table %I (like tracking_events including all)', name);
            execute format('alter table %I add constraint %I check (shipment_id >= %s and shipment_id < %s)',
                           name, name || '_ids', waybill_cohort_base(month),
                           waybill_cohort_base(month + interval '1 month'));
            execute format('alter table tracking_events attach partition %I for values from (%s) to (%s)',
                           name, waybill_cohort_base(month),
                           waybill_cohort_base(month + interval '1 month'));
            execute format('alter table %I drop constraint %I', name, name || '_ids');
            return next name;
        end loop;
    if (select last_value from shipments_id_seq) < waybill_cohort_base(at) then
        perform setval('shipments_id_seq', waybill_cohort_base(at), false);
    end if;
end
$$;

-- The partitions of `tracking_events` with their ranges of shipment ids: `first_id` is null
-- for the initial partition (from the smallest id) and the default one, `end_id` (exclusive)
-- for the default one.
create function waybill_event_partitions()
    returns table (partition text, relid oid, first_id bigint, end_id bigint, is_default boolean)
    language sql stable as
$$
select c.relname::text, c.oid,
       substring(pg_get_expr(c.relpartbound, c.oid) from $r$FROM \('(-?[0-9]+)'\)$r$)::bigint,
       substring(pg_get_expr(c.relpartbound, c.oid) from $r$ TO \('(-?[0-9]+)'\)$r$)::bigint,
       pg_get_expr(c.relpartbound, c.oid) = 'DEFAULT'
from pg_inherits i
         join pg_class c on c.oid = i.inhrelid
where i.inhparent = 'tracking_events'::regclass
$$;

-- Drops the partitions of the cohorts that ended before `before`'s month began (the initial
-- partition too, once the month of this migration has ended before it) and returns their
-- names. Waits at most 5 s for the lock a drop needs, so a long query on the table delays the
-- retention to the next round instead of queueing every merge behind it. The shipment rows of
-- those cohorts are deleted afterwards, in batches, by the caller.
create function waybill_forget_cohorts(before timestamptz) returns setof text
    language plpgsql as
$$
declare
    partition text;
begin
    set local lock_timeout = '5s';
    -- One process at a time (every worker runs the retention): the second finds nothing left.
    perform pg_advisory_xact_lock(hashtext('waybill_ensure_cohorts'));
    for partition in
        select p.partition from waybill_event_partitions() p
        where p.end_id <= waybill_cohort_base(before)
        order by p.partition
        loop
            execute format('drop table %I', partition);
            return next partition;
        end loop;
end
$$;

select waybill_ensure_cohorts(now());
