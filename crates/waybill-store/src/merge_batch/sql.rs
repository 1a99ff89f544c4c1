//! The statements of a batch merge, one function per round trip. Every multi-row statement takes
//! parallel arrays and `unnest`s them, so a batch costs the same handful of round trips whether
//! it holds one event or five hundred.

use std::collections::{HashMap, HashSet};
use std::sync::LazyLock;

use chrono::{DateTime, Utc};
use sqlx::types::Json;
use sqlx::{PgConnection, Row};
use waybill_core::{EventKey, RawStatus, TrackingEvent};

use super::plan::{LOCK_NAMESPACE, Plan, PlannedEvent};
use crate::error::StoreError;
use crate::outbox::HistoryEntryV1;
use crate::queries::{parse_event_id, parse_status};

/// Takes the per-shipment advisory locks, in the order given (sorted by the caller). Held until
/// the transaction ends. They serialise batches that touch the same shipment *including* one
/// that does not exist yet, which row locks cannot: without them, a batch parking an event for
/// an unknown shipment and a batch registering that shipment could each miss the other's
/// uncommitted row and leave the event parked forever.
pub(super) async fn lock_keys(conn: &mut PgConnection, lock_ids: &[i32]) -> Result<(), StoreError> {
    sqlx::query("select pg_advisory_xact_lock($1, k) from unnest($2::int4[]) as k")
        .bind(LOCK_NAMESPACE)
        .bind(lock_ids)
        .execute(conn)
        .await?;
    Ok(())
}

/// Applies the batch's registrations, creating shipments as needed, in key order. Returns the
/// ids of rows inserted or changed (the shipments whose parked events must be pulled in), each
/// with whether it was inserted.
pub(super) async fn register_shipments(
    conn: &mut PgConnection,
    plan: &Plan,
) -> Result<HashMap<i64, bool>, StoreError> {
    let mut tenants = Vec::new();
    let mut carriers = Vec::new();
    let mut tracking_numbers = Vec::new();
    let mut order_numbers = Vec::new();
    let mut metadata = Vec::new();
    let mut sources = Vec::new();
    for shipment in &plan.shipments {
        let Some(registration) = &shipment.registration else {
            continue;
        };
        tenants.push(shipment.key.tenant.as_str());
        carriers.push(shipment.key.carrier.as_str());
        tracking_numbers.push(shipment.key.tracking_number.as_str());
        order_numbers.push(registration.order_number.as_deref());
        metadata.push(Json(&registration.metadata));
        // The registration's source, else the source of the batch's first event for it.
        sources.push(
            registration
                .source
                .as_ref()
                .or(shipment.source.as_ref())
                .map(|s| s.as_str()),
        );
    }
    if tenants.is_empty() {
        return Ok(HashMap::new());
    }
    // Updates only when the registration changes something, so a repeated registration writes
    // nothing; `on conflict do update` locks the existing row either way, in `order by` order.
    let rows = sqlx::query(
        "insert into shipments
             (tenant, carrier, tracking_number, registered, order_number, metadata, source)
         select tenant, carrier, tracking_number, true, order_number, metadata, source
         from unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::jsonb[], $6::text[])
             as t(tenant, carrier, tracking_number, order_number, metadata, source)
         order by tenant, carrier, tracking_number
         on conflict (tenant, carrier, tracking_number) do update set
             registered = true,
             order_number = coalesce(excluded.order_number, shipments.order_number),
             metadata = shipments.metadata || excluded.metadata,
             source = coalesce(shipments.source, excluded.source),
             updated_at = now()
         where not shipments.registered
            or coalesce(excluded.order_number, shipments.order_number)
                   is distinct from shipments.order_number
            or shipments.metadata || excluded.metadata is distinct from shipments.metadata
            or (shipments.source is null and excluded.source is not null)
         returning id, (xmax = 0) as inserted",
    )
    .bind(tenants)
    .bind(carriers)
    .bind(tracking_numbers)
    .bind(order_numbers)
    .bind(metadata)
    .bind(sources)
    .fetch_all(conn)
    .await?;
    // `xmax = 0`: the row version was made by the insert, not by the conflict update (which
    // stamps it with this transaction's id).
    rows.iter()
        .map(|row| Ok((row.try_get("id")?, row.try_get("inserted")?)))
        .collect()
}

