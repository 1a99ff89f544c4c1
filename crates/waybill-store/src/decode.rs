//! Decoding stored values back into domain types: the column readers every query module shares.
//! A leaf: it depends on no other module of the crate but the error type.

use sqlx::Row;
use sqlx::postgres::PgRow;
use waybill_api::ShipmentSummary;
use waybill_api::events::{HistoryEntryV1, ScanV1};
use waybill_core::{CarrierCode, EventId, Origin, RawStatus, Status, TenantId, TrackingNumber};

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

/// The columns of `tracking_events e` that [`history_entry_v1`] reads, each named with an `e_`
/// prefix (so a statement can select them beside a shipment's columns of the same names).
pub(crate) const HISTORY_ENTRY_COLUMNS: &str = "e.event_id as e_event_id, e.status as e_status, \
     e.raw_status as e_raw_status, e.raw_status_description as e_raw_status_description, \
     e.sub_status as e_sub_status, e.occurred_at as e_occurred_at, e.location as e_location, \
     e.message as e_message, e.origin as e_origin";

/// A stored event as notifications carry it, from the [`HISTORY_ENTRY_COLUMNS`].
pub(crate) fn history_entry_v1(row: &PgRow) -> Result<HistoryEntryV1, StoreError> {
    Ok(HistoryEntryV1 {
        event_id: parse_event_id(&row.try_get::<String, _>("e_event_id")?)?,
        status: parse_status(&row.try_get::<String, _>("e_status")?)?,
        scan: ScanV1 {
            raw_status: RawStatus {
                code: row.try_get("e_raw_status")?,
                description: row.try_get("e_raw_status_description")?,
            },
            sub_status: row.try_get("e_sub_status")?,
            occurred_at: row.try_get("e_occurred_at")?,
            location: row.try_get("e_location")?,
            message: row.try_get("e_message")?,
        },
        origin: parse_origin(&row.try_get::<String, _>("e_origin")?)?,
    })
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
