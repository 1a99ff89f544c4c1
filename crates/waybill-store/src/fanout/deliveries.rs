//! Deliveries: the dispatcher's claim and outcome writes, and the dead-delivery commands.
//!
//! **Claims.** [`claim_due_deliveries`] takes due pending deliveries of enabled subscriptions
//! `for update skip locked` and, in the same statement, bumps `attempts` and moves
//! `next_attempt_at` forward by a lease, so no other dispatcher takes them while the request is
//! in flight, and a dispatcher that dies leaves them to the lease. It takes at most the room the
//! caller gives each subscription (what it may still have in flight and queued), oldest due
//! first within each, so one subscription's backlog cannot crowd out the others.
//!
//! **Outcomes** are written only if `attempts` is still the claimed attempt: the write of a
//! request whose lease ran out (and that another dispatcher has retried since) changes nothing.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::postgres::PgRow;
use sqlx::{FromRow, PgConnection, Row};
use waybill_core::TenantId;

use super::subscriptions::SecretText;
use crate::decode::count;
use crate::error::StoreError;
use crate::fetch::RunQuery;

/// Where a delivery is (the `status` column).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryStatus {
    /// Waiting for its next attempt (or in flight).
    Pending,
    /// A 2xx answer was received.
    Delivered,
    /// Given up: the schedule was exhausted, the receiver answered 410, or the destination is
    /// refused. Replayable.
    Dead,
}

impl DeliveryStatus {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryStatus::Pending => "pending",
            DeliveryStatus::Delivered => "delivered",
            DeliveryStatus::Dead => "dead",
        }
    }

    fn parse(raw: &str) -> Result<DeliveryStatus, StoreError> {
        match raw {
            "pending" => Ok(DeliveryStatus::Pending),
            "delivered" => Ok(DeliveryStatus::Delivered),
            "dead" => Ok(DeliveryStatus::Dead),
            other => Err(StoreError::corrupt("deliveries.status", other)),
        }
    }
}

/// The `status` column is text.
impl sqlx::Type<sqlx::Postgres> for DeliveryStatus {
    fn type_info() -> sqlx::postgres::PgTypeInfo {
        <&str as sqlx::Type<sqlx::Postgres>>::type_info()
    }

    fn compatible(ty: &sqlx::postgres::PgTypeInfo) -> bool {
        <&str as sqlx::Type<sqlx::Postgres>>::compatible(ty)
    }
}

/// Reads the `status` column's text; an unknown value is a corrupt row.
impl<'r> sqlx::Decode<'r, sqlx::Postgres> for DeliveryStatus {
    fn decode(value: sqlx::postgres::PgValueRef<'r>) -> Result<Self, sqlx::error::BoxDynError> {
        let raw = <&str as sqlx::Decode<sqlx::Postgres>>::decode(value)?;
        Ok(DeliveryStatus::parse(raw)?)
    }
}

/// A delivery claimed for one attempt, with what sending it needs (read from the claim's
/// columns of the same names).
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct ClaimedDelivery {
    /// The delivery's id.
    pub id: i64,
    /// Its subscription.
    pub subscription_id: i64,
    /// The attempt claimed (1 for the first): pass it back with the outcome.
    #[sqlx(rename = "attempts")]
    pub attempt: i32,
    /// The `webhook-id`.
    pub webhook_id: String,
    /// The exact bytes to POST.
    pub body: Vec<u8>,
    /// The destination.
    pub url: String,
    /// The current signing secret.
    pub secret: SecretText,
    /// The previous secret while its rotation window is open at the claim.
    pub previous_secret: Option<SecretText>,
    /// When the delivery was created (its change reached the fan-out).
    pub created_at: DateTime<Utc>,
    /// The trace context of the message that caused the change, when it was traced.
    pub traceparent: Option<String>,
}

/// A delivery as listed (read from the columns of the same names).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct DeliveryRecord {
    /// Its id.
    pub id: i64,
    /// Its subscription.
    pub subscription_id: i64,
    /// The tenant.
    pub tenant: String,
    /// The outbox row it came from.
    pub outbox_id: i64,
    /// The `webhook-id`.
    pub webhook_id: String,
    /// Where it is.
    pub status: DeliveryStatus,
    /// Attempts started.
    pub attempts: i32,
    /// The next attempt (pending only).
    pub next_attempt_at: Option<DateTime<Utc>>,
    /// The last attempt.
    pub last_attempt_at: Option<DateTime<Utc>>,
    /// The HTTP status of the last answer.
    pub last_status: Option<i32>,
    /// Why the last attempt failed.
    pub last_error: Option<String>,
    /// Times replayed.
    pub replays: i32,
    /// When it was created.
    pub created_at: DateTime<Utc>,
    /// When it was delivered.
    pub delivered_at: Option<DateTime<Utc>>,
    /// When it was given up.
    pub dead_at: Option<DateTime<Utc>>,
    /// The exact bytes sent (never printed by the CLI: it carries personal data).
    #[serde(skip)]
    pub body: Vec<u8>,
}

