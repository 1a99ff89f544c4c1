//! The poll schedule: every statement the poll scheduler and the poll consumers run (see
//! `migrations/0002_polling.sql` for the columns and `docs/polling.md` for the rules).
//!
//! The schedule lives in the `shipments` rows, and any number of workers share it through
//! Postgres alone:
//!
//! * [`adopt_new_shipments`] gives shipments no scheduler has seen yet their first poll time
//!   (spread by a jitter) or turns polling off for them when their source is not polled;
//! * [`claim_due`] takes due shipments `for update skip locked` and, **in the same statement**,
//!   moves their `next_poll_at` forward by a lease and records the slot, so two schedulers never
//!   claim the same slot and a claim lost with its worker comes back when the lease runs out;
//! * [`begin_poll`] lets a poll consumer start a slot's courier request at most once per lease,
//!   however often the job is delivered;
//! * [`record_outcomes`] clears the slot and writes the real next time, the failure count and the
//!   state; an outcome for a slot that is no longer current changes nothing.
//!
//! The *rules* (which interval, when to stop, when to expire) are the worker's, in pure Rust;
//! this module only reads and writes what they decide.
//!
//! **Locks.** Claims and adoptions skip locked rows; the scheduler's outcome writes lock with
//! `skip locked` too, so they never wait on a merge (an outcome skipped that way leaves the claim
//! to its lease). A consumer's outcome is written in the transaction that merged its events, which
//! already holds the row.

use chrono::{DateTime, Utc};
use sqlx::postgres::PgRow;
use sqlx::{Connection, PgConnection, Row};
use waybill_core::{CarrierCode, SourceId, Status, TenantId, TrackingNumber};

use crate::batch::ShipmentKey;
use crate::decode::parse_status;
use crate::error::StoreError;
use crate::fetch::RunQuery;

/// Where a shipment's polling is (the `poll_state` column).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PollState {
    /// Polled: `next_poll_at` says when.
    Active,
    /// Not polled because its source is not (webhook-only, no tracking API, no credentials).
    Off,
    /// Polling finished: terminal for longer than the grace period, or expired.
    Done,
}

impl PollState {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            PollState::Active => "active",
            PollState::Off => "off",
            PollState::Done => "done",
        }
    }

    fn parse(raw: &str) -> Result<PollState, StoreError> {
        match raw {
            "active" => Ok(PollState::Active),
            "off" => Ok(PollState::Off),
            "done" => Ok(PollState::Done),
            other => Err(StoreError::corrupt("poll_state", other)),
        }
    }
}

/// A tenant's only polled source for a carrier: the source a shipment registered without one
/// is polled through.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DefaultPollSource {
    /// The tenant.
    pub tenant: TenantId,
    /// The carrier code (a profile's name).
    pub carrier: CarrierCode,
    /// The source.
    pub source: SourceId,
}

/// What [`adopt_new_shipments`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Adopted {
    /// Shipments given a first poll time.
    pub scheduled: u64,
    /// Shipments whose source is not polled.
    pub off: u64,
}

/// A due shipment claimed by [`claim_due`], with what the scheduling rules need to know.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimedShipment {
    /// The shipment's row id.
    pub id: i64,
    /// Its natural key.
    pub key: ShipmentKey,
    /// The source it is polled through.
    pub source: SourceId,
    /// The current status.
    pub status: Status,
    /// When the current event happened (`None` before the first event).
    pub current_event_at: Option<DateTime<Utc>>,
    /// The newest event time in the history: the last scan.
    pub last_event_at: Option<DateTime<Utc>>,
    /// When a webhook last mentioned it (refreshed at most once a minute by the merge).
    pub last_webhook_at: Option<DateTime<Utc>>,
    /// When the shipment was created (registered or first mentioned).
    pub created_at: DateTime<Utc>,
    /// Consecutive failed polls.
    pub poll_failures: u32,
    /// The slot claimed: the `next_poll_at` that came due (kept when a lease ran out).
    pub slot: DateTime<Utc>,
    /// How many times this slot was claimed before (0 on the first claim).
    pub attempt: u32,
}

/// What a poll consumer needs about the shipment of the slot it is starting.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PollTarget {
    /// The shipment's row id.
    pub id: i64,
    /// Its natural key.
    pub key: ShipmentKey,
    /// The source it is polled through.
    pub source: Option<SourceId>,
    /// The current status.
    pub status: Status,
    /// When the current event happened.
    pub current_event_at: Option<DateTime<Utc>>,
    /// Consecutive failed polls before this one.
    pub poll_failures: u32,
}

