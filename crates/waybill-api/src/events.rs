//! The outbound event: the body published to `waybill.events` and POSTed to HTTP subscribers,
//! versioned.
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

impl DownstreamEvent {
    /// The body's `"type"`, as serialised.
    pub fn type_name(&self) -> &'static str {
        match self {
            DownstreamEvent::StatusChanged(_) => StatusChangedV1::TYPE,
        }
    }
}

/// [`DownstreamEvent`] by reference, to serialise a payload without cloning it. Serialises
/// exactly like [`DownstreamEvent`] (checked by a unit test).
#[derive(Debug, Clone, Copy, Serialize)]
#[serde(tag = "type")]
pub enum DownstreamEventRef<'a> {
    /// A shipment's current event changed.
    #[serde(rename = "shipment.status_changed")]
    StatusChanged(&'a StatusChangedV1),
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
    /// What the carrier said of the new current event.
    #[serde(flatten)]
    pub scan: ScanV1,
    /// The shipment's version after the change: consumers order notifications by it.
    pub shipment_version: i64,
    /// Up to [`RECENT_HISTORY_LEN`] newest events of the shipment, newest first.
    pub recent_history: Vec<HistoryEntryV1>,
}

impl StatusChangedV1 {
    /// Its `"type"` (the tag `DownstreamEvent` writes; a unit test checks they agree).
    pub const TYPE: &'static str = "shipment.status_changed";

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

/// What a carrier said of one scan, as notifications carry it: its fields sit beside the
/// event's id and status in the JSON (a notification's new current event, a history entry).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScanV1 {
    /// The carrier's raw status.
    pub raw_status: RawStatus,
    /// Its sub-status.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sub_status: Option<String>,
    /// When it happened.
    #[serde(with = "waybill_core::rfc3339")]
    pub occurred_at: DateTime<Utc>,
    /// Where.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub location: Option<String>,
    /// The carrier's message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

impl ScanV1 {
    /// The scan of a stored event.
    pub fn of(event: &TrackingEvent) -> ScanV1 {
        ScanV1 {
            raw_status: event.raw_status.clone(),
            sub_status: event.sub_status.clone(),
            occurred_at: event.occurred_at,
            location: event.location.clone(),
            message: event.message.clone(),
        }
    }
}

/// One event of a shipment's history, as notifications carry it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistoryEntryV1 {
    /// The event id.
    pub event_id: EventId,
    /// Its canonical status.
    pub status: Status,
    /// What the carrier said of it.
    #[serde(flatten)]
    pub scan: ScanV1,
    /// How it reached Waybill.
    pub origin: Origin,
}

impl HistoryEntryV1 {
    /// The entry of an event, exactly as it reads back from storage once stored.
    pub fn of(event: &TrackingEvent) -> HistoryEntryV1 {
        HistoryEntryV1 {
            event_id: event.id.clone(),
            status: event.status,
            scan: ScanV1::of(event),
            origin: event.origin,
        }
    }

    /// Its merge key (the order `recent_history` is sorted in, newest first).
    pub fn key(&self) -> EventKey {
        EventKey {
            occurred_at: self.scan.occurred_at,
            status: self.status,
            id: self.event_id.clone(),
        }
    }
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
            scan: ScanV1 {
                raw_status: RawStatus {
                    code: "D".into(),
                    description: None,
                },
                sub_status: None,
                occurred_at: Utc.timestamp_opt(1_780_000_000, 0).unwrap(),
                location: None,
                message: None,
            },
            shipment_version: 2,
            recent_history: vec![],
        };
        let owned = serde_json::to_value(DownstreamEvent::StatusChanged(body.clone())).unwrap();
        let borrowed = serde_json::to_value(DownstreamEventRef::StatusChanged(&body)).unwrap();
        assert_eq!(owned, borrowed);
        assert_eq!(owned["type"], "shipment.status_changed");
        let event = DownstreamEvent::StatusChanged(body.clone());
        assert_eq!(owned["type"], event.type_name());
        assert_eq!(owned["version"], 1);
        assert_eq!(owned["previous_status"], "InTransit");
        assert_eq!(
            serde_json::from_value::<DownstreamEvent>(owned).unwrap(),
            DownstreamEvent::StatusChanged(body)
        );
    }
}
