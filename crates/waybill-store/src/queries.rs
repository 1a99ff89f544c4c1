//! Read queries for the API, counting helpers for tests and the load generator, and small
//! writes outside the batch merge.

use std::sync::LazyLock;

use sqlx::postgres::PgRow;
use sqlx::{PgConnection, Row};
use waybill_api::events::{HistoryEntryV1, ScanV1};
use waybill_api::{HistoryEntry, ShipmentSummary, ShipmentView};
use waybill_core::{CarrierCode, EventId, RawStatus, TenantId, TrackingNumber};

use crate::batch::{ShipmentKey, key_columns};
use crate::decode::{
    HISTORY_ENTRY_COLUMNS, history_entry_v1, parse_event_id, parse_id, parse_status,
    shipment_summary,
};
use crate::error::StoreError;
use crate::fetch::RunQuery;
use crate::fragments::status_rank_sql;

/// `ORDER BY` for newest-first history over `tracking_events e`: the reverse of
/// [`waybill_core::EventKey`]'s order.
pub(crate) static NEWEST_FIRST: LazyLock<String> = LazyLock::new(|| {
    format!(
        "e.occurred_at desc, {} desc, e.event_id desc",
        status_rank_sql("e.status")
    )
});

/// One shipment with its history, newest first; `None` if the tenant has no such shipment.
///
/// One statement (the shipment left-joined to its events), so the shipment and its history
/// come from one snapshot without a transaction — request handlers can be cancelled at any
/// await, and a cancelled future must never be holding a transaction (sqlx 0.8).
#[tracing::instrument(skip_all, fields(carrier = %carrier, shipment.tracking_number = %tracking_number))]
pub async fn get_shipment(
    conn: &mut PgConnection,
    tenant: &TenantId,
    carrier: &CarrierCode,
    tracking_number: &TrackingNumber,
) -> Result<Option<ShipmentView>, StoreError> {
    static STATEMENT: LazyLock<String> = LazyLock::new(|| {
        format!(
            "select s.tenant, s.carrier, s.tracking_number, s.order_number, s.metadata,
                    s.registered, s.status, s.raw_status, s.raw_status_description, s.sub_status,
                    s.current_event_id, s.current_event_at, s.last_event_at, s.version,
                    s.created_at, s.updated_at,
                    {HISTORY_ENTRY_COLUMNS}, e.time_provenance as e_time_provenance,
                    e.provider_event_id as e_provider_event_id, e.courier as e_courier,
                    e.received_at as e_received_at
             from shipments s
             left join tracking_events e on e.shipment_id = s.id
             where s.tenant = $1 and s.carrier = $2 and s.tracking_number = $3
             order by {}",
            NEWEST_FIRST.as_str()
        )
    });
    let rows = sqlx::query(STATEMENT.as_str())
        .bind(tenant.as_str())
        .bind(carrier.as_str())
        .bind(tracking_number.as_str())
        .fetch_all(conn)
        .await?;
    let Some(row) = rows.first() else {
        return Ok(None);
    };
    let mut history = Vec::with_capacity(rows.len());
    for event_row in &rows {
        if event_row
            .try_get::<Option<String>, _>("e_event_id")?
            .is_some()
        {
            history.push(history_entry(event_row)?);
        }
    }
    let raw_code: Option<String> = row.try_get("raw_status")?;
    let raw_description: Option<String> = row.try_get("raw_status_description")?;
    let current_event_id: Option<String> = row.try_get("current_event_id")?;
    Ok(Some(ShipmentView {
        tenant: parse_id(row, "tenant", TenantId::parse)?,
        carrier: parse_id(row, "carrier", CarrierCode::parse)?,
        tracking_number: parse_id(row, "tracking_number", TrackingNumber::parse)?,
        order_number: row.try_get("order_number")?,
        metadata: row.try_get("metadata")?,
        registered: row.try_get("registered")?,
        status: parse_status(&row.try_get::<String, _>("status")?)?,
        raw_status: raw_code.map(|code| RawStatus {
            code,
            description: raw_description,
        }),
        sub_status: row.try_get("sub_status")?,
        current_event_id: current_event_id
            .as_deref()
            .map(parse_event_id)
            .transpose()?,
        current_event_at: row.try_get("current_event_at")?,
        last_event_at: row.try_get("last_event_at")?,
        version: row.try_get("version")?,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
        history,
    }))
}

