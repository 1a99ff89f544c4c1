//! Read queries of the operator console (`waybill-console`): shipment search without a tenant
//! or carrier, a shipment's polling schedule, the poll backlog, and subscription health.
//!
//! The console runs only while somebody looks at it, so these queries add nothing to the
//! pipeline's steady cost: no index or column exists for them. Each one is bounded by an
//! existing index instead — searches walk the `(tenant, carrier)` prefix of `shipments_key`
//! one probe per distinct pair (a loose index scan: tens of probes, not a table scan), and
//! counts stop at [`COUNT_CAP`] — so a page refresh costs milliseconds however large the
//! tables grow.

use std::sync::LazyLock;

use chrono::{DateTime, Utc};
use sqlx::postgres::PgRow;
use sqlx::{PgConnection, Row};
use waybill_core::{CarrierCode, TenantId, TrackingNumber};

use crate::ShipmentSummary;
use crate::decode::{count, parse_id, shipment_summary};
use crate::error::StoreError;
use crate::fanout::DisabledReason;
use crate::fanout::deliveries::{COLUMNS, DeliveryRecord, record_from};
use crate::fetch::RunQuery;

/// Where counts stop: a count at the cap means "this many or more".
pub const COUNT_CAP: u64 = 10_000;

/// What the console's shipment search looks for. Empty fields do not filter; with a tracking
/// number the search is an exact lookup, with an order number a lookup of that order, and
/// otherwise a browse of the first shipments by tracking number.
#[derive(Debug, Clone, Default)]
pub struct ShipmentSearch<'a> {
    /// Only this tenant's shipments (`None`: every tenant, for admin keys).
    pub tenant: Option<&'a TenantId>,
    /// Exactly this tracking number, any carrier.
    pub tracking_number: Option<&'a TrackingNumber>,
    /// Exactly this order number.
    pub order_number: Option<&'a str>,
    /// Only this carrier.
    pub carrier: Option<&'a CarrierCode>,
    /// At most this many.
    pub limit: u32,
}

/// A shipment's polling state, as the console's timeline shows it (the `shipments` columns of
/// the same names).
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct ShipmentSchedule {
    /// The source that registered or first reported the shipment.
    pub source: Option<String>,
    /// `active`, `off`, `done`, or `None` before the scheduler adopted it.
    pub poll_state: Option<String>,
    /// The next scheduled poll (while active).
    pub next_poll_at: Option<DateTime<Utc>>,
    /// When the courier's API last answered a poll of it.
    pub last_polled_at: Option<DateTime<Utc>>,
    /// When a webhook last mentioned it.
    pub last_webhook_at: Option<DateTime<Utc>>,
    /// Failed polls in a row.
    pub poll_failures: i32,
}

/// One subscription with its recent delivery record: what the console's health tables show.
/// Never its secrets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubscriptionHealth {
    /// Its id.
    pub id: i64,
    /// The tenant whose changes it receives.
    pub tenant: TenantId,
    /// The destination.
    pub url: String,
    /// A label for people.
    pub description: String,
    /// Whether deliveries are attempted.
    pub enabled: bool,
    /// Why it is disabled.
    pub disabled_reason: Option<DisabledReason>,
    /// Since when.
    pub disabled_at: Option<DateTime<Utc>>,
    /// The first failed attempt since the last success.
    pub failing_since: Option<DateTime<Utc>>,
    /// Of its last [`RECENT_WINDOW`] deliveries: delivered ones.
    pub recent_delivered: u64,
    /// Of its last [`RECENT_WINDOW`] deliveries: dead ones.
    pub recent_dead: u64,
    /// Of its last [`RECENT_WINDOW`] deliveries: all.
    pub recent_total: u64,
    /// Pending deliveries (capped at [`COUNT_CAP`]).
    pub pending: u64,
    /// Dead deliveries, replayable (capped at [`COUNT_CAP`]).
    pub dead: u64,
    /// The last attempt of any of its deliveries among the recent ones.
    pub last_attempt_at: Option<DateTime<Utc>>,
}

/// How many of a subscription's newest deliveries its success rate covers.
pub const RECENT_WINDOW: i64 = 200;

const SHIPMENT_COLUMNS: &str = "s.tenant, s.carrier, s.tracking_number, s.order_number,
     s.registered, s.status, s.raw_status, s.sub_status, s.last_event_at, s.version";

