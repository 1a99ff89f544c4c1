-- Waybill's tracking schema: shipments, their event histories, events parked until someone
-- registers their shipment, and the outbox of status changes to publish downstream.
--
-- The merge itself (which event is current) is computed in Rust by `waybill_core::merge`; these
-- tables store its inputs (the set of events per shipment) and its outputs (the current event,
-- denormalised onto the shipment row, and the `version` counter), written in one transaction per
-- consumed batch by `waybill_store::apply_batch`.
--
-- Conventions: every timestamp is `timestamptz` (UTC on the wire); canonical statuses are stored
-- by their canonical names (`InTransit`) and checked against the closed vocabulary, so a typo in
-- code cannot write a status nobody can read back; raw carrier values are kept verbatim beside them.

-- A shipment: one (tenant, carrier, tracking number), created either by an explicit registration
-- (`POST /v1/shipments`) or by the first event that mentions it.
create table shipments
(
    id                     bigserial primary key,
    tenant                 text        not null,
    carrier                text        not null,
    tracking_number        text        not null,

    -- The merchant's order number and free-form metadata, set by registration (or, for the order
    -- number, by the first event that carries one when the shipment has none).
    order_number           text,
    metadata               jsonb       not null default '{}',

    -- True once the shipment was explicitly registered; false while it exists only because a
    -- webhook or poll mentioned it. Sources that require registration park events for
    -- shipments that do not exist at all (see `unmatched_events`).
    registered             boolean     not null default false,

    -- The source that registered or first reported the shipment, if known.
    source                 text,

    -- The current event and its denormalised fields: the fold of `waybill_core::merge` over this
    -- shipment's `tracking_events`. `status` is 'Pending' until the first event arrives.
    current_event_id       text,
    current_event_at       timestamptz,
    status                 text        not null default 'Pending',
    raw_status             text,
    raw_status_description text,
    sub_status             text,

    -- The newest `occurred_at` of any event in the history (not necessarily the current event's:
    -- a stray scan after `Delivered` is newer but not current). Lets the merge fold new events
    -- incrementally when they are all newer than everything stored.
    last_event_at          timestamptz,

    -- Bumped once per merge that changed the current event; downstream consumers order
    -- notifications by it. Never decreases.
    version                bigint      not null default 0 check (version >= 0),

    created_at             timestamptz not null default now(),
    updated_at             timestamptz not null default now(),

    -- Polling bookkeeping, owned by the poll scheduler.
    next_poll_at           timestamptz,
    last_webhook_at        timestamptz,
    poll_failures          integer     not null default 0,

    constraint shipments_key unique (tenant, carrier, tracking_number),
    constraint shipments_status_is_canonical check (status in
        ('Pending', 'InfoReceived', 'InTransit', 'OutForDelivery', 'AttemptFail',
         'AvailableForPickup', 'Delivered', 'Exception', 'Returned', 'Cancelled', 'Expired',
         'Unknown'))
);

-- `GET /v1/shipments?order_number=...`
create index shipments_by_order_number on shipments (tenant, order_number)
    where order_number is not null;

-- The poll scheduler's "what is due" scan; only shipments that are polled at all are indexed.
create index shipments_due_for_poll on shipments (next_poll_at)
    where next_poll_at is not null;

-- Every event ever merged into a shipment: the shipment's state is this set. The primary key is
-- the idempotency guarantee: the deterministic event id (a hash of carrier, tracking number,
-- time, raw status and location) makes a duplicate delivery an `on conflict do nothing`.
create table tracking_events
(
    shipment_id            bigint      not null references shipments (id) on delete cascade,
    event_id               text        not null,
    tenant                 text        not null,

    status                 text        not null,
    raw_status             text        not null,
    raw_status_description text,
    sub_status             text,

    occurred_at            timestamptz not null,
    -- How `occurred_at` was derived (`waybill_core::TimeProvenance` as JSON, e.g.
    -- {"kind": "assumed_zone", "zone": "Australia/Sydney"}).
    time_provenance        jsonb       not null,

    location               text,
    message                text,
    origin                 text        not null,
    provider_event_id      text,
    courier                text,
    received_at            timestamptz not null default now(),
    -- When this row was written (wall clock at insert, not transaction start): the end of the
    -- event's journey through Waybill, which the load generator measures latency to.
    stored_at              timestamptz not null default clock_timestamp(),

    primary key (shipment_id, event_id),
    constraint tracking_events_status_is_canonical check (status in
        ('Pending', 'InfoReceived', 'InTransit', 'OutForDelivery', 'AttemptFail',
         'AvailableForPickup', 'Delivered', 'Exception', 'Returned', 'Cancelled', 'Expired',
         'Unknown')),
    constraint tracking_events_origin check (origin in ('webhook', 'poll', 'system'))
);

-- Events from sources that require registration, for shipments nobody registered (yet). They
-- are merged, and deleted from here, in the transaction that creates their shipment.
create table unmatched_events
(
    id              bigserial primary key,
    tenant          text        not null,
    carrier         text        not null,
    tracking_number text        not null,
    event_id        text        not null,
    -- The whole `waybill_core::TrackingEvent`, as serialised in the queue envelope (version 1).
    event           jsonb       not null,
    source          text        not null,
    received_at     timestamptz not null default now(),

    -- Also the index the "pull parked events for these shipments" lookup uses (key prefix).
    constraint unmatched_events_key unique (tenant, carrier, tracking_number, event_id)
);

-- The transactional outbox: one row per change of a shipment's current event, written in the
-- merge transaction, published to `waybill.events` (and to HTTP subscribers) by the relay.
create table outbox
(
    id              bigserial primary key,
    tenant          text        not null,
    shipment_id     bigint      not null references shipments (id) on delete cascade,
    -- The new current event.
    event_id        text        not null,
    carrier         text        not null,
    tracking_number text        not null,
    order_number    text,
    previous_status text,
    new_status      text        not null,
    raw_status      text,
    sub_status      text,
    occurred_at     timestamptz not null,
    -- The shipment's version after the change.
    version         bigint      not null,
    -- The full downstream body (`waybill_store::StatusChangedV1`, "type": "shipment.status_changed").
    payload         jsonb       not null,
    created_at      timestamptz not null default now(),
    published_at    timestamptz,

    -- One notification per version of a shipment, whatever happens upstream.
    constraint outbox_once_per_version unique (shipment_id, version)
);

-- The relay's "what is still to publish" scan stays small however long the outbox grows.
create index outbox_unpublished on outbox (id) where published_at is null;
