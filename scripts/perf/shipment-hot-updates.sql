-- Could the merge's update of a shipment it has just created be a HOT update (no new index
-- entries)? docs/performance.md, "shipments written with fillfactor". Runs in a migrated
-- Waybill database (it copies the `shipments` table's shape, indexes included, into `exp_s`,
-- and drops nothing else); one variant a run:
--
--   PGOPTIONS="-c exp.variant=today" psql -d DB -v ff=100 -f scripts/perf/shipment-hot-updates.sql
--
-- exp.variant: `today` (the insert writes the key and source, the merge's update then sets the
-- order number, which an index covers) or `at_create` (the insert writes the order number too,
-- so the update changes no indexed column); ff: the table's fillfactor. Over 200,000 older
-- rows, 2,000 transactions each create 100 shipments and update them with their merged state,
-- and every 20th also adopts 2,000 for the poll scheduler. Prints the seconds, the WAL written,
-- the HOT and all updates, and the table's size with its indexes. `drop table exp_s` after.
\set ON_ERROR_STOP on
drop table if exists exp_s;
create table exp_s (like shipments including all) with (fillfactor = :ff);
-- 200,000 older shipments, so the indexes have some depth
insert into exp_s (tenant, carrier, tracking_number, source, order_number, poll_state, status, version)
select 'default', 'starshipit', 'OLD' || lpad(i::text, 10, '0'), 'starshipit', 'O-OLD' || i, 'off', 'InTransit', 3
from generate_series(1, 200000) i;
vacuum analyze exp_s;
checkpoint;
select pg_current_wal_lsn() as wal0 \gset
select clock_timestamp() as t0 \gset
do $$
declare b int; first_id int8; ocol bool := current_setting('exp.variant') = 'at_create';
begin
  for b in 0..1999 loop
    -- the merge: create 100 shipments, then update them with their merged state
    if ocol then
      insert into exp_s (tenant, carrier, tracking_number, source, order_number)
      select 'default', 'starshipit', 'NEW' || lpad((b * 100 + i)::text, 10, '0'), 'starshipit', 'O-NEW' || (b * 100 + i)
      from generate_series(1, 100) i;
    else
      insert into exp_s (tenant, carrier, tracking_number, source)
      select 'default', 'starshipit', 'NEW' || lpad((b * 100 + i)::text, 10, '0'), 'starshipit'
      from generate_series(1, 100) i;
    end if;
    update exp_s s set current_event_id = md5(s.tracking_number), current_event_at = now(),
        status = 'InTransit', raw_status = 'InTransit', version = 3, last_event_at = now(),
        order_number = coalesce(s.order_number, 'O-' || s.tracking_number),
        last_webhook_at = now(), updated_at = now()
    where s.tenant = 'default' and s.carrier = 'starshipit'
      and s.tracking_number between 'NEW' || lpad((b * 100 + 1)::text, 10, '0')
                                and 'NEW' || lpad((b * 100 + 100)::text, 10, '0');
    -- the scheduler's adoption, every 20 batches, as its pass of 2,000
    if b % 20 = 19 then
      update exp_s s set poll_state = 'off'
      where id in (select id from exp_s where poll_state is null order by id limit 2000);
    end if;
    commit;
  end loop;
end $$;
select pg_stat_force_next_flush();
select pg_sleep(0.6);
select extract(epoch from clock_timestamp() - :'t0'::timestamptz) as secs,
       pg_size_pretty(pg_current_wal_lsn() - :'wal0'::pg_lsn) as wal,
       (select n_tup_hot_upd from pg_stat_user_tables where relname = 'exp_s') as hot,
       (select n_tup_upd from pg_stat_user_tables where relname = 'exp_s') as upd,
       pg_size_pretty(pg_total_relation_size('exp_s')) as size;