/// The distinct `(tenant, carrier)` pairs of `shipments`, walked through `shipments_key` one
/// index probe each. `{FIRST}` and `{NEXT}` are replaced by the conditions of the variant.
const PAIRS: &str = "with recursive pairs(tenant, carrier) as (
         (select tenant, carrier from shipments where {FIRST}
          order by tenant, carrier limit 1)
         union all
         select next.tenant, next.carrier from pairs p
         cross join lateral (
             select tenant, carrier from shipments where {NEXT}
             order by tenant, carrier limit 1) next)";

fn pairs(one_tenant: bool) -> String {
    let (first, next) = if one_tenant {
        ("tenant = $1", "tenant = $1 and carrier > p.carrier")
    } else {
        ("true", "(tenant, carrier) > (p.tenant, p.carrier)")
    };
    PAIRS.replace("{FIRST}", first).replace("{NEXT}", next)
}

/// Shipments matching `search`, by tenant, carrier and tracking number (see
/// [`ShipmentSearch`]).
#[tracing::instrument(skip_all)]
pub async fn search_shipments(
    conn: &mut PgConnection,
    search: &ShipmentSearch<'_>,
) -> Result<Vec<ShipmentSummary>, StoreError> {
    static BY_NUMBER: LazyLock<[String; 2]> = LazyLock::new(|| {
        [false, true].map(|one_tenant| {
            format!(
                "{} select {SHIPMENT_COLUMNS} from (select * from pairs limit 10000) p
                 join shipments s on s.tenant = p.tenant and s.carrier = p.carrier
                                 and s.tracking_number = $3
                 where ($2::text is null or p.carrier = $2)
                 order by s.tenant, s.carrier limit $4",
                pairs(one_tenant)
            )
        })
    });
    static BY_ORDER: &str = "with recursive tenants(tenant) as (
             (select tenant from shipments where order_number is not null
              order by tenant limit 1)
             union all
             select next.tenant from tenants t
             cross join lateral (
                 select tenant from shipments
                 where order_number is not null and tenant > t.tenant
                 order by tenant limit 1) next)
         select s.tenant, s.carrier, s.tracking_number, s.order_number, s.registered, s.status,
                s.raw_status, s.sub_status, s.last_event_at, s.version
         from (select * from tenants limit 10000) t
         join shipments s on s.tenant = t.tenant and s.order_number = $3
         where ($1::text is null or t.tenant = $1) and ($2::text is null or s.carrier = $2)
         order by s.tenant, s.carrier, s.tracking_number limit $4";
    static BROWSE: LazyLock<[String; 2]> = LazyLock::new(|| {
        [false, true].map(|one_tenant| {
            format!(
                "{} select {SHIPMENT_COLUMNS} from (select * from pairs limit 10000) p
                 cross join lateral (
                     select * from shipments s
                     where s.tenant = p.tenant and s.carrier = p.carrier
                     order by s.tracking_number limit $4) s
                 where ($2::text is null or p.carrier = $2)
                 order by s.tenant, s.carrier, s.tracking_number limit $4",
                pairs(one_tenant)
            )
        })
    });
    let one_tenant = usize::from(search.tenant.is_some());
    let (statement, third): (&str, Option<&str>) =
        match (search.tracking_number, search.order_number) {
            (Some(number), _) => (BY_NUMBER[one_tenant].as_str(), Some(number.as_str())),
            (None, Some(order)) => (BY_ORDER, Some(order)),
            (None, None) => (BROWSE[one_tenant].as_str(), None),
        };
    sqlx::query(statement)
        .bind(search.tenant.map(TenantId::as_str))
        .bind(search.carrier.map(CarrierCode::as_str))
        .bind(third)
        .bind(i64::from(search.limit.clamp(1, 500)))
        .fetch_all_with(conn, shipment_summary)
        .await
}

/// A shipment's polling state; `None` if the tenant has no such shipment.
#[tracing::instrument(skip_all, fields(carrier = %carrier))]
pub async fn shipment_schedule(
    conn: &mut PgConnection,
    tenant: &TenantId,
    carrier: &CarrierCode,
    tracking_number: &TrackingNumber,
) -> Result<Option<ShipmentSchedule>, StoreError> {
    let schedule = sqlx::query_as(
        "select source, poll_state, next_poll_at, last_polled_at, last_webhook_at, poll_failures
         from shipments where tenant = $1 and carrier = $2 and tracking_number = $3",
    )
    .bind(tenant.as_str())
    .bind(carrier.as_str())
    .bind(tracking_number.as_str())
    .fetch_optional(conn)
    .await?;
    Ok(schedule)
}