/// The outcome of one slot: what to write back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlotOutcome {
    /// The shipment's row id.
    pub shipment_id: i64,
    /// The slot this outcome is for; nothing is written if the shipment is no longer on it.
    pub slot: DateTime<Utc>,
    /// The state after this slot.
    pub state: PollState,
    /// The next poll; must be `Some` exactly when `state` is [`PollState::Active`].
    pub next_poll_at: Option<DateTime<Utc>>,
    /// Consecutive failed polls after this slot.
    pub poll_failures: u32,
    /// Whether the courier's API answered (sets `last_polled_at`).
    pub polled: bool,
}

/// A row of the schedule, for tests, benchmarks and the CLI.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PollSchedule {
    /// The state (`None`: not yet adopted).
    pub state: Option<PollState>,
    /// The next poll.
    pub next_poll_at: Option<DateTime<Utc>>,
    /// The slot in progress.
    pub slot: Option<DateTime<Utc>>,
    /// Consecutive failed polls.
    pub poll_failures: u32,
    /// When the courier last answered.
    pub last_polled_at: Option<DateTime<Utc>>,
    /// The source it is polled through.
    pub source: Option<String>,
}

/// Looks at up to `limit` shipments no scheduler has seen yet: those whose source (their own, or
/// for a shipment without one, the tenant's only polled source for its carrier in `defaults`) is
/// in `polled_sources` become `active` with a first poll uniformly in
/// `[now, now + first_poll_jitter_secs)`; the others become `off`.
#[tracing::instrument(skip_all, fields(limit = limit))]
pub async fn adopt_new_shipments(
    conn: &mut PgConnection,
    now: DateTime<Utc>,
    polled_sources: &[SourceId],
    defaults: &[DefaultPollSource],
    first_poll_jitter_secs: u64,
    limit: u32,
) -> Result<Adopted, StoreError> {
    let polled: Vec<&str> = polled_sources.iter().map(SourceId::as_str).collect();
    let tenants: Vec<&str> = defaults.iter().map(|d| d.tenant.as_str()).collect();
    let carriers: Vec<&str> = defaults.iter().map(|d| d.carrier.as_str()).collect();
    let sources: Vec<&str> = defaults.iter().map(|d| d.source.as_str()).collect();
    let rows = sqlx::query(
        "with picked as (
             select id from shipments where poll_state is null
             order by id limit $1
             for no key update skip locked),
         resolved as (
             select s.id, coalesce(s.source, d.source) as source
             from shipments s
             join picked p on p.id = s.id
             left join unnest($2::text[], $3::text[], $4::text[]) as d(tenant, carrier, source)
               on s.source is null and d.tenant = s.tenant and d.carrier = s.carrier)
         update shipments s set
             source = r.source,
             poll_state = case when r.source = any($5::text[]) then 'active' else 'off' end,
             next_poll_at = case when r.source = any($5::text[])
                 then $6 + make_interval(secs => random() * $7) end
         from resolved r
         where s.id = r.id
         returning s.poll_state",
    )
    .bind(i64::from(limit))
    .bind(tenants)
    .bind(carriers)
    .bind(sources)
    .bind(polled)
    .bind(now)
    .bind(first_poll_jitter_secs as f64)
    .fetch_all(conn)
    .await?;
    let mut adopted = Adopted::default();
    for row in rows {
        match row.try_get::<&str, _>("poll_state")? {
            "active" => adopted.scheduled += 1,
            _ => adopted.off += 1,
        }
    }
    Ok(adopted)
}

/// The claim: each source's due shipments, oldest slot first, up to its budget, skipping locked
/// rows; their lease and slot are written in the same statement. The due ids are gathered into
/// an array first, so the update finds its rows through the primary key whatever the planner
/// thinks of the table's size (joined to the ids instead, it hashed the whole table when it
/// was small: 52 of 88 ms of a claim of 2,000 among 100,000). The slot is the `next_poll_at`
/// the locked row had.
const CLAIM_DUE: &str = "update shipments s set
             next_poll_at = $3 + make_interval(secs => $4),
             poll_slot = coalesce(s.poll_slot, s.next_poll_at),
             poll_attempt = case when s.poll_slot is null then 0 else s.poll_attempt + 1 end,
             poll_started_at = null
         where s.id = any(array(
             select due.id
             from unnest($1::text[], $2::bigint[]) as b(source, budget)
             cross join lateral (
                 select d.id from shipments d
                 where d.source = b.source and d.next_poll_at <= $3
                 order by d.next_poll_at
                 limit b.budget
                 for no key update of d skip locked) due))
         returning s.id, s.tenant, s.carrier, s.tracking_number, s.source, s.status,
                   s.current_event_at, s.last_event_at, s.last_webhook_at, s.created_at,
                   s.poll_failures, s.poll_slot, s.poll_attempt";

