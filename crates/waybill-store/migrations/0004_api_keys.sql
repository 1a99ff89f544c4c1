-- API keys for the platform-facing endpoints (registering and reading shipments), per tenant.
-- See docs/security.md.
--
-- A key is `wbk_<id>_<secret>`. Only the id (public, shown by `waybill keys list`) and SHA-256 of
-- the secret are stored; the secret itself exists only in the creator's hands. The secret is 32
-- random bytes, so a fast hash is enough: nobody can guess 2^256 inputs, slow KDF or not.
--
-- The ingress never reads this table (it never touches Postgres): the worker publishes the
-- whole key set, hashes and all, as a snapshot message every `auth.refresh_secs`, and
-- `waybill keys` publishes one right after each change. `api_keys_revision` versions that
-- snapshot so a receiver never replaces a newer key set with an older one.

create table api_keys
(
    -- 12 characters of a-z 0-9: the public part of the key (`wbk_<id>_…`).
    id            text        primary key check (id ~ '^[a-z0-9]{12}$'),
    tenant        text        not null,
    -- A label for people ("order-service production"); not unique, not secret.
    name          text        not null default '',
    -- At least one of the known scopes, nothing else.
    scopes        text[]      not null check (cardinality(scopes) > 0 and scopes <@
                                  array ['shipments:write', 'shipments:read', 'admin']::text[]),
    -- SHA-256 of the secret part of the key.
    secret_sha256 bytea       not null check (length(secret_sha256) = 32),
    created_at    timestamptz not null default now(),
    -- Set once by `waybill keys revoke`; a revoked key authenticates nobody. Kept, not deleted,
    -- so the id is never reused and the audit trail stays.
    revoked_at    timestamptz
);

-- `waybill keys list --tenant …`
create index api_keys_by_tenant on api_keys (tenant);

-- The version of the key set: one row, bumped by a trigger in every transaction that changes
-- `api_keys` (whoever changes it, the CLI or a hand-written statement), so the snapshot's
-- `revision` orders snapshots: receivers ignore one older than what they hold. `epoch` is drawn
-- once per database, so a restored or recreated database is not mistaken for an older version
-- of the same key set.
create table api_keys_revision
(
    singleton boolean     primary key default true check (singleton),
    epoch     text        not null default md5(random()::text || clock_timestamp()::text),
    revision  bigint      not null default 0 check (revision >= 0)
);

insert into api_keys_revision default values;

create function api_keys_bump_revision() returns trigger
    language plpgsql as
$$
begin
    update api_keys_revision set revision = revision + 1;
    return null;
end;
$$;

create trigger api_keys_changed
    after insert or update or delete or truncate on api_keys
    for each statement
execute function api_keys_bump_revision();
