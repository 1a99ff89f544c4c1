//! The shipments API's answers (`GET /v1/shipments/...` on the worker).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use waybill_core::{
    CarrierCode, EventId, Origin, RawStatus, Status, TenantId, TimeProvenance, TrackingNumber,
};

/// A shipment with its whole history, as `GET /v1/shipments/{carrier}/{tracking_number}` shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ShipmentView {
    /// The owning tenant.
    #[schema(value_type = String)]
    pub tenant: TenantId,
    /// The carrier code.
    #[schema(value_type = String)]
    pub carrier: CarrierCode,
    /// The tracking number.
    #[schema(value_type = String)]
    pub tracking_number: TrackingNumber,
    /// The merchant's order number, if known.
    pub order_number: Option<String>,
    /// Registration metadata (an object; empty if none).
    #[schema(value_type = Object)]
    pub metadata: serde_json::Value,
    /// Whether the shipment was explicitly registered.
    pub registered: bool,
    /// The current canonical status (`Pending` before the first event).
    #[schema(value_type = String, example = "InTransit")]
    pub status: Status,
    /// The carrier's raw status of the current event: `{"code", "description"?}`.
    #[schema(value_type = Option<Object>)]
    pub raw_status: Option<RawStatus>,
    /// The current event's sub-status.
    pub sub_status: Option<String>,
    /// The current event.
    #[schema(value_type = Option<String>)]
    pub current_event_id: Option<EventId>,
    /// When the current event happened.
    pub current_event_at: Option<DateTime<Utc>>,
    /// The newest event time in the history (may be newer than the current event's).
    pub last_event_at: Option<DateTime<Utc>>,
    /// How many times the current event changed.
    pub version: i64,
    /// When the shipment was created.
    pub created_at: DateTime<Utc>,
    /// When the row last changed.
    pub updated_at: DateTime<Utc>,
    /// Every event, newest first (in merge order: time, then status rank, then id).
    pub history: Vec<HistoryEntry>,
}

/// One stored event, as the API shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct HistoryEntry {
    /// The deterministic event id.
    #[schema(value_type = String)]
    pub event_id: EventId,
    /// The canonical status.
    #[schema(value_type = String, example = "Delivered")]
    pub status: Status,
    /// The carrier's raw status: `{"code", "description"?}`.
    #[schema(value_type = Object)]
    pub raw_status: RawStatus,
    /// The sub-status.
    pub sub_status: Option<String>,
    /// When the scan happened.
    pub occurred_at: DateTime<Utc>,
    /// How `occurred_at` was derived: `{"kind": "explicit_offset" | "assumed_zone" | "date_only" | "unix_time" | "received_at", "zone"?}`.
    #[schema(value_type = Object)]
    pub time_provenance: TimeProvenance,
    /// Where.
    pub location: Option<String>,
    /// The carrier's message.
    pub message: Option<String>,
    /// How the event reached Waybill: `webhook`, `poll` or `system`.
    #[schema(value_type = String)]
    pub origin: Origin,
    /// The provider's delivery id, if any.
    pub provider_event_id: Option<String>,
    /// The underlying courier, when the carrier is a platform.
    pub courier: Option<String>,
    /// When Waybill received it.
    pub received_at: DateTime<Utc>,
}

/// A shipment without history, as lists show it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ShipmentSummary {
    /// The owning tenant.
    #[schema(value_type = String)]
    pub tenant: TenantId,
    /// The carrier code.
    #[schema(value_type = String)]
    pub carrier: CarrierCode,
    /// The tracking number.
    #[schema(value_type = String)]
    pub tracking_number: TrackingNumber,
    /// The merchant's order number.
    pub order_number: Option<String>,
    /// Whether the shipment was explicitly registered.
    pub registered: bool,
    /// The current canonical status.
    #[schema(value_type = String, example = "InTransit")]
    pub status: Status,
    /// The carrier's raw status code of the current event.
    pub raw_status: Option<String>,
    /// The current event's sub-status.
    pub sub_status: Option<String>,
    /// The newest event time in the history.
    pub last_event_at: Option<DateTime<Utc>>,
    /// How many times the current event changed.
    pub version: i64,
}

/// The answer of `GET /v1/shipments?order_number=…`: the order's shipments, possibly none.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ShipmentList {
    /// The shipments, by carrier and tracking number.
    pub shipments: Vec<ShipmentSummary>,
}
