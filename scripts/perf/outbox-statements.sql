-- The outbox's statements measured alone (docs/performance.md, "outbox_to_publish"), on a copy
-- of the outbox's shape in a scratch database:
--
--   createdb outbox_statements && psql -d outbox_statements -f scripts/perf/outbox-statements.sql
--   dropdb outbox_statements
--
-- Prints the time of: marking 200,000 rows of about 1 KB published the old way (an update of
-- `published_at`) and the new way (a delete from the id table), 400 statements of 500 each;
-- inserting 100,000 rows in statements of 500 without and with the trigger that fills the id
-- table; and the retention's outbox pass with nothing old, in its old form (no bound) and its
-- new one (bounded by the first row written within the retention).
\timing on
create table outbox (id bigserial primary key, shipment_id bigint not null, version bigint not null,
                     payload jsonb not null, created_at timestamptz not null default now(),
                     published_at timestamptz, fanned_out_at timestamptz default now(),
                     unique (shipment_id, version));
create index outbox_unpublished on outbox (id) where published_at is null;
create index outbox_not_fanned_out on outbox (id) where fanned_out_at is null;
create table outbox_to_publish (outbox_id bigint primary key);
\ir fill-outbox.sql
select pg_size_pretty(pg_total_relation_size('outbox')) as outbox_before;
\echo 'mark published: update published_at'
do $$ begin for i in 0..399 loop
    update outbox set published_at = now()
    where id = any(array(select generate_series(i * 500 + 1, i * 500 + 500)::bigint))
      and published_at is null;
end loop; end $$;
\echo 'mark published: delete from outbox_to_publish'
do $$ begin for i in 0..399 loop
    delete from outbox_to_publish
    where outbox_id = any(array(select generate_series(i * 500 + 1, i * 500 + 500)::bigint));
end loop; end $$;
select pg_size_pretty(pg_total_relation_size('outbox')) as outbox_after_updates;

\echo 'retention pass, nothing old: unbounded, then bounded'
vacuum analyze outbox;
explain analyze select o.id from outbox o
 where o.created_at < now() - interval '7 days' and o.fanned_out_at < now() - interval '7 days'
   and not exists (select 1 from outbox_to_publish p where p.outbox_id = o.id)
 order by o.id limit 5000;
explain analyze select o.id from outbox o
 where o.id < coalesce((select min(y.id) from outbox y where y.created_at >= now() - interval '7 days'),
                       9223372036854775807)
   and o.created_at < now() - interval '7 days' and o.fanned_out_at < now() - interval '7 days'
   and not exists (select 1 from outbox_to_publish p where p.outbox_id = o.id)
 order by o.id limit 5000;

truncate outbox, outbox_to_publish;
vacuum outbox;
vacuum outbox_to_publish;
\echo 'insert 100,000 rows without the trigger'
do $$ begin for i in 0..199 loop
    insert into outbox (shipment_id, version, payload)
    select g, 2, '{"type":"shipment.status_changed","history":[1,2,3]}'
    from generate_series(i * 500 + 1, i * 500 + 500) g;
end loop; end $$;
create function fill_outbox_to_publish() returns trigger language plpgsql as
$f$ begin insert into outbox_to_publish (outbox_id) select id from written; return null; end $f$;
create trigger outbox_to_publish after insert on outbox referencing new table as written
    for each statement execute function fill_outbox_to_publish();
\echo 'insert 100,000 rows with the trigger'
do $$ begin for i in 0..199 loop
    insert into outbox (shipment_id, version, payload)
    select g, 3, '{"type":"shipment.status_changed","history":[1,2,3]}'
    from generate_series(i * 500 + 1, i * 500 + 500) g;
end loop; end $$;