/// The tenant's shipments with this order number, by carrier and tracking number.
#[tracing::instrument(skip_all)]
pub async fn find_by_order_number(
    conn: &mut PgConnection,
    tenant: &TenantId,
    order_number: &str,
) -> Result<Vec<ShipmentSummary>, StoreError> {
    sqlx::query(
        "select tenant, carrier, tracking_number, order_number, registered, status, raw_status,
                sub_status, last_event_at, version
         from shipments where tenant = $1 and order_number = $2
         order by carrier, tracking_number",
    )
    .bind(tenant.as_str())
    .bind(order_number)
    .fetch_all_with(conn, shipment_summary)
    .await
}

/// Records that a webhook mentioned these shipments (`last_webhook_at = now()`), so the poll
/// scheduler can back off polling shipments whose carrier pushes. Locks rows in key order.
/// [`apply_batch`](crate::apply_batch) already does this for webhook-origin events; this is
/// for callers outside a merge. Returns how many shipments were touched.
#[tracing::instrument(skip_all, fields(shipments = keys.len()))]
pub async fn webhook_touch(
    conn: &mut PgConnection,
    keys: &[ShipmentKey],
) -> Result<u64, StoreError> {
    let mut keys: Vec<&ShipmentKey> = keys.iter().collect();
    keys.sort_unstable();
    keys.dedup();
    let (tenants, carriers, numbers) = key_columns(keys.iter().copied());
    sqlx::query(
        "with locked as (
             select s.id from shipments s
             join unnest($1::text[], $2::text[], $3::text[]) as k(tenant, carrier, tracking_number)
               on s.tenant = k.tenant and s.carrier = k.carrier
              and s.tracking_number = k.tracking_number
             order by s.tenant, s.carrier, s.tracking_number
             for update of s)
         update shipments set last_webhook_at = now() where id in (select id from locked)",
    )
    .bind(tenants)
    .bind(carriers)
    .bind(numbers)
    .execute_counting(conn)
    .await
}

/// How many events are stored, over all shipments.
pub async fn count_tracking_events(conn: &mut PgConnection) -> Result<i64, StoreError> {
    count(conn, "select count(*) from tracking_events").await
}

/// How many stored events have one of these ids (over all shipments).
pub async fn count_events_with_ids(
    conn: &mut PgConnection,
    ids: &[EventId],
) -> Result<i64, StoreError> {
    let ids: Vec<&str> = ids.iter().map(EventId::as_str).collect();
    Ok(
        sqlx::query_scalar("select count(*) from tracking_events where event_id = any($1::text[])")
            .bind(ids)
            .fetch_one(conn)
            .await?,
    )
}

/// How many shipments exist.
pub async fn count_shipments(conn: &mut PgConnection) -> Result<i64, StoreError> {
    count(conn, "select count(*) from shipments").await
}

/// How many events are parked waiting for their shipment's registration.
pub async fn count_unmatched_events(conn: &mut PgConnection) -> Result<i64, StoreError> {
    count(conn, "select count(*) from unmatched_events").await
}

/// How many outbox rows exist (published or not).
pub async fn count_outbox(conn: &mut PgConnection) -> Result<i64, StoreError> {
    count(conn, "select count(*) from outbox").await
}

async fn count(conn: &mut PgConnection, statement: &'static str) -> Result<i64, StoreError> {
    Ok(sqlx::query_scalar(statement).fetch_one(conn).await?)
}

fn history_entry(row: &PgRow) -> Result<HistoryEntry, StoreError> {
    let HistoryEntryV1 {
        event_id,
        status,
        scan:
            ScanV1 {
                raw_status,
                sub_status,
                occurred_at,
                location,
                message,
            },
        origin,
    } = history_entry_v1(row)?;
    let provenance: serde_json::Value = row.try_get("e_time_provenance")?;
    Ok(HistoryEntry {
        event_id,
        status,
        raw_status,
        sub_status,
        occurred_at,
        time_provenance: serde_json::from_value(provenance)
            .map_err(|e| StoreError::corrupt("e_time_provenance", e))?,
        location,
        message,
        origin,
        provider_event_id: row.try_get("e_provider_event_id")?,
        courier: row.try_get("e_courier")?,
        received_at: row.try_get("e_received_at")?,
    })
}
