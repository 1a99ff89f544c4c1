-- The outbox rows still to fan out to HTTP subscriptions become a narrow table of their ids,
-- `outbox_to_fan_out`, as migration 11 did for the rows still to publish.
--
-- The fan-out claimed the rows whose `fanned_out_at` is null and, having created their
-- deliveries, set `fanned_out_at`: a rewrite of the whole row (its payload is most of it) and
-- new entries in the outbox's indexes, for every change some subscription wants. Now it deletes
-- the row's id from `outbox_to_fan_out`, and the outbox row is written once.
--
--   outbox insert, fanned_out_at null ──trigger──▶ outbox_to_fan_out ──deliveries created──▶ delete
--
-- The merge is unchanged: it writes a change no subscription wants with `fanned_out_at` set
-- (already fanned out, never claimed) and a wanted one with `fanned_out_at` null. A statement
-- trigger enters the ids of the null ones, so every writer of the outbox, this version's merge
-- and the previous version's, enters its rows in the same transaction.
--
-- `fanned_out_at` now says only how the row was written: the time, when no subscription wanted
-- it; null when one did. Whether it has been fanned out is whether its id is still here. The
-- `outbox_not_fanned_out` index is left for the previous version's relays and dropped in a
-- later release.
--
-- Additive, as every migration (docs/operations.md, "Upgrading"): while a release rolls out, a
-- previous version's relay keeps claiming the rows whose `fanned_out_at` is null, which now
-- include rows this version has fanned out. Fanning a row out twice creates nothing new (one
-- delivery per subscription and row, `deliveries_once_per_subscription`), so it only marks
-- them; and a row it fans out first is fanned out again, to the same effect, by this version.

create table outbox_to_fan_out
(
    outbox_id bigint primary key
);

-- Deleted from as fast as it is inserted into, like `outbox_to_publish`: vacuum it often.
alter table outbox_to_fan_out set (autovacuum_vacuum_scale_factor = 0, autovacuum_vacuum_threshold = 10000);

insert into outbox_to_fan_out (outbox_id)
select id from outbox where fanned_out_at is null;

create function waybill_outbox_to_fan_out() returns trigger
    language plpgsql as
$$
begin
    insert into outbox_to_fan_out (outbox_id) select id from written where fanned_out_at is null;
    return null;
end
$$;

create trigger outbox_to_fan_out
    after insert on outbox
    referencing new table as written
    for each statement
execute function waybill_outbox_to_fan_out();
