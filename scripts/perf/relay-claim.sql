-- The relay's claim measured alone (docs/performance.md, "Claims that read only what they
-- take"), on a copy of the outbox's shape in a scratch database:
--
--   createdb relay_claim && psql -d relay_claim -f scripts/perf/relay-claim.sql
--   dropdb relay_claim
--
-- An outbox of 200,000 changes of about 1 KB, all published but the newest 500, with the
-- planner's statistics taken while every id was still to publish and the id table not vacuumed
-- since (as after a burst the relay has just caught up with, before autovacuum comes by). Prints the plan and time of the
-- claim of 500 as one join (the form before), and as the oldest ids first, their rows looked up
-- by primary key after (the form now).
\timing on
create table outbox (id bigserial primary key, shipment_id bigint not null, version bigint not null,
                     payload jsonb not null, created_at timestamptz not null default now());
create table outbox_to_publish (outbox_id bigint primary key);
alter table outbox set (autovacuum_enabled = false);
alter table outbox_to_publish set (autovacuum_enabled = false);
\ir fill-outbox.sql
delete from outbox_to_publish where outbox_id <= 199500;

\echo 'claim as one join (before)'
explain (analyze, buffers, costs off)
select o.id, o.payload
from outbox_to_publish p join outbox o on o.id = p.outbox_id
order by p.outbox_id
limit 500
for update of p skip locked;

\echo 'claim the ids first, then their rows by primary key (now)'
explain (analyze, buffers, costs off)
with p as (select outbox_id from outbox_to_publish order by outbox_id limit 500
           for update skip locked)
select p.outbox_id, o.id, o.payload
from p left join outbox o on o.id = p.outbox_id
order by p.outbox_id;
