//! One tracking event (a scan) in canonical form, with everything the carrier said beside it.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::event_id::EventId;
use crate::ids::{CarrierCode, TrackingNumber};
use crate::status::Status;

/// How an event's `occurred_at` was derived from what the source sent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum TimeProvenance {
    /// The source's timestamp carried an explicit UTC offset (`Z`, `+05:30`).
    ExplicitOffset,
    /// The source sent a naive local time, interpreted in a zone the carrier profile declares.
    AssumedZone {
        /// The IANA zone name or fixed offset that was assumed.
        zone: String,
    },
    /// The source sent a date without a time; midnight in the assumed zone was used.
    DateOnly {
        /// The IANA zone name or fixed offset that was assumed.
        zone: String,
    },
    /// The source sent unix seconds (or milliseconds).
    UnixTime,
    /// The source sent no usable time; the time Waybill received it was used.
    ReceivedAt,
}

/// How an event reached Waybill.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Origin {
    /// Pushed by the carrier to `POST /v1/webhooks/{source}`.
    Webhook,
    /// Fetched by polling the carrier's tracking API.
    Poll,
    /// Made by Waybill itself (e.g. `Expired` after a long silence).
    System,
}

impl Origin {
    /// The lowercase name used in storage and metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            Origin::Webhook => "webhook",
            Origin::Poll => "poll",
            Origin::System => "system",
        }
    }
}

/// The carrier's own words for a status: its code and, when sent, its description.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct RawStatus {
    /// The raw code exactly as received (`"6"`, `"OC"`, `"InTransit"`); part of the event id.
    pub code: String,
    /// The human text, if the carrier sent one beside the code.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

/// Everything that makes up an event except its id; [`TrackingEventDraft::finish`] computes the
/// id, so an event's id can never disagree with its content.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrackingEventDraft {
    /// The carrier (or platform) code of the shipment.
    pub carrier: CarrierCode,
    /// The shipment's tracking number.
    pub tracking_number: TrackingNumber,
    /// The canonical status.
    pub status: Status,
    /// The raw status as the carrier sent it.
    pub raw_status: RawStatus,
    /// A finer carrier or platform sub-status (`InTransit_001`, NDR reason).
    pub sub_status: Option<String>,
    /// When the scan happened, in UTC.
    pub occurred_at: DateTime<Utc>,
    /// How `occurred_at` was derived.
    pub time_provenance: TimeProvenance,
    /// Where the scan happened, as the carrier wrote it.
    pub location: Option<String>,
    /// The carrier's message for this scan.
    pub message: Option<String>,
    /// How the event reached Waybill.
    pub origin: Origin,
    /// The provider's id for the delivery that carried it (AfterShip `event_id`, EasyPost `evt_…`).
    pub provider_event_id: Option<String>,
    /// The merchant's order number, when the payload carries one.
    pub order_number: Option<String>,
    /// The underlying courier when the carrier is a platform (AfterShip `slug`, EasyPost `carrier`).
    pub courier: Option<String>,
}

impl TrackingEventDraft {
    /// A scan with only what every event has: `raw_code` as the raw status (no description),
    /// `occurred_at` read from an explicit offset, arrived by webhook, every optional detail
    /// empty. Set the others with struct update syntax:
    /// `TrackingEventDraft { location: Some(..), ..TrackingEventDraft::new(..) }`.
    pub fn new(
        carrier: CarrierCode,
        tracking_number: TrackingNumber,
        status: Status,
        raw_code: impl Into<String>,
        occurred_at: DateTime<Utc>,
    ) -> TrackingEventDraft {
        TrackingEventDraft {
            carrier,
            tracking_number,
            status,
            raw_status: RawStatus {
                code: raw_code.into(),
                description: None,
            },
            sub_status: None,
            occurred_at,
            time_provenance: TimeProvenance::ExplicitOffset,
            location: None,
            message: None,
            origin: Origin::Webhook,
            provider_event_id: None,
            order_number: None,
            courier: None,
        }
    }

    /// Computes the deterministic id and returns the finished event.
    pub fn finish(self) -> TrackingEvent {
        let id = EventId::compute(
            &self.carrier,
            &self.tracking_number,
            self.occurred_at,
            &self.raw_status.code,
            self.location.as_deref(),
        );
        TrackingEvent {
            id,
            carrier: self.carrier,
            tracking_number: self.tracking_number,
            status: self.status,
            raw_status: self.raw_status,
            sub_status: self.sub_status,
            occurred_at: self.occurred_at,
            time_provenance: self.time_provenance,
            location: self.location,
            message: self.message,
            origin: self.origin,
            provider_event_id: self.provider_event_id,
            order_number: self.order_number,
            courier: self.courier,
        }
    }
}

/// One scan of one shipment, in canonical form. Part of the queue envelope (version 1): fields
/// may be added with defaults, never renamed or removed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrackingEvent {
    /// The deterministic id (see [`EventId`]).
    pub id: EventId,
    /// The carrier (or platform) code of the shipment.
    pub carrier: CarrierCode,
    /// The shipment's tracking number.
    pub tracking_number: TrackingNumber,
    /// The canonical status.
    pub status: Status,
    /// The raw status as the carrier sent it.
    pub raw_status: RawStatus,
    /// A finer carrier or platform sub-status.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sub_status: Option<String>,
    /// When the scan happened, in UTC.
    #[serde(with = "crate::rfc3339")]
    pub occurred_at: DateTime<Utc>,
    /// How `occurred_at` was derived.
    pub time_provenance: TimeProvenance,
    /// Where the scan happened.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub location: Option<String>,
    /// The carrier's message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// How the event reached Waybill.
    pub origin: Origin,
    /// The provider's delivery id, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider_event_id: Option<String>,
    /// The merchant's order number, if the payload carried one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub order_number: Option<String>,
    /// The underlying courier when the carrier is a platform.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub courier: Option<String>,
}

impl TrackingEvent {
    /// The key the merge orders and compares events by.
    pub fn key(&self) -> crate::merge::EventKey {
        crate::merge::EventKey {
            occurred_at: self.occurred_at,
            status: self.status,
            id: self.id.clone(),
        }
    }
}
