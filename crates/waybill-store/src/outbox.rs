//! The transactional outbox: the downstream event body, versioned, and the insert that writes it
//! in the merge transaction.
//!
//! Body (version 1), stored in `outbox.payload` and published as is:
//!
//! ```json
//! {
//!   "type": "shipment.status_changed",
//!   "version": 1,
//!   "event_id": "9daf98e69d8e027aa47249f74e25e84d",
//!   "shipment": {"tenant": "default", "carrier": "ups", "tracking_number": "1Z999", "order_number": "A-1"},
//!   "previous_status": "InTransit",
//!   "new_status": "Delivered",
//!   "raw_status": {"code": "D", "description": "Delivered"},
//!   "sub_status": "Delivered_001",
//!   "occurred_at": "2026-11-28T04:09:00Z",
//!   "location": "SYDNEY NSW",
//!   "message": "Left at front door",
//!   "shipment_version": 4,
//!   "recent_history": [{"event_id": "...", "status": "Delivered", "raw_status": {"code": "D"},
//!                       "occurred_at": "...", "origin": "webhook"}]
//! }
//! ```
//!
//! `previous_status` is `null` for a shipment's first event. `recent_history` holds up to
//! [`RECENT_HISTORY_LEN`] events, newest first. `(shipment.tenant, shipment.carrier,
//! shipment.tracking_number, shipment_version)` identifies a notification uniquely. Fields may be
//! added; none is renamed or removed without a new `version`.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::types::Json;
use waybill_core::{
    CarrierCode, EventId, EventKey, Origin, RawStatus, Status, TenantId, TrackingEvent,
    TrackingNumber,
};

/// How many of the newest history entries a notification carries.
pub const RECENT_HISTORY_LEN: usize = 5;

/// A downstream event body, tagged by `"type"`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type")]
pub enum DownstreamEvent {
    /// A shipment's current event changed.
    #[serde(rename = "shipment.status_changed")]
    StatusChanged(StatusChangedV1),
}

/// `shipment.status_changed`, version 1: a shipment's current event changed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusChangedV1 {
    /// The body's schema version: always [`StatusChangedV1::VERSION`].
    pub version: u32,
    /// The new current event.
    pub event_id: EventId,
    /// Which shipment.
    pub shipment: ShipmentRefV1,
    /// The status before the change; `None` for the shipment's first event.
    pub previous_status: Option<Status>,
    /// The status after the change.
    pub new_status: Status,
    /// The carrier's raw status of the new current event.
    pub raw_status: RawStatus,
    /// Its sub-status.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sub_status: Option<String>,
    /// When the new current event happened.
    pub occurred_at: DateTime<Utc>,
    /// Where it happened.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub location: Option<String>,
    /// The carrier's message for it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// The shipment's version after the change: consumers order notifications by it.
    pub shipment_version: i64,
    /// Up to [`RECENT_HISTORY_LEN`] newest events of the shipment, newest first.
    pub recent_history: Vec<HistoryEntryV1>,
}

impl StatusChangedV1 {
    /// The schema version of this body.
    pub const VERSION: u32 = 1;
}

/// The shipment a notification is about.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShipmentRefV1 {
    /// The owning tenant.
    pub tenant: TenantId,
    /// The carrier code.
    pub carrier: CarrierCode,
    /// The tracking number.
    pub tracking_number: TrackingNumber,
    /// The merchant's order number, if known.
    pub order_number: Option<String>,
}

/// One event of a shipment's history, as notifications carry it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistoryEntryV1 {
    /// The event id.
    pub event_id: EventId,
    /// Its canonical status.
    pub status: Status,
    /// The carrier's raw status.
    pub raw_status: RawStatus,
    /// Its sub-status.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sub_status: Option<String>,
    /// When it happened.
    pub occurred_at: DateTime<Utc>,
    /// Where.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub location: Option<String>,
    /// The carrier's message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// How it reached Waybill.
    pub origin: Origin,
}

impl HistoryEntryV1 {
    /// The entry of an event, exactly as it reads back from `tracking_events` once stored.
    pub(crate) fn of(event: &TrackingEvent) -> HistoryEntryV1 {
        HistoryEntryV1 {
            event_id: event.id.clone(),
            status: event.status,
            raw_status: event.raw_status.clone(),
            sub_status: event.sub_status.clone(),
            occurred_at: event.occurred_at,
            location: event.location.clone(),
            message: event.message.clone(),
            origin: event.origin,
        }
    }

    /// Its merge key (the order `recent_history` is sorted in, newest first).
    pub(crate) fn key(&self) -> EventKey {
        EventKey {
            occurred_at: self.occurred_at,
            status: self.status,
            id: self.event_id.clone(),
        }
    }
}

/// [`DownstreamEvent`] by reference, to serialise a payload without cloning it. Must
/// serialise exactly like [`DownstreamEvent`] (checked by a unit test).
#[derive(Serialize)]
#[serde(tag = "type")]
enum DownstreamEventRef<'a> {
    #[serde(rename = "shipment.status_changed")]
    StatusChanged(&'a StatusChangedV1),
}

/// One outbox row to write (with [`insert_statement`] and [`bind_rows`]).
pub(crate) struct NewOutboxRow<'a> {
    pub shipment_id: i64,
    pub body: StatusChangedV1,
    /// The `traceparent` of the message that brought the new current event, if it was traced.
    pub traceparent: Option<&'a str>,
}