/// Creates the given plan shipments (ones the batch's events create and that did not exist
/// when locked), in key order. Returns `(plan index, id)` of the rows inserted; a row some
/// writer outside the advisory-lock protocol inserted meanwhile is skipped (`do nothing`) and
/// the caller locks it normally.
pub(super) async fn create_shipments(
    conn: &mut PgConnection,
    plan: &Plan,
    plan_indexes: &[usize],
) -> Result<Vec<(usize, i64)>, StoreError> {
    let shipments = plan_indexes.iter().map(|&index| &plan.shipments[index]);
    let tenants: Vec<&str> = shipments.clone().map(|s| s.key.tenant.as_str()).collect();
    let carriers: Vec<&str> = shipments.clone().map(|s| s.key.carrier.as_str()).collect();
    let numbers: Vec<&str> = shipments
        .clone()
        .map(|s| s.key.tracking_number.as_str())
        .collect();
    let sources: Vec<Option<&str>> = shipments
        .map(|s| s.source.as_ref().map(|source| source.as_str()))
        .collect();
    let rows = sqlx::query(
        "insert into shipments (tenant, carrier, tracking_number, source)
         select * from unnest($1::text[], $2::text[], $3::text[], $4::text[])
             as t(tenant, carrier, tracking_number, source)
         order by tenant, carrier, tracking_number
         on conflict (tenant, carrier, tracking_number) do nothing
         returning id, tenant, carrier, tracking_number",
    )
    .bind(tenants)
    .bind(carriers)
    .bind(numbers)
    .bind(sources)
    .fetch_all(conn)
    .await?;
    let index_of: HashMap<(&str, &str, &str), usize> = plan_indexes
        .iter()
        .map(|&index| {
            let key = &plan.shipments[index].key;
            (
                (
                    key.tenant.as_str(),
                    key.carrier.as_str(),
                    key.tracking_number.as_str(),
                ),
                index,
            )
        })
        .collect();
    rows.iter()
        .map(|row| {
            let tenant: &str = row.try_get("tenant")?;
            let carrier: &str = row.try_get("carrier")?;
            let number: &str = row.try_get("tracking_number")?;
            let index = index_of
                .get(&(tenant, carrier, number))
                .copied()
                .ok_or_else(|| StoreError::corrupt("created shipment", "not in the batch"))?;
            Ok((index, row.try_get("id")?))
        })
        .collect()
}

/// A shipment row as locked at the start of its merge.
#[derive(Debug)]
pub(super) struct LockedShipment {
    /// Index into `Plan::shipments`.
    pub plan_index: usize,
    pub id: i64,
    pub version: i64,
    pub current: Option<EventKey>,
    pub last_event_at: Option<DateTime<Utc>>,
    pub order_number: Option<String>,
    /// Whether `last_webhook_at` is unset or over a minute old, i.e. worth refreshing.
    pub webhook_stale: bool,
}

impl LockedShipment {
    /// The state of a shipment this transaction just inserted (and so holds locked).
    pub fn created(plan_index: usize, id: i64) -> LockedShipment {
        LockedShipment {
            plan_index,
            id,
            version: 0,
            current: None,
            last_event_at: None,
            order_number: None,
            webhook_stale: true,
        }
    }
}