/// Per source: shipments whose poll is due now, and shipments being polled at all, each capped
/// at [`COUNT_CAP`] (one range of `shipments_due_for_poll_by_source` per source).
#[tracing::instrument(skip_all, fields(sources = sources.len()))]
pub async fn poll_backlog(
    conn: &mut PgConnection,
    sources: &[&str],
) -> Result<Vec<(String, u64, u64)>, StoreError> {
    sqlx::query(
        "select src.id,
                (select count(*) from (select 1 from shipments
                    where source = src.id and next_poll_at <= now() limit $2) due) as due,
                (select count(*) from (select 1 from shipments
                    where source = src.id and next_poll_at is not null limit $2) active) as active
         from unnest($1::text[]) with ordinality as src(id, n)
         order by src.n",
    )
    .bind(sources)
    .bind(COUNT_CAP as i64)
    .fetch_all_with(conn, |row| {
        Ok((
            row.try_get("id")?,
            count(row, "due")?,
            count(row, "active")?,
        ))
    })
    .await
}

/// Events parked for shipments nobody registered yet, of one tenant or all, capped at
/// [`COUNT_CAP`].
#[tracing::instrument(skip_all)]
pub async fn parked_events(
    conn: &mut PgConnection,
    tenant: Option<&TenantId>,
) -> Result<u64, StoreError> {
    let row = sqlx::query(
        "select count(*) as n from (select 1 from unmatched_events
             where ($1::text is null or tenant = $1) limit $2) parked",
    )
    .bind(tenant.map(TenantId::as_str))
    .bind(COUNT_CAP as i64)
    .fetch_one(conn)
    .await?;
    count(&row, "n")
}

/// Subscriptions (one tenant's, or all) with their health, by id.
#[tracing::instrument(skip_all)]
pub async fn subscription_health(
    conn: &mut PgConnection,
    tenant: Option<&TenantId>,
) -> Result<Vec<SubscriptionHealth>, StoreError> {
    sqlx::query(
        "select s.id, s.tenant, s.url, s.description, s.enabled, s.disabled_reason,
                s.disabled_at, s.failing_since, r.delivered, r.dead as recent_dead, r.total,
                r.last_attempt_at,
                (select count(*) from (select 1 from deliveries d where d.subscription_id = s.id
                     and d.status = 'pending' limit $3) p) as pending,
                (select count(*) from (select 1 from deliveries d where d.subscription_id = s.id
                     and d.status = 'dead' limit $3) x) as dead
         from subscriptions s
         cross join lateral (
             select count(*) filter (where status = 'delivered') as delivered,
                    count(*) filter (where status = 'dead') as dead,
                    count(*) as total,
                    max(last_attempt_at) as last_attempt_at
             from (select status, last_attempt_at from deliveries d
                   where d.subscription_id = s.id
                   order by d.outbox_id desc limit $2) recent) r
         where ($1::text is null or s.tenant = $1)
         order by s.id",
    )
    .bind(tenant.map(TenantId::as_str))
    .bind(RECENT_WINDOW)
    .bind(COUNT_CAP as i64)
    .fetch_all_with(conn, health_from)
    .await
}

/// A subscription's newest deliveries (by the change they carry), at most `limit`, read
/// without their bodies ([`DeliveryRecord::body`] is empty): the console never shows them.
#[tracing::instrument(skip_all, fields(subscription.id = subscription_id))]
pub async fn recent_deliveries(
    conn: &mut PgConnection,
    subscription_id: i64,
    limit: u32,
) -> Result<Vec<DeliveryRecord>, StoreError> {
    sqlx::query(&format!(
        "select {COLUMNS}, ''::bytea as body from deliveries where subscription_id = $1
         order by outbox_id desc limit $2"
    ))
    .bind(subscription_id)
    .bind(i64::from(limit.clamp(1, 500)))
    .fetch_all_with(conn, record_from)
    .await
}

fn health_from(row: &PgRow) -> Result<SubscriptionHealth, StoreError> {
    let reason: Option<String> = row.try_get("disabled_reason")?;
    let reason = reason.as_deref().map(DisabledReason::parse).transpose()?;
    Ok(SubscriptionHealth {
        id: row.try_get("id")?,
        tenant: parse_id(row, "tenant", TenantId::parse)?,
        url: row.try_get("url")?,
        description: row.try_get("description")?,
        enabled: row.try_get("enabled")?,
        disabled_reason: reason,
        disabled_at: row.try_get("disabled_at")?,
        failing_since: row.try_get("failing_since")?,
        recent_delivered: count(row, "delivered")?,
        recent_dead: count(row, "recent_dead")?,
        recent_total: count(row, "total")?,
        pending: count(row, "pending")?,
        dead: count(row, "dead")?,
        last_attempt_at: row.try_get("last_attempt_at")?,
    })
}