/// What [`record_failure`] and [`record_gone`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FailureRecorded {
    /// False when the claim was stale (the lease ran out and someone else took the delivery):
    /// nothing was written.
    pub recorded: bool,
    /// This write disabled the subscription.
    pub subscription_disabled: bool,
}

/// Which dead deliveries [`list_dead`] shows.
#[derive(Debug, Clone, Default)]
pub struct DeadFilter<'a> {
    /// Only this subscription's.
    pub subscription_id: Option<i64>,
    /// Only this tenant's.
    pub tenant: Option<&'a TenantId>,
    /// At most this many, newest first.
    pub limit: u32,
}

/// The columns [`record_from`] reads, but for `body`.
pub(crate) const COLUMNS: &str = "id, subscription_id, tenant, outbox_id, webhook_id, status,
     attempts, next_attempt_at, last_attempt_at, last_status, last_error, replays, created_at,
     delivered_at, dead_at";

/// Claims up to `room` due deliveries (`next_attempt_at <= now`, pending, subscription
/// enabled): for a subscription listed in `room_of`, at most its own count; for any other, at
/// most `per_subscription`. Each claimed delivery's `attempts` is bumped and its
/// `next_attempt_at` moved to `now + lease`.
#[tracing::instrument(skip_all, fields(room = room))]
pub async fn claim_due_deliveries(
    conn: &mut PgConnection,
    now: DateTime<Utc>,
    lease: std::time::Duration,
    room: u32,
    per_subscription: u32,
    room_of: &[(i64, u32)],
) -> Result<Vec<ClaimedDelivery>, StoreError> {
    if room == 0 {
        return Ok(Vec::new());
    }
    let own_ids: Vec<i64> = room_of.iter().map(|(id, _)| *id).collect();
    let own_rooms: Vec<i32> = room_of
        .iter()
        .map(|(_, n)| i32::try_from(*n).unwrap_or(i32::MAX))
        .collect();
    let claimed = sqlx::query_as(
        "with own as (
             select * from unnest($1::int8[], $2::int4[]) as b(subscription_id, room)),
         candidates as (
             select d.id, d.next_attempt_at
             from subscriptions s
             left join own b on b.subscription_id = s.id
             cross join lateral (
                 select d.id, d.next_attempt_at from deliveries d
                 where d.subscription_id = s.id and d.status = 'pending'
                   and d.next_attempt_at <= $3
                 order by d.next_attempt_at, d.id
                 limit coalesce(b.room, $4)
                 for update of d skip locked) d
             where s.enabled),
         chosen as (
             select id from candidates order by next_attempt_at, id limit $5)
         update deliveries d
         set attempts = d.attempts + 1,
             last_attempt_at = $3,
             next_attempt_at = $3 + make_interval(secs => $6)
         from chosen c, subscriptions s
         where d.id = c.id and s.id = d.subscription_id
         returning d.id, d.subscription_id, d.attempts, d.webhook_id, d.body, d.created_at,
                   d.traceparent,
                   s.url, s.secret,
                   case when s.previous_secret_expires_at > $3 then s.previous_secret end
                       as previous_secret",
    )
    .bind(own_ids)
    .bind(own_rooms)
    .bind(now)
    .bind(i64::from(per_subscription))
    .bind(i64::from(room))
    .bind(lease.as_secs_f64())
    .fetch_all(conn)
    .await?;
    Ok(claimed)
}

/// Records a 2xx answer to `attempt`; the subscription stops counting as failing. False when
/// the claim was stale.
#[tracing::instrument(skip_all, fields(delivery.id = id))]
pub async fn record_delivered(
    conn: &mut PgConnection,
    id: i64,
    attempt: i32,
    now: DateTime<Utc>,
    status: u16,
) -> Result<bool, StoreError> {
    let outcome = DeliveredOutcome {
        id,
        attempt,
        status,
    };
    Ok(!record_all_delivered(conn, &[outcome], now)
        .await?
        .is_empty())
}

/// A 2xx answer to one claimed attempt, for [`record_all_delivered`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeliveredOutcome {
    /// The delivery.
    pub id: i64,
    /// The attempt claimed.
    pub attempt: i32,
    /// The HTTP status of the answer.
    pub status: u16,
}