/// Locks the given plan shipments that exist (in key order) and loads what the merge needs.
/// `for no key update` is the lock the later `update` takes anyway (it never changes `id`), so
/// there is no upgrade, and inserts of rows referencing the shipment are not blocked. Shipments of the batch that do not exist are simply absent.
pub(super) async fn lock_shipments(
    conn: &mut PgConnection,
    plan: &Plan,
    plan_indexes: &[usize],
) -> Result<Vec<LockedShipment>, StoreError> {
    let keys = plan_indexes.iter().map(|&index| &plan.shipments[index].key);
    let tenants: Vec<&str> = keys.clone().map(|k| k.tenant.as_str()).collect();
    let carriers: Vec<&str> = keys.clone().map(|k| k.carrier.as_str()).collect();
    let numbers: Vec<&str> = keys.map(|k| k.tracking_number.as_str()).collect();
    let ordinals: Vec<i64> = plan_indexes.iter().map(|&index| index as i64).collect();
    let rows = sqlx::query(
        "select k.plan_index, s.id, s.version, s.current_event_id, s.current_event_at, s.status,
                s.last_event_at, s.order_number,
                (s.last_webhook_at is null
                 or s.last_webhook_at < now() - interval '1 minute') as webhook_stale
         from unnest($1::text[], $2::text[], $3::text[], $4::int8[])
                  as k(tenant, carrier, tracking_number, plan_index)
         join shipments s on s.tenant = k.tenant
                         and s.carrier = k.carrier
                         and s.tracking_number = k.tracking_number
         order by s.tenant, s.carrier, s.tracking_number
         for no key update of s",
    )
    .bind(tenants)
    .bind(carriers)
    .bind(numbers)
    .bind(ordinals)
    .fetch_all(conn)
    .await?;
    rows.iter()
        .map(|row| {
            let plan_index: i64 = row.try_get("plan_index")?;
            let current_id: Option<String> = row.try_get("current_event_id")?;
            let current_at: Option<DateTime<Utc>> = row.try_get("current_event_at")?;
            let current = match (current_id, current_at) {
                (Some(id), Some(occurred_at)) => Some(EventKey {
                    occurred_at,
                    status: parse_status(&row.try_get::<String, _>("status")?)?,
                    id: parse_event_id(&id)?,
                }),
                _ => None,
            };
            Ok(LockedShipment {
                plan_index: usize::try_from(plan_index)
                    .map_err(|_| StoreError::corrupt("plan index", plan_index))?,
                id: row.try_get("id")?,
                version: row.try_get("version")?,
                current,
                last_event_at: row.try_get("last_event_at")?,
                order_number: row.try_get("order_number")?,
                webhook_stale: row.try_get("webhook_stale")?,
            })
        })
        .collect()
}

/// Parks events of shipments nobody registered. Idempotent: a parked event parks once.
pub(super) async fn park_events(
    conn: &mut PgConnection,
    tenant_and_events: &[(&str, &PlannedEvent)],
) -> Result<(), StoreError> {
    let mut tenants = Vec::new();
    let mut carriers = Vec::new();
    let mut numbers = Vec::new();
    let mut ids = Vec::new();
    let mut bodies = Vec::new();
    let mut sources = Vec::new();
    let mut received = Vec::new();
    for (tenant, planned) in tenant_and_events {
        tenants.push(*tenant);
        carriers.push(planned.event.carrier.as_str());
        numbers.push(planned.event.tracking_number.as_str());
        ids.push(planned.event.id.as_str());
        bodies.push(Json(&planned.event));
        sources.push(planned.source.as_str());
        received.push(planned.received_at);
    }
    sqlx::query(
        "insert into unmatched_events
             (tenant, carrier, tracking_number, event_id, event, source, received_at)
         select * from unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::jsonb[],
                              $6::text[], $7::timestamptz[])
         on conflict (tenant, carrier, tracking_number, event_id) do nothing",
    )
    .bind(tenants)
    .bind(carriers)
    .bind(numbers)
    .bind(ids)
    .bind(bodies)
    .bind(sources)
    .bind(received)
    .execute(conn)
    .await?;
    Ok(())
}

/// A parked event taken out of `unmatched_events`, with its plan index.
pub(super) struct PulledEvent {
    pub plan_index: usize,
    pub event: PlannedEvent,
}

