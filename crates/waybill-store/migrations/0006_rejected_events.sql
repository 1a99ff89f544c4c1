-- Rejected events: the elements of a verified webhook that its carrier profile could not map
-- while their siblings could (a time in an unexpected format, a field of the wrong type). The
-- siblings were stored as usual; each of these is kept here with everything needed to see why
-- and to map it again once the profile is fixed (`waybill rejected list|show|replay`).
create table rejected_events (
    id bigserial primary key,
    -- The inbound envelope that carried it and its place in that envelope's list: a redelivered
    -- message inserts nothing twice.
    envelope_id text not null,
    position integer not null,
    tenant text not null,
    source text not null,
    profile text not null,
    -- The concrete path of the element in the payload (`$/events/3`).
    path text not null,
    -- Why, as a closed-set label (`invalid_timestamp`), and as a sentence naming the path.
    kind text not null,
    reason text not null,
    -- The element as it was, and the whole verified body (a replay maps the body again).
    element jsonb not null,
    tracking_number text,
    raw_body text not null,
    received_at timestamptz not null,
    stored_at timestamptz not null default now(),
    -- Set when a replay mapped the body again and this element no longer failed.
    replayed_at timestamptz,
    unique (envelope_id, position)
);

-- What an operator looks at: the ones still waiting, newest first, per source.
create index rejected_events_pending on rejected_events (source, received_at desc)
    where replayed_at is null;