/// Records 2xx answers in one statement, as [`record_delivered`] does one; their subscriptions
/// stop counting as failing. Returns the ids recorded: a stale claim's is missing.
///
/// A delivery still pending is found by `next_attempt_at is not null`, which the table's check
/// constraint makes the same as `status = 'pending'`, so that the rows are found through the
/// primary key whatever the planner believes of the pending backlog: written with `status`,
/// the partial index of due deliveries matched, and with statistics from when the backlog was
/// small Postgres read every pending delivery to record a few (docs/performance.md).
#[tracing::instrument(skip_all, fields(deliveries = outcomes.len()))]
pub async fn record_all_delivered(
    conn: &mut PgConnection,
    outcomes: &[DeliveredOutcome],
    now: DateTime<Utc>,
) -> Result<Vec<i64>, StoreError> {
    let ids: Vec<i64> = outcomes.iter().map(|outcome| outcome.id).collect();
    let attempts: Vec<i32> = outcomes.iter().map(|outcome| outcome.attempt).collect();
    let statuses: Vec<i32> = outcomes
        .iter()
        .map(|outcome| i32::from(outcome.status))
        .collect();
    let recorded = sqlx::query_scalar(
        "with o as (
             select * from unnest($1::int8[], $2::int4[], $3::int4[]) as o(id, attempt, status)),
         d as (
             update deliveries d
             set status = 'delivered', delivered_at = $4, next_attempt_at = null,
                 last_status = o.status, last_error = null
             from o
             where d.id = o.id and d.attempts = o.attempt and d.next_attempt_at is not null
             returning d.id, d.subscription_id),
         s as (
             update subscriptions set failing_since = null, updated_at = now()
             where id in (select subscription_id from d) and failing_since is not null)
         select id from d",
    )
    .bind(ids)
    .bind(attempts)
    .bind(statuses)
    .bind(now)
    .fetch_all(conn)
    .await?;
    Ok(recorded)
}

/// Records a failed `attempt`: pending again at `next_attempt_at`, or dead when that is `None`.
/// The subscription counts as failing from its first failure since the last success; when it
/// has been failing for `disable_after` (if given), it is disabled (`failing`).
#[allow(clippy::too_many_arguments)] // one outcome write; a struct would only rename them
#[tracing::instrument(skip_all, fields(delivery.id = id))]
pub async fn record_failure(
    conn: &mut PgConnection,
    id: i64,
    attempt: i32,
    now: DateTime<Utc>,
    status: Option<u16>,
    error: &str,
    next_attempt_at: Option<DateTime<Utc>>,
    disable_after: Option<std::time::Duration>,
) -> Result<FailureRecorded, StoreError> {
    let row = sqlx::query(
        "with d as (
             update deliveries
             set status = case when $5::timestamptz is null then 'dead' else 'pending' end,
                 next_attempt_at = $5,
                 dead_at = case when $5::timestamptz is null then $3 end,
                 last_status = $4, last_error = $6
             where id = $1 and attempts = $2 and status = 'pending'
             returning subscription_id),
         s as (
             update subscriptions set failing_since = $3, updated_at = now()
             where id in (select subscription_id from d) and failing_since is null)
         select d.subscription_id, coalesce(sub.failing_since, $3) as failing_since
         from d join subscriptions sub on sub.id = d.subscription_id",
    )
    .bind(id)
    .bind(attempt)
    .bind(now)
    .bind(status.map(i32::from))
    .bind(next_attempt_at)
    .bind(error)
    .fetch_optional(&mut *conn)
    .await?;
    let Some(row) = row else {
        return Ok(FailureRecorded::default());
    };
    let subscription_id: i64 = row.try_get("subscription_id")?;
    let failing_since: DateTime<Utc> = row.try_get("failing_since")?;
    let mut recorded = FailureRecorded {
        recorded: true,
        subscription_disabled: false,
    };
    let Some(period) = disable_after.and_then(|p| chrono::Duration::from_std(p).ok()) else {
        return Ok(recorded);
    };
    if now - failing_since >= period {
        let disabled = sqlx::query(
            "update subscriptions
             set enabled = false, disabled_reason = 'failing', disabled_at = $2,
                 updated_at = now()
             where id = $1 and enabled and failing_since <= $3",
        )
        .bind(subscription_id)
        .bind(now)
        .bind(now - period)
        .execute(conn)
        .await?;
        recorded.subscription_disabled = disabled.rows_affected() > 0;
    }
    Ok(recorded)
}