/// Deletes and returns the parked events of the given plan shipments.
pub(super) async fn pull_parked(
    conn: &mut PgConnection,
    plan: &Plan,
    plan_indexes: &[usize],
) -> Result<Vec<PulledEvent>, StoreError> {
    let keys = plan_indexes.iter().map(|&i| &plan.shipments[i].key);
    let tenants: Vec<&str> = keys.clone().map(|k| k.tenant.as_str()).collect();
    let carriers: Vec<&str> = keys.clone().map(|k| k.carrier.as_str()).collect();
    let numbers: Vec<&str> = keys.map(|k| k.tracking_number.as_str()).collect();
    let ordinals: Vec<i64> = plan_indexes.iter().map(|&i| i as i64).collect();
    let rows = sqlx::query(
        "delete from unmatched_events u
         using unnest($1::text[], $2::text[], $3::text[], $4::int8[])
             as k(tenant, carrier, tracking_number, plan_index)
         where u.tenant = k.tenant and u.carrier = k.carrier
           and u.tracking_number = k.tracking_number
         returning k.plan_index, u.event, u.source, u.received_at",
    )
    .bind(tenants)
    .bind(carriers)
    .bind(numbers)
    .bind(ordinals)
    .fetch_all(conn)
    .await?;
    rows.iter()
        .map(|row| {
            let plan_index: i64 = row.try_get("plan_index")?;
            let body: serde_json::Value = row.try_get("event")?;
            let event: TrackingEvent = serde_json::from_value(body)
                .map_err(|e| StoreError::corrupt("unmatched_events.event", e))?;
            let source: String = row.try_get("source")?;
            Ok(PulledEvent {
                plan_index: usize::try_from(plan_index)
                    .map_err(|_| StoreError::corrupt("plan index", plan_index))?,
                event: PlannedEvent {
                    event,
                    source: waybill_core::SourceId::parse(&source)
                        .map_err(|e| StoreError::corrupt("unmatched_events.source", e))?,
                    received_at: row.try_get("received_at")?,
                },
            })
        })
        .collect()
}

/// Inserts events; returns `(shipment_id, event_id)` of those that were new.
pub(super) async fn insert_events(
    conn: &mut PgConnection,
    events: &[(i64, &str, &PlannedEvent)],
) -> Result<HashSet<(i64, String)>, StoreError> {
    let mut shipment_ids = Vec::with_capacity(events.len());
    let mut event_ids = Vec::with_capacity(events.len());
    let mut tenants = Vec::with_capacity(events.len());
    let mut statuses = Vec::with_capacity(events.len());
    let mut raw_codes = Vec::with_capacity(events.len());
    let mut raw_descriptions = Vec::with_capacity(events.len());
    let mut sub_statuses = Vec::with_capacity(events.len());
    let mut occurred = Vec::with_capacity(events.len());
    let mut provenances = Vec::with_capacity(events.len());
    let mut locations = Vec::with_capacity(events.len());
    let mut messages = Vec::with_capacity(events.len());
    let mut origins = Vec::with_capacity(events.len());
    let mut provider_ids = Vec::with_capacity(events.len());
    let mut couriers = Vec::with_capacity(events.len());
    let mut received = Vec::with_capacity(events.len());
    for (shipment_id, tenant, planned) in events {
        let event = &planned.event;
        shipment_ids.push(*shipment_id);
        event_ids.push(event.id.as_str());
        tenants.push(*tenant);
        statuses.push(event.status.as_str());
        raw_codes.push(event.raw_status.code.as_str());
        raw_descriptions.push(event.raw_status.description.as_deref());
        sub_statuses.push(event.sub_status.as_deref());
        occurred.push(event.occurred_at);
        provenances.push(Json(&event.time_provenance));
        locations.push(event.location.as_deref());
        messages.push(event.message.as_deref());
        origins.push(event.origin.as_str());
        provider_ids.push(event.provider_event_id.as_deref());
        couriers.push(event.courier.as_deref());
        received.push(planned.received_at);
    }
    let rows = sqlx::query(
        "insert into tracking_events
             (shipment_id, event_id, tenant, status, raw_status, raw_status_description,
              sub_status, occurred_at, time_provenance, location, message, origin,
              provider_event_id, courier, received_at)
         select * from unnest($1::int8[], $2::text[], $3::text[], $4::text[], $5::text[],
                              $6::text[], $7::text[], $8::timestamptz[], $9::jsonb[],
                              $10::text[], $11::text[], $12::text[], $13::text[], $14::text[],
                              $15::timestamptz[])
         order by 1, 2
         on conflict (shipment_id, event_id) do nothing
         returning shipment_id, event_id",
    )
    .bind(shipment_ids)
    .bind(event_ids)
    .bind(tenants)
    .bind(statuses)
    .bind(raw_codes)
    .bind(raw_descriptions)
    .bind(sub_statuses)
    .bind(occurred)
    .bind(provenances)
    .bind(locations)
    .bind(messages)
    .bind(origins)
    .bind(provider_ids)
    .bind(couriers)
    .bind(received)
    .fetch_all(conn)
    .await?;
    rows.iter()
        .map(|row| Ok((row.try_get("shipment_id")?, row.try_get("event_id")?)))
        .collect()
}