/// The statement that inserts outbox rows from 14 parallel arrays bound from parameter
/// `$first` on (see [`bind_rows`]), returning `id, shipment_id`. Usable on its own or as the
/// main statement after a `with` of other work, so the merge writes shipments and outbox rows in
/// one round trip.
pub(crate) fn insert_statement(first: usize) -> String {
    let types = [
        "text",
        "int8",
        "text",
        "text",
        "text",
        "text",
        "text",
        "text",
        "text",
        "text",
        "timestamptz",
        "int8",
        "jsonb",
        "text",
    ];
    let arrays: Vec<String> = types
        .iter()
        .enumerate()
        .map(|(offset, kind)| format!("${}::{kind}[]", first + offset))
        .collect();
    // A change no subscription wants, by the fan-out's own rule, is written already fanned
    // out: the fan-out would only claim and mark it (a second rewrite of the row and its
    // indexes). The row's `created_at` will be `now()`. A subscription receives the changes
    // merged after its creation committed.
    format!(
        "insert into outbox
             (tenant, shipment_id, event_id, carrier, tracking_number, order_number,
              previous_status, new_status, raw_status, sub_status, occurred_at, version, payload,
              traceparent, fanned_out_at)
         select o.*,
                case when exists (select 1 from subscriptions s where {matches})
                     then null else now() end
         from unnest({arrays}) as o(tenant, shipment_id, event_id, carrier, tracking_number,
                                    order_number, previous_status, new_status, raw_status,
                                    sub_status, occurred_at, version, payload, traceparent)
         returning id, shipment_id",
        matches = crate::fanout::matches_clause("o.tenant", "o.carrier", "o.new_status", "now()"),
        arrays = arrays.join(", ")
    )
}

/// Binds the 14 arrays of [`insert_statement`] for `rows`, after the query's other parameters.
pub(crate) fn bind_rows<'q>(
    query: sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments>,
    rows: &'q [NewOutboxRow<'q>],
) -> sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments> {
    let mut tenants = Vec::with_capacity(rows.len());
    let mut shipment_ids = Vec::with_capacity(rows.len());
    let mut event_ids = Vec::with_capacity(rows.len());
    let mut carriers = Vec::with_capacity(rows.len());
    let mut numbers = Vec::with_capacity(rows.len());
    let mut order_numbers = Vec::with_capacity(rows.len());
    let mut previous = Vec::with_capacity(rows.len());
    let mut new = Vec::with_capacity(rows.len());
    let mut raw = Vec::with_capacity(rows.len());
    let mut sub = Vec::with_capacity(rows.len());
    let mut occurred = Vec::with_capacity(rows.len());
    let mut versions = Vec::with_capacity(rows.len());
    let mut payloads = Vec::with_capacity(rows.len());
    let mut traceparents = Vec::with_capacity(rows.len());
    for row in rows {
        let body = &row.body;
        tenants.push(body.shipment.tenant.as_str());
        shipment_ids.push(row.shipment_id);
        event_ids.push(body.event_id.as_str());
        carriers.push(body.shipment.carrier.as_str());
        numbers.push(body.shipment.tracking_number.as_str());
        order_numbers.push(body.shipment.order_number.as_deref());
        previous.push(body.previous_status.map(Status::as_str));
        new.push(body.new_status.as_str());
        raw.push(body.raw_status.code.as_str());
        sub.push(body.sub_status.as_deref());
        occurred.push(body.occurred_at);
        versions.push(body.shipment_version);
        payloads.push(Json(DownstreamEventRef::StatusChanged(body)));
        traceparents.push(row.traceparent);
    }
    query
        .bind(tenants)
        .bind(shipment_ids)
        .bind(event_ids)
        .bind(carriers)
        .bind(numbers)
        .bind(order_numbers)
        .bind(previous)
        .bind(new)
        .bind(raw)
        .bind(sub)
        .bind(occurred)
        .bind(versions)
        .bind(payloads)
        .bind(traceparents)
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;

    #[test]
    fn the_borrowed_payload_serialises_like_the_owned_one() {
        let body = StatusChangedV1 {
            version: StatusChangedV1::VERSION,
            event_id: EventId::parse("9daf98e69d8e027aa47249f74e25e84d").unwrap(),
            shipment: ShipmentRefV1 {
                tenant: TenantId::default_tenant(),
                carrier: CarrierCode::parse("ups").unwrap(),
                tracking_number: TrackingNumber::parse("1Z999").unwrap(),
                order_number: None,
            },
            previous_status: Some(Status::InTransit),
            new_status: Status::Delivered,
            raw_status: RawStatus {
                code: "D".into(),
                description: None,
            },
            sub_status: None,
            occurred_at: Utc.timestamp_opt(1_780_000_000, 0).unwrap(),
            location: None,
            message: None,
            shipment_version: 2,
            recent_history: vec![],
        };
        let owned = serde_json::to_value(DownstreamEvent::StatusChanged(body.clone())).unwrap();
        let borrowed = serde_json::to_value(DownstreamEventRef::StatusChanged(&body)).unwrap();
        assert_eq!(owned, borrowed);
        assert_eq!(owned["type"], "shipment.status_changed");
        assert_eq!(owned["version"], 1);
        assert_eq!(owned["previous_status"], "InTransit");
        assert_eq!(
            serde_json::from_value::<DownstreamEvent>(owned).unwrap(),
            DownstreamEvent::StatusChanged(body)
        );
    }
}