/// Claims due shipments (`next_poll_at <= now`), oldest slot first, up to `budget` per source,
/// skipping rows another transaction holds. In the same statement each claimed row's
/// `next_poll_at` moves to `now + lease_secs` and its slot is recorded, so the rows are not due
/// for anyone else until the lease runs out.
#[tracing::instrument(skip_all, fields(sources = budgets.len()))]
pub async fn claim_due(
    conn: &mut PgConnection,
    now: DateTime<Utc>,
    lease_secs: u64,
    budgets: &[(SourceId, u32)],
) -> Result<Vec<ClaimedShipment>, StoreError> {
    claim_statement(CLAIM_DUE, now, lease_secs, budgets)
        .fetch_all_with(conn, claimed)
        .await
}

/// Starts the courier request of a claimed slot: succeeds (returning the shipment as it is now)
/// only if the shipment is still on `slot`, claimed for the `attempt`-th time, and no consumer
/// started that claim yet. `None`: the job is stale (its slot is done, or its claim's lease ran
/// out and the slot was claimed again) or a second delivery of a job already started.
#[tracing::instrument(skip_all, fields(shipment.id = shipment_id))]
pub async fn begin_poll(
    conn: &mut PgConnection,
    shipment_id: i64,
    slot: DateTime<Utc>,
    attempt: u32,
    now: DateTime<Utc>,
) -> Result<Option<PollTarget>, StoreError> {
    let row = sqlx::query(
        "update shipments set poll_started_at = $4
         where id = $1 and poll_slot = $2 and poll_attempt = $3 and poll_started_at is null
         returning id, tenant, carrier, tracking_number, source, status, current_event_at,
                   poll_failures",
    )
    .bind(shipment_id)
    .bind(slot)
    .bind(i32::try_from(attempt).unwrap_or(i32::MAX))
    .bind(now)
    .fetch_optional(conn)
    .await?;
    row.as_ref()
        .map(|row| {
            let source: Option<String> = row.try_get("source")?;
            Ok(PollTarget {
                id: row.try_get("id")?,
                key: key_of(row)?,
                source: source
                    .as_deref()
                    .map(SourceId::parse)
                    .transpose()
                    .map_err(|e| StoreError::corrupt("shipments.source", e))?,
                status: parse_status(row.try_get("status")?)?,
                current_event_at: row.try_get("current_event_at")?,
                poll_failures: non_negative(row.try_get("poll_failures")?),
            })
        })
        .transpose()
}

/// Writes the outcomes of slots: state, next poll, failure count, `last_polled_at`; clears the
/// slot. An outcome whose shipment is no longer on its slot is skipped. With `skip_locked` (the
/// scheduler's many-row writes), so is one whose row another transaction holds: it keeps its
/// lease and is claimed again later, and the write never waits on a merge. Without it (a
/// consumer's one row) the write waits for the row. Returns how many were written.
#[tracing::instrument(skip_all, fields(outcomes = outcomes.len()))]
pub async fn record_outcomes(
    conn: &mut PgConnection,
    now: DateTime<Utc>,
    outcomes: &[SlotOutcome],
    skip_locked: bool,
) -> Result<u64, StoreError> {
    if outcomes.is_empty() {
        return Ok(0);
    }
    let ids: Vec<i64> = outcomes.iter().map(|o| o.shipment_id).collect();
    let slots: Vec<DateTime<Utc>> = outcomes.iter().map(|o| o.slot).collect();
    let states: Vec<&str> = outcomes.iter().map(|o| o.state.as_str()).collect();
    let next: Vec<Option<DateTime<Utc>>> = outcomes
        .iter()
        .map(|o| match o.state {
            PollState::Active => o.next_poll_at,
            PollState::Off | PollState::Done => None,
        })
        .collect();
    let failures: Vec<i32> = outcomes
        .iter()
        .map(|o| i32::try_from(o.poll_failures).unwrap_or(i32::MAX))
        .collect();
    let polled: Vec<bool> = outcomes.iter().map(|o| o.polled).collect();
    let statement = format!(
        "with u as (
             select * from unnest($1::bigint[], $2::timestamptz[], $3::text[],
                                  $4::timestamptz[], $5::int[], $6::bool[])
                 as u(id, slot, state, next_poll_at, failures, polled)),
         locked as (
             select s.id from shipments s join u on u.id = s.id and s.poll_slot = u.slot
             order by s.tenant, s.carrier, s.tracking_number
             for no key update of s {})
         update shipments s set
             poll_state = u.state,
             next_poll_at = case when u.state = 'active' then u.next_poll_at end,
             poll_failures = u.failures,
             poll_slot = null,
             poll_attempt = 0,
             poll_started_at = null,
             last_polled_at = case when u.polled then $7 else s.last_polled_at end
         from u
         where s.id = u.id and s.id in (select id from locked)",
        if skip_locked { "skip locked" } else { "" }
    );
    sqlx::query(&statement)
        .bind(ids)
        .bind(slots)
        .bind(states)
        .bind(next)
        .bind(failures)
        .bind(polled)
        .bind(now)
        .execute_counting(conn)
        .await
}

