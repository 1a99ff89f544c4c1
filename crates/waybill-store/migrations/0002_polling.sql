-- Polling bookkeeping for the poll scheduler (see docs/polling.md). 0001 gave shipments
-- `next_poll_at`, `last_webhook_at` and `poll_failures`; this adds the state of each shipment's
-- polling and of the slot being polled, so that any number of workers share the schedule through
-- Postgres alone (`for update skip locked`) and no slot is polled twice.
--
-- A shipment's polling goes through these states:
--
--   (null) ──adopted by a scheduler──▶ 'active' ──terminal + grace, or Expired──▶ 'done'
--      └──────────source not polled (webhook_only, no credentials)──────────────▶ 'off'
--
-- `next_poll_at` is set exactly while the state is 'active'. Claiming a due shipment moves its
-- `next_poll_at` forward by a lease *in the claiming statement* and records the slot in
-- `poll_slot`; recording the poll's outcome clears the slot and sets the real next time. A worker
-- that dies between the two leaves the lease to run out, and the slot is claimed again.

alter table shipments
    -- null: not yet considered by a scheduler (every new shipment, registered or created by an
    -- event); see the diagram above.
    add column poll_state      text check (poll_state in ('active', 'off', 'done')),
    -- The slot (the `next_poll_at` that came due) being worked on since a scheduler claimed it;
    -- null when no poll is in progress. Poll jobs name it, so a job for a slot already done is
    -- recognised and dropped.
    add column poll_slot       timestamptz,
    -- How many times the current slot was claimed again after its lease ran out.
    add column poll_attempt    integer     not null default 0 check (poll_attempt >= 0),
    -- When a poll consumer started the courier request of the current slot: a second delivery
    -- of the same job within the lease does not send a second request.
    add column poll_started_at timestamptz,
    -- When the courier's API last answered a poll of this shipment (any answer).
    add column last_polled_at  timestamptz;

-- The claim takes each source's due shipments, oldest slot first, up to that source's budget:
-- one index range per source. Replaces 0001's source-blind index.
drop index shipments_due_for_poll;
create index shipments_due_for_poll_by_source on shipments (source, next_poll_at)
    where next_poll_at is not null;

-- Shipments no scheduler has looked at yet. Rows leave it as soon as they are adopted, so it
-- stays as small as the registrations of the last few seconds.
create index shipments_awaiting_poll_state on shipments (id)
    where poll_state is null;
