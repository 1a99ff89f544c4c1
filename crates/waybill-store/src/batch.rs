//! What [`apply_batch`](crate::apply_batch) takes and what it reports.

use chrono::{DateTime, Utc};
use serde::Serialize;
use waybill_core::{
    CarrierCode, ChangeKind, EventId, SourceId, Status, TenantId, TrackingEvent, TrackingNumber,
};

/// A shipment's natural key: unique per tenant. Ordered by `(tenant, carrier, tracking_number)`,
/// the order in which batches touch shipments.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct ShipmentKey {
    /// The owning tenant.
    pub tenant: TenantId,
    /// The carrier (or platform) code.
    pub carrier: CarrierCode,
    /// The tracking number.
    pub tracking_number: TrackingNumber,
}

/// The tenants, carriers and tracking numbers of `keys` as three parallel arrays, for statements
/// that `unnest` them.
pub(crate) fn key_columns<'a>(
    keys: impl IntoIterator<Item = &'a ShipmentKey>,
) -> (Vec<&'a str>, Vec<&'a str>, Vec<&'a str>) {
    let mut columns = (Vec::new(), Vec::new(), Vec::new());
    for key in keys {
        columns.0.push(key.tenant.as_str());
        columns.1.push(key.carrier.as_str());
        columns.2.push(key.tracking_number.as_str());
    }
    columns
}

/// Everything one consumed batch of queue messages asks the store to do, applied in one
/// transaction by [`apply_batch`](crate::apply_batch).
#[derive(Debug, Clone, Default)]
pub struct InboundBatch {
    /// Events from webhooks and polls, grouped by the delivery that carried them.
    pub items: Vec<InboundItem>,
    /// Explicit shipment registrations (`POST /v1/shipments`).
    pub registrations: Vec<Registration>,
}

/// The normalised events of one inbound delivery (one webhook request or one poll response).
#[derive(Debug, Clone)]
pub struct InboundItem {
    /// The tenant the source belongs to.
    pub tenant: TenantId,
    /// The source that received the delivery.
    pub source: SourceId,
    /// Whether the source only tracks registered shipments: events for a shipment that does not
    /// exist are parked in `unmatched_events` until it is registered, instead of creating it.
    pub require_registration: bool,
    /// The delivery's events (each carries its own carrier and tracking number).
    pub events: Vec<TrackingEvent>,
    /// When Waybill received the delivery.
    pub received_at: DateTime<Utc>,
    /// The W3C `traceparent` of the message that carried it, when it was traced: the outbox
    /// row of a change it causes carries it on, to the topic publish and the HTTP deliveries.
    pub traceparent: Option<String>,
}

/// An explicit registration of a shipment. Idempotent: registering twice changes nothing the
/// second time.
#[derive(Debug, Clone)]
pub struct Registration {
    /// The owning tenant.
    pub tenant: TenantId,
    /// The source its events are expected from, if the caller said. Recorded on the shipment
    /// if it has no source yet.
    pub source: Option<SourceId>,
    /// The carrier code.
    pub carrier: CarrierCode,
    /// The tracking number.
    pub tracking_number: TrackingNumber,
    /// The merchant's order number; `None` keeps the stored one.
    pub order_number: Option<String>,
    /// Metadata to merge over the stored metadata (top-level keys replace). `Null` (or an empty
    /// object) changes nothing; a value that is not an object is stored as `{"value": ...}`.
    pub metadata: serde_json::Value,
}

impl Registration {
    /// The shipment this registration is for.
    pub fn key(&self) -> ShipmentKey {
        ShipmentKey {
            tenant: self.tenant.clone(),
            carrier: self.carrier.clone(),
            tracking_number: self.tracking_number.clone(),
        }
    }
}

/// What a batch did. Every input event is counted exactly once: as `unmatched` (parked), or as
/// one of the [`ChangeKind`] counts. Events pulled out of `unmatched_events` because their
/// shipment came into existence in this batch are counted in `pulled_from_unmatched` *and* by the
/// kind of change they made.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct BatchReport {
    /// Events that became their shipment's current event.
    pub new_current: u64,
    /// New events stored in history without becoming current (not older than the current one).
    pub history_only: u64,
    /// New events older than their shipment's current event: history only, no regression.
    pub outdated: u64,
    /// Events already stored, or repeated within the batch.
    pub duplicates: u64,
    /// Events parked because their source requires registration and nobody registered the
    /// shipment.
    pub unmatched: u64,
    /// Parked events merged because their shipment was registered or created in this batch.
    pub pulled_from_unmatched: u64,
    /// Distinct shipments that received events or registrations.
    pub shipments_touched: u64,
    /// Shipments created by this batch (by registration or by a first event).
    pub shipments_created: u64,
    /// The shipments whose current event changed, one outbox row each.
    pub changed_shipments: Vec<ChangedShipment>,
    /// The bytes each outbox row's change is published as, by outbox row id, for the relay of
    /// this process once the transaction commits ([`EncodedBodies`](crate::EncodedBodies)).
    #[serde(skip)]
    pub encoded_bodies: Vec<(i64, Vec<u8>)>,
}

impl BatchReport {
    /// The count of one kind of change.
    pub fn count(&self, kind: ChangeKind) -> u64 {
        match kind {
            ChangeKind::NewCurrent => self.new_current,
            ChangeKind::HistoryOnly => self.history_only,
            ChangeKind::Outdated => self.outdated,
            ChangeKind::Duplicate => self.duplicates,
        }
    }

    pub(crate) fn record(&mut self, kind: ChangeKind) {
        match kind {
            ChangeKind::NewCurrent => self.new_current += 1,
            ChangeKind::HistoryOnly => self.history_only += 1,
            ChangeKind::Outdated => self.outdated += 1,
            ChangeKind::Duplicate => self.duplicates += 1,
        }
    }
}

/// One shipment whose current event changed in a batch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ChangedShipment {
    /// The shipment's row id.
    pub shipment_id: i64,
    /// Its natural key.
    pub key: ShipmentKey,
    /// The status before the batch; `None` if it had no event yet.
    pub previous_status: Option<Status>,
    /// The status after the batch.
    pub new_status: Status,
    /// The new current event.
    pub event_id: EventId,
    /// The shipment's version after the batch.
    pub version: i64,
    /// The id of the outbox row announcing the change.
    pub outbox_id: i64,
}