/// Gives claimed slots back early (their jobs could not be published): due again at `at`,
/// slot kept.
#[tracing::instrument(skip_all, fields(shipments = claims.len()))]
pub async fn release_claims(
    conn: &mut PgConnection,
    claims: &[(i64, DateTime<Utc>)],
    at: DateTime<Utc>,
) -> Result<u64, StoreError> {
    let ids: Vec<i64> = claims.iter().map(|(id, _)| *id).collect();
    let slots: Vec<DateTime<Utc>> = claims.iter().map(|(_, slot)| *slot).collect();
    sqlx::query(
        "with locked as (
             select s.id from shipments s
             join unnest($1::bigint[], $2::timestamptz[]) as u(id, slot)
               on u.id = s.id and s.poll_slot = u.slot
             for no key update of s skip locked)
         update shipments set next_poll_at = $3 where id in (select id from locked)",
    )
    .bind(ids)
    .bind(slots)
    .bind(at)
    .execute_counting(conn)
    .await
}

/// Turns polling off for scheduled shipments whose source is no longer polled (a source switched
/// to `webhook_only`, removed, or left without credentials). Run when a scheduler starts.
#[tracing::instrument(skip_all)]
pub async fn stop_unpolled_sources(
    conn: &mut PgConnection,
    polled_sources: &[SourceId],
) -> Result<u64, StoreError> {
    let polled: Vec<&str> = polled_sources.iter().map(SourceId::as_str).collect();
    sqlx::query(
        "update shipments set poll_state = 'off', next_poll_at = null, poll_slot = null,
                              poll_attempt = 0, poll_started_at = null
         where next_poll_at is not null
           and (source is null or not (source = any($1::text[])))",
    )
    .bind(polled)
    .execute_counting(conn)
    .await
}

/// One shipment's schedule, by key; `None` if there is no such shipment.
pub async fn poll_schedule(
    conn: &mut PgConnection,
    key: &ShipmentKey,
) -> Result<Option<PollSchedule>, StoreError> {
    let row = sqlx::query(
        "select poll_state, next_poll_at, poll_slot, poll_failures, last_polled_at, source
         from shipments where tenant = $1 and carrier = $2 and tracking_number = $3",
    )
    .bind(key.tenant.as_str())
    .bind(key.carrier.as_str())
    .bind(key.tracking_number.as_str())
    .fetch_optional(conn)
    .await?;
    row.map(|row| {
        let state: Option<String> = row.try_get("poll_state")?;
        Ok(PollSchedule {
            state: state.as_deref().map(PollState::parse).transpose()?,
            next_poll_at: row.try_get("next_poll_at")?,
            slot: row.try_get("poll_slot")?,
            poll_failures: non_negative(row.try_get("poll_failures")?),
            last_polled_at: row.try_get("last_polled_at")?,
            source: row.try_get("source")?,
        })
    })
    .transpose()
}

/// Inserts `count` registered shipments of `source`, all due at `due_at`, numbered
/// `<prefix>000000001…`. For the scheduler benchmark and tests; returns how many were inserted.
pub async fn seed_due_shipments(
    conn: &mut PgConnection,
    tenant: &TenantId,
    carrier: &CarrierCode,
    source: &SourceId,
    prefix: &str,
    count: u32,
    due_at: DateTime<Utc>,
) -> Result<u64, StoreError> {
    let seed = Seed {
        tenant,
        carrier,
        source,
        prefix,
    };
    seed_scheduled_shipments(conn, &seed, count, due_at, std::time::Duration::ZERO).await
}

/// Who the shipments [`seed_scheduled_shipments`] inserts belong to, and how they are numbered.
#[derive(Debug, Clone, Copy)]
pub struct Seed<'a> {
    /// Their tenant.
    pub tenant: &'a TenantId,
    /// Their carrier.
    pub carrier: &'a CarrierCode,
    /// The source they are polled through.
    pub source: &'a SourceId,
    /// Their tracking numbers are `<prefix>000000001…`.
    pub prefix: &'a str,
}