/// The merge keys of every stored event of the given shipments.
pub(super) async fn load_history_keys(
    conn: &mut PgConnection,
    shipment_ids: &[i64],
) -> Result<Vec<(i64, EventKey)>, StoreError> {
    let rows = sqlx::query(
        "select shipment_id, event_id, occurred_at, status
         from tracking_events where shipment_id = any($1::int8[])",
    )
    .bind(shipment_ids)
    .fetch_all(conn)
    .await?;
    rows.iter()
        .map(|row| {
            Ok((
                row.try_get("shipment_id")?,
                EventKey {
                    occurred_at: row.try_get("occurred_at")?,
                    status: parse_status(&row.try_get::<String, _>("status")?)?,
                    id: parse_event_id(&row.try_get::<String, _>("event_id")?)?,
                },
            ))
        })
        .collect()
}

/// A stored event's details, as the outbox payload and the shipment row need them.
#[derive(Debug, Clone)]
pub(super) struct EventDetails {
    pub shipment_id: i64,
    pub entry: HistoryEntryV1,
    /// Whether the row came from the "newest five" half of the query (else: the current event).
    pub is_recent: bool,
}

/// For each `(shipment_id, current_event_id)`: the current event's details and the shipment's
/// five newest events (newest first, in merge order).
pub(super) async fn load_details(
    conn: &mut PgConnection,
    shipment_ids: &[i64],
    current_ids: &[&str],
) -> Result<Vec<EventDetails>, StoreError> {
    static STATEMENT: LazyLock<String> = LazyLock::new(|| {
        let columns = "e.event_id, e.status, e.raw_status, e.raw_status_description, \
                       e.sub_status, e.occurred_at, e.location, e.message, e.origin";
        format!(
            "select k.shipment_id, d.* from unnest($1::int8[], $2::text[]) as k(shipment_id, current_id)
             cross join lateral (
                 (select {columns}, true as is_recent from tracking_events e
                  where e.shipment_id = k.shipment_id
                  order by {order} limit {limit})
                 union all
                 (select {columns}, false from tracking_events e
                  where e.shipment_id = k.shipment_id and e.event_id = k.current_id)
             ) d",
            order = crate::queries::NEWEST_FIRST.as_str(),
            limit = crate::outbox::RECENT_HISTORY_LEN,
        )
    });
    let rows = sqlx::query(STATEMENT.as_str())
        .bind(shipment_ids)
        .bind(current_ids)
        .fetch_all(conn)
        .await?;
    rows.iter()
        .map(|row| {
            Ok(EventDetails {
                shipment_id: row.try_get("shipment_id")?,
                is_recent: row.try_get("is_recent")?,
                entry: HistoryEntryV1 {
                    event_id: parse_event_id(&row.try_get::<String, _>("event_id")?)?,
                    status: parse_status(&row.try_get::<String, _>("status")?)?,
                    raw_status: RawStatus {
                        code: row.try_get("raw_status")?,
                        description: row.try_get("raw_status_description")?,
                    },
                    sub_status: row.try_get("sub_status")?,
                    occurred_at: row.try_get("occurred_at")?,
                    location: row.try_get("location")?,
                    message: row.try_get("message")?,
                    origin: crate::queries::parse_origin(&row.try_get::<String, _>("origin")?)?,
                },
            })
        })
        .collect()
}

