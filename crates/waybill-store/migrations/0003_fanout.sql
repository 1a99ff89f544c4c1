-- Downstream fan-out (see docs/subscriptions.md and docs/events.md): HTTP subscriptions, the
-- deliveries owed to them, and the relay's second cursor over the outbox.
--
-- The outbox (0001) is read twice, independently, by the relay in the worker:
--
--   outbox ──published_at is null──▶ publish to `waybill.events` with confirms ──▶ published_at
--          ──fanned_out_at is null─▶ one `deliveries` row per matching subscription ─▶ fanned_out_at
--
-- Two cursors rather than one, so that a broker outage does not hold up HTTP deliveries and a
-- slow database write does not hold up the topic. Both claim rows `for update skip locked`, so
-- any number of worker replicas share the outbox without coordination.
--
-- A delivery goes through these states (`status`):
--
--   pending ──2xx──▶ delivered
--      │  └─other answer, timeout, refused destination: attempt again at next_attempt_at
--      └──schedule exhausted, 410 Gone, refused destination──▶ dead ──`waybill deliveries replay`──▶ pending
--
-- A dispatcher claims a due delivery by moving its `next_attempt_at` forward by a lease and
-- bumping `attempts` *in the claiming statement*; the outcome is written only if `attempts` is
-- still what it claimed. A worker that dies mid-request leaves the lease to run out, and the
-- delivery is sent again (same `webhook_id`, same bytes): at least once, never lost.

-- Existing outbox rows predate subscriptions, so there is nothing to fan them out to.
alter table outbox
    add column fanned_out_at timestamptz;
update outbox set fanned_out_at = now();

-- The fan-out's "what is still to fan out" scan, as small as the relay's backlog.
create index outbox_not_fanned_out on outbox (id) where fanned_out_at is null;

-- An HTTP endpoint that receives the changes of one tenant, optionally only some carriers and
-- statuses, signed per the Standard Webhooks spec.
create table subscriptions
(
    id                         bigserial primary key,
    tenant                     text        not null,
    -- Where deliveries are POSTed (http or https). The destination is checked against private,
    -- loopback and link-local addresses on every connection, not only here.
    url                        text        not null check (url ~ '^https?://'),
    -- A label for people ("order-service production").
    description                text        not null default '',
    -- Empty: every carrier. Otherwise the carrier codes (lowercase) to deliver.
    carriers                   text[]      not null default '{}',
    -- Empty: every status. Otherwise the canonical statuses (the *new* status of a change).
    statuses                   text[]      not null default '{}' check (statuses <@ array
        ['Pending', 'InfoReceived', 'InTransit', 'OutForDelivery', 'AttemptFail',
         'AvailableForPickup', 'Delivered', 'Exception', 'Returned', 'Cancelled', 'Expired',
         'Unknown']::text[]),
    -- The signing secret, `whsec_<base64>`. Stored as is: an HMAC key is needed to sign, so it
    -- cannot be hashed. Never logged, shown once by `subscriptions add` and `rotate-secret`.
    secret                     text        not null check (secret like 'whsec\_%'),
    -- The secret before the last rotation, still signed with (a second `v1,` signature) until
    -- `previous_secret_expires_at`, so receivers can switch secrets without losing a delivery.
    previous_secret            text check (previous_secret like 'whsec\_%'),
    previous_secret_expires_at timestamptz,
    -- Deliveries are attempted only while enabled; a disabled subscription gets no new
    -- deliveries, and its pending ones wait until it is enabled again.
    enabled                    boolean     not null default true,
    -- Why it is disabled: 'manual' (the CLI), 'gone' (the receiver answered 410), 'failing'
    -- (every attempt failed for `fanout.disable_after`). Null while enabled.
    disabled_reason            text check (disabled_reason in ('manual', 'gone', 'failing')),
    disabled_at                timestamptz,
    -- The first failed attempt since the last successful one; null after a success.
    failing_since              timestamptz,
    created_at                 timestamptz not null default now(),
    updated_at                 timestamptz not null default now(),

    constraint subscriptions_disabled_has_a_reason
        check (enabled = (disabled_reason is null)),
    constraint subscriptions_previous_secret_has_an_expiry
        check ((previous_secret is null) = (previous_secret_expires_at is null))
);

-- The fan-out joins each outbox row to its tenant's enabled subscriptions.
create index subscriptions_by_tenant on subscriptions (tenant) where enabled;

-- One outbox row owed to one subscription: the exact request body and the `webhook-id` it is
-- sent with on every attempt and every replay.
create table deliveries
(
    id              bigserial primary key,
    subscription_id bigint      not null references subscriptions (id) on delete cascade,
    -- The outbox row it came from. No foreign key: a delivery carries its own body, so the
    -- outbox may be pruned without losing dead deliveries.
    outbox_id       bigint      not null,
    tenant          text        not null,
    -- The Standard Webhooks `webhook-id` (`msg_<event id>_<shipment version>`): the same for
    -- every attempt and replay, and the AMQP `message_id` of the same change on `waybill.events`.
    webhook_id      text        not null,
    -- The exact bytes POSTed (and signed) on every attempt.
    body            bytea       not null,
    status          text        not null default 'pending'
        check (status in ('pending', 'delivered', 'dead')),
    -- Attempts started (a claim bumps it before the request is sent).
    attempts        integer     not null default 0 check (attempts >= 0),
    -- When the next attempt is due (while pending); while an attempt is in flight, when its
    -- lease runs out.
    next_attempt_at timestamptz,
    last_attempt_at timestamptz,
    -- The HTTP status of the last answer (null: no answer — timeout, connection error, refused).
    last_status     integer,
    -- Why the last attempt failed, in a sentence (never a body or a secret).
    last_error      text,
    -- How many times `waybill deliveries replay` sent it back to pending.
    replays         integer     not null default 0 check (replays >= 0),
    created_at      timestamptz not null default now(),
    delivered_at    timestamptz,
    dead_at         timestamptz,

    -- The fan-out is idempotent: fanning the same outbox row out twice creates nothing new.
    constraint deliveries_once_per_subscription unique (subscription_id, outbox_id),
    constraint deliveries_pending_has_a_time
        check ((status = 'pending') = (next_attempt_at is not null))
);

-- The dispatcher's claim: per subscription, the oldest due pending deliveries.
create index deliveries_due on deliveries (subscription_id, next_attempt_at)
    where status = 'pending';

-- `waybill deliveries dead`
create index deliveries_dead on deliveries (subscription_id, id) where status = 'dead';