/// Inserts `count` registered, actively polled shipments as `seed` says, their next polls
/// spread evenly over `[from, from + over)` (all at `from` when `over` is zero), as a live
/// schedule has them. For the scheduler benchmark and tests; returns how many were inserted.
pub async fn seed_scheduled_shipments(
    conn: &mut PgConnection,
    seed: &Seed<'_>,
    count: u32,
    from: DateTime<Utc>,
    over: std::time::Duration,
) -> Result<u64, StoreError> {
    sqlx::query(
        "insert into shipments (tenant, carrier, tracking_number, registered, source,
                                poll_state, next_poll_at)
         select $1, $2, $3 || lpad(n::text, 9, '0'), true, $4, 'active',
                $6 + make_interval(secs => $7 * (n - 1) / $5)
         from generate_series(1, $5::bigint) as n
         on conflict (tenant, carrier, tracking_number) do nothing",
    )
    .bind(seed.tenant.as_str())
    .bind(seed.carrier.as_str())
    .bind(seed.prefix)
    .bind(seed.source.as_str())
    .bind(i64::from(count))
    .bind(from)
    .bind(over.as_secs_f64())
    .execute_counting(conn)
    .await
}

/// The claim [`claim_due`] would make, run under `explain (analyze, buffers)` in a transaction
/// that is rolled back: the plan's lines with each step's time, so a benchmark can show where a
/// claim's time goes (the due scan, the row locks, the lease update). Nothing is claimed.
pub async fn explain_claim(
    conn: &mut PgConnection,
    now: DateTime<Utc>,
    lease_secs: u64,
    budgets: &[(SourceId, u32)],
) -> Result<Vec<String>, StoreError> {
    let explained = format!("explain (analyze, buffers) {CLAIM_DUE}");
    let mut tx = conn.begin().await?;
    let rows = claim_statement(&explained, now, lease_secs, budgets)
        .fetch_all(&mut *tx)
        .await?;
    tx.rollback().await?;
    Ok(rows
        .iter()
        .map(|row| row.try_get::<String, _>(0))
        .collect::<Result<_, _>>()?)
}

/// `sql` ([`CLAIM_DUE`], or the claim explained) with the claim's parameters bound: each
/// source and its budget, `now`, the lease.
fn claim_statement<'q>(
    sql: &'q str,
    now: DateTime<Utc>,
    lease_secs: u64,
    budgets: &'q [(SourceId, u32)],
) -> sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments> {
    let sources: Vec<&str> = budgets.iter().map(|(s, _)| s.as_str()).collect();
    let limits: Vec<i64> = budgets.iter().map(|(_, n)| i64::from(*n)).collect();
    sqlx::query(sql)
        .bind(sources)
        .bind(limits)
        .bind(now)
        .bind(lease_secs as f64)
}

/// Refreshes the planner's statistics of `shipments` (after a bulk load in a benchmark or test,
/// as autovacuum would on a live table).
pub async fn analyze_shipments(conn: &mut PgConnection) -> Result<(), StoreError> {
    sqlx::query("analyze shipments").execute(conn).await?;
    Ok(())
}

fn claimed(row: &PgRow) -> Result<ClaimedShipment, StoreError> {
    let source: String = row.try_get("source")?;
    Ok(ClaimedShipment {
        id: row.try_get("id")?,
        key: key_of(row)?,
        source: SourceId::parse(&source).map_err(|e| StoreError::corrupt("shipments.source", e))?,
        status: parse_status(row.try_get("status")?)?,
        current_event_at: row.try_get("current_event_at")?,
        last_event_at: row.try_get("last_event_at")?,
        last_webhook_at: row.try_get("last_webhook_at")?,
        created_at: row.try_get("created_at")?,
        poll_failures: non_negative(row.try_get("poll_failures")?),
        slot: row.try_get("poll_slot")?,
        attempt: non_negative(row.try_get("poll_attempt")?),
    })
}

fn key_of(row: &PgRow) -> Result<ShipmentKey, StoreError> {
    Ok(ShipmentKey {
        tenant: TenantId::parse(row.try_get("tenant")?)
            .map_err(|e| StoreError::corrupt("tenant", e))?,
        carrier: CarrierCode::parse(row.try_get("carrier")?)
            .map_err(|e| StoreError::corrupt("carrier", e))?,
        tracking_number: TrackingNumber::parse(row.try_get("tracking_number")?)
            .map_err(|e| StoreError::corrupt("tracking_number", e))?,
    })
}

fn non_negative(value: i32) -> u32 {
    u32::try_from(value).unwrap_or(0)
}