/// New values for one shipment row after its merge.
#[derive(Debug)]
pub(super) struct ShipmentUpdate<'a> {
    pub id: i64,
    /// The current event's details, when it changed.
    pub current: Option<&'a HistoryEntryV1>,
    pub version: i64,
    pub last_event_at: Option<DateTime<Utc>>,
    /// An order number to set if the shipment has none.
    pub order_number: Option<&'a str>,
    pub webhook_seen: bool,
}

/// Writes the merge results onto the (already locked) shipment rows.
pub(super) async fn update_shipments(
    conn: &mut PgConnection,
    updates: &[ShipmentUpdate<'_>],
) -> Result<(), StoreError> {
    let mut ids = Vec::new();
    let mut changed = Vec::new();
    let mut event_ids = Vec::new();
    let mut event_times = Vec::new();
    let mut statuses = Vec::new();
    let mut raw_codes = Vec::new();
    let mut raw_descriptions = Vec::new();
    let mut sub_statuses = Vec::new();
    let mut versions = Vec::new();
    let mut last_times = Vec::new();
    let mut order_numbers = Vec::new();
    let mut webhooks = Vec::new();
    for update in updates {
        ids.push(update.id);
        changed.push(update.current.is_some());
        event_ids.push(update.current.map(|c| c.event_id.as_str()));
        event_times.push(update.current.map(|c| c.occurred_at));
        statuses.push(update.current.map(|c| c.status.as_str()));
        raw_codes.push(update.current.map(|c| c.raw_status.code.as_str()));
        raw_descriptions.push(
            update
                .current
                .and_then(|c| c.raw_status.description.as_deref()),
        );
        sub_statuses.push(update.current.and_then(|c| c.sub_status.as_deref()));
        versions.push(update.version);
        last_times.push(update.last_event_at);
        order_numbers.push(update.order_number);
        webhooks.push(update.webhook_seen);
    }
    sqlx::query(
        "update shipments as s set
             current_event_id = case when u.changed then u.event_id else s.current_event_id end,
             current_event_at = case when u.changed then u.event_at else s.current_event_at end,
             status = case when u.changed then u.status else s.status end,
             raw_status = case when u.changed then u.raw_status else s.raw_status end,
             raw_status_description = case when u.changed then u.raw_description
                                           else s.raw_status_description end,
             sub_status = case when u.changed then u.sub_status else s.sub_status end,
             version = u.version,
             last_event_at = greatest(s.last_event_at, u.last_event_at),
             order_number = coalesce(s.order_number, u.order_number),
             last_webhook_at = case when u.webhook then now() else s.last_webhook_at end,
             updated_at = now()
         from unnest($1::int8[], $2::bool[], $3::text[], $4::timestamptz[], $5::text[],
                     $6::text[], $7::text[], $8::text[], $9::int8[], $10::timestamptz[],
                     $11::text[], $12::bool[])
             as u(id, changed, event_id, event_at, status, raw_status, raw_description,
                  sub_status, version, last_event_at, order_number, webhook)
         where s.id = u.id",
    )
    .bind(ids)
    .bind(changed)
    .bind(event_ids)
    .bind(event_times)
    .bind(statuses)
    .bind(raw_codes)
    .bind(raw_descriptions)
    .bind(sub_statuses)
    .bind(versions)
    .bind(last_times)
    .bind(order_numbers)
    .bind(webhooks)
    .execute(conn)
    .await?;
    Ok(())
}
