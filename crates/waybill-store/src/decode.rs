//! Decoding stored values back into domain types: the column readers every query module shares.
//! A leaf: it depends on no other module of the crate but the error type.

use sqlx::Row;
use sqlx::postgres::PgRow;
use waybill_api::ShipmentSummary;
use waybill_core::{CarrierCode, EventId, Origin, Status, TenantId, TrackingNumber};

use crate::error::StoreError;

/// A column holding an identifier, parsed with `parse`.
pub(crate) fn parse_id<T, E: std::fmt::Display>(
    row: &PgRow,
    column: &'static str,
    parse: impl Fn(&str) -> Result<T, E>,
) -> Result<T, StoreError> {
    parse(&row.try_get::<String, _>(column)?).map_err(|e| StoreError::corrupt(column, e))
}

/// A stored canonical status.
pub(crate) fn parse_status(raw: &str) -> Result<Status, StoreError> {
    raw.parse().map_err(|e| StoreError::corrupt("status", e))
}

/// A stored event id.
pub(crate) fn parse_event_id(raw: &str) -> Result<EventId, StoreError> {
    EventId::parse(raw).map_err(|e| StoreError::corrupt("event id", e))
}

/// A stored event origin (`webhook`, `poll` or `system`).
pub(crate) fn parse_origin(raw: &str) -> Result<Origin, StoreError> {
    match raw {
        "webhook" => Ok(Origin::Webhook),
        "poll" => Ok(Origin::Poll),
        "system" => Ok(Origin::System),
        other => Err(StoreError::corrupt("origin", other)),
    }
}

/// A `count(*)` column as a `u64` (a negative one, impossible, as 0).
pub(crate) fn count(row: &PgRow, column: &str) -> Result<u64, StoreError> {
    let value: i64 = row.try_get(column)?;
    Ok(u64::try_from(value).unwrap_or(0))
}

/// A shipment without history, from the columns of the same names.
pub(crate) fn shipment_summary(row: &PgRow) -> Result<ShipmentSummary, StoreError> {
    Ok(ShipmentSummary {
        tenant: parse_id(row, "tenant", TenantId::parse)?,
        carrier: parse_id(row, "carrier", CarrierCode::parse)?,
        tracking_number: parse_id(row, "tracking_number", TrackingNumber::parse)?,
        order_number: row.try_get("order_number")?,
        registered: row.try_get("registered")?,
        status: parse_status(&row.try_get::<String, _>("status")?)?,
        raw_status: row.try_get("raw_status")?,
        sub_status: row.try_get("sub_status")?,
        last_event_at: row.try_get("last_event_at")?,
        version: row.try_get("version")?,
    })
}