/// Records a `410 Gone` answer to `attempt`: the delivery is dead and the subscription is
/// disabled (`gone`).
#[tracing::instrument(skip_all, fields(delivery.id = id))]
pub async fn record_gone(
    conn: &mut PgConnection,
    id: i64,
    attempt: i32,
    now: DateTime<Utc>,
) -> Result<FailureRecorded, StoreError> {
    let row = sqlx::query(
        "with d as (
             update deliveries
             set status = 'dead', next_attempt_at = null, dead_at = $3, last_status = 410,
                 last_error = 'the receiver answered 410 Gone; the subscription was disabled'
             where id = $1 and attempts = $2 and status = 'pending'
             returning subscription_id),
         s as (
             update subscriptions
             set enabled = false, disabled_reason = 'gone', disabled_at = $3, updated_at = now()
             where id in (select subscription_id from d) and enabled
             returning id)
         select (select count(*) from d) as recorded, (select count(*) from s) as disabled",
    )
    .bind(id)
    .bind(attempt)
    .bind(now)
    .fetch_one(conn)
    .await?;
    Ok(FailureRecorded {
        recorded: count(&row, "recorded")? > 0,
        subscription_disabled: count(&row, "disabled")? > 0,
    })
}

/// Dead deliveries, newest first.
#[tracing::instrument(skip_all)]
pub async fn list_dead(
    conn: &mut PgConnection,
    filter: &DeadFilter<'_>,
) -> Result<Vec<DeliveryRecord>, StoreError> {
    sqlx::query(&format!(
        "select {COLUMNS}, body from deliveries
         where status = 'dead'
           and ($1::int8 is null or subscription_id = $1)
           and ($2::text is null or tenant = $2)
         order by dead_at desc, id desc
         limit $3"
    ))
    .bind(filter.subscription_id)
    .bind(filter.tenant.map(TenantId::as_str))
    .bind(i64::from(filter.limit.max(1)))
    .fetch_all_with(conn, record_from)
    .await
}

/// Every delivery of a subscription, oldest first (for tests and inspection).
#[tracing::instrument(skip_all, fields(subscription.id = subscription_id))]
pub async fn list_deliveries(
    conn: &mut PgConnection,
    subscription_id: i64,
) -> Result<Vec<DeliveryRecord>, StoreError> {
    sqlx::query(&format!(
        "select {COLUMNS}, body from deliveries where subscription_id = $1 order by id"
    ))
    .bind(subscription_id)
    .fetch_all_with(conn, record_from)
    .await
}

/// One delivery.
#[tracing::instrument(skip_all, fields(delivery.id = id))]
pub async fn get_delivery(
    conn: &mut PgConnection,
    id: i64,
) -> Result<Option<DeliveryRecord>, StoreError> {
    sqlx::query(&format!(
        "select {COLUMNS}, body from deliveries where id = $1"
    ))
    .bind(id)
    .fetch_optional_with(conn, record_from)
    .await
}

/// Sends dead deliveries back to pending, due at `now`, with a fresh retry schedule; the same
/// `webhook-id` and bytes. Ids that are not dead are left alone. Returns the ids replayed.
#[tracing::instrument(skip_all, fields(deliveries = ids.len()))]
pub async fn replay_dead(
    conn: &mut PgConnection,
    ids: &[i64],
    now: DateTime<Utc>,
) -> Result<Vec<i64>, StoreError> {
    let rows = sqlx::query(
        "update deliveries
         set status = 'pending', next_attempt_at = $2, attempts = 0, dead_at = null,
             replays = replays + 1
         where id = any($1) and status = 'dead'
         returning id",
    )
    .bind(ids)
    .bind(now)
    .fetch_all(conn)
    .await?;
    let mut replayed: Vec<i64> = rows
        .iter()
        .map(|row| row.try_get("id"))
        .collect::<Result<_, _>>()?;
    replayed.sort_unstable();
    Ok(replayed)
}

/// [`replay_dead`] for every dead delivery of a subscription. Returns how many.
#[tracing::instrument(skip_all, fields(subscription.id = subscription_id))]
pub async fn replay_all_dead(
    conn: &mut PgConnection,
    subscription_id: i64,
    now: DateTime<Utc>,
) -> Result<u64, StoreError> {
    sqlx::query(
        "update deliveries
         set status = 'pending', next_attempt_at = $2, attempts = 0, dead_at = null,
             replays = replays + 1
         where subscription_id = $1 and status = 'dead'",
    )
    .bind(subscription_id)
    .bind(now)
    .execute_counting(conn)
    .await
}

/// Deliveries by status (for metrics, tests and benchmarks).
pub async fn count_deliveries(
    conn: &mut PgConnection,
    status: DeliveryStatus,
) -> Result<u64, StoreError> {
    let row = sqlx::query("select count(*) as n from deliveries where status = $1")
        .bind(status.as_str())
        .fetch_one(conn)
        .await?;
    count(&row, "n")
}

pub(crate) fn record_from(row: &PgRow) -> Result<DeliveryRecord, StoreError> {
    Ok(DeliveryRecord::from_row(row)?)
}
