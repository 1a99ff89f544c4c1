-- The outbox rows still to publish to `waybill.events` become a narrow table of their ids,
-- `outbox_to_publish`, instead of the outbox rows whose `published_at` is null.
--
-- Marking a row published used to update it: Postgres writes an update as a new version of the
-- whole row (its payload, the change's JSON body with the shipment's newest history, is most of
-- it) and new entries in the outbox's indexes, and vacuum cleans the old version later. Now the
-- relay deletes the row's id from `outbox_to_publish`: a few dozen bytes, and the outbox row is
-- written once.
--
--   outbox insert ──trigger──▶ outbox_to_publish ──relay publishes with confirms──▶ delete
--
-- The ids are added by a statement trigger, so every writer of the outbox (this version's merge,
-- and the previous version's while a release rolls out) enters its rows in the set in the same
-- transaction: an outbox row is visible exactly when its id is, so no change is skipped.
--
-- Additive, as every migration (docs/operations.md, "Upgrading"): the previous version keeps
-- working on this schema while the release rolls out.
-- * `published_at` now defaults to the time the row is written, so a previous version's relay
--   finds nothing to publish in `outbox_unpublished` and leaves the publishing to this version's
--   relays (changes merged before this version's first worker starts are published when it
--   does). The column no longer says whether a row was published; `outbox_to_publish` does. The
--   column and the `outbox_unpublished` index are dropped in a later release.
-- * The previous version's prune deletes rows by `published_at`; a row still unpublished after
--   the whole `fanout.retention` while an old worker runs would leave its id here without a row.
--   The relay skips such ids (its claim joins the outbox), so at worst an id stays here unused.

create table outbox_to_publish
(
    outbox_id bigint primary key
);

-- The relay deletes from this table as fast as the merges insert into it: vacuum it often, so
-- that its claim's scan of the primary key does not walk over dead entries.
alter table outbox_to_publish set (autovacuum_vacuum_scale_factor = 0, autovacuum_vacuum_threshold = 10000);

insert into outbox_to_publish (outbox_id)
select id from outbox where published_at is null;

update outbox set published_at = now() where published_at is null;

alter table outbox alter column published_at set default now();

create function waybill_outbox_to_publish() returns trigger
    language plpgsql as
$$
begin
    insert into outbox_to_publish (outbox_id) select id from written;
    return null;
end
$$;

create trigger outbox_to_publish
    after insert on outbox
    referencing new table as written
    for each statement
execute function waybill_outbox_to_publish();
