//! The pure half of a batch: grouping its events and registrations by shipment, in key order,
//! with in-batch duplicates removed. No IO here, so the grouping rules are unit-tested directly.

use std::borrow::Cow;
use std::collections::BTreeMap;

use chrono::{DateTime, SubsecRound, Utc};
use waybill_core::{CarrierCode, Origin, SourceId, TenantId, TrackingEvent, TrackingNumber};

use crate::batch::{InboundBatch, InboundItem, Registration, ShipmentKey};

/// Namespace of the transaction-level advisory locks that serialise batches per shipment key:
/// the first argument of the two-`int4` form of `pg_advisory_xact_lock`, which lives in a
/// different lock space from the one-`bigint` form sqlx's migrator uses. ASCII `WBL1`.
pub(super) const LOCK_NAMESPACE: i32 = 0x5742_4C31;

/// The batch grouped by shipment. Borrows the batch's events where it can (`'a`).
#[derive(Debug, Default)]
pub(super) struct Plan<'a> {
    /// Every shipment the batch touches, in key order (the order rows are locked in).
    pub shipments: Vec<PlannedShipment<'a>>,
    /// Input events dropped because the same shipment already had an event with the same id
    /// earlier in the batch.
    pub duplicates_in_batch: u64,
}

/// One shipment's share of the batch.
#[derive(Debug)]
pub(super) struct PlannedShipment<'a> {
    pub key: ShipmentKey,
    /// The batch's registrations of this shipment, folded into one.
    pub registration: Option<PlannedRegistration>,
    /// Its events, unique by id, in arrival order.
    pub events: Vec<PlannedEvent<'a>>,
    /// Whether the shipment must exist after the batch: it is registered, or some event came
    /// from a source that does not require registration.
    pub creates: bool,
    /// The source recorded on a shipment this batch creates.
    pub source: Option<SourceId>,
    /// Whether a webhook-origin event (new or duplicate) mentioned the shipment.
    pub webhook_seen: bool,
}

/// Several registrations of one shipment in one batch, folded in order: later values win.
#[derive(Debug, Default)]
pub(super) struct PlannedRegistration {
    pub order_number: Option<String>,
    /// Always an object: the keys to merge over the stored metadata.
    pub metadata: serde_json::Map<String, serde_json::Value>,
    pub source: Option<SourceId>,
}

/// An event with the delivery facts the store keeps beside it: borrowed from the batch unless
/// it had to be changed ([`normalise`]) or came from the database (parked events).
#[derive(Debug, Clone)]
pub(super) struct PlannedEvent<'a> {
    pub event: Cow<'a, TrackingEvent>,
    pub source: Cow<'a, SourceId>,
    pub received_at: DateTime<Utc>,
    /// The `traceparent` of the message that brought it (none for parked events).
    pub traceparent: Option<&'a str>,
}

impl<'a> Plan<'a> {
    /// Groups a batch by shipment.
    pub fn new(batch: &'a InboundBatch) -> Plan<'a> {
        // Keyed by borrowed parts: the same order as `ShipmentKey`'s (derived, field by field,
        // over the strings), without cloning a key per event.
        let mut grouping = Grouping::default();
        let mut duplicates_in_batch = 0;
        let registrations: Vec<(usize, &Registration)> = batch
            .registrations
            .iter()
            .map(|r| {
                let index = grouping.index(&r.tenant, &r.carrier, &r.tracking_number);
                (index, r)
            })
            .collect();
        let events: Vec<(usize, &InboundItem, &TrackingEvent)> = batch
            .items
            .iter()
            .flat_map(|item| item.events.iter().map(move |event| (item, event)))
            .map(|(item, event)| {
                let index = grouping.index(&item.tenant, &event.carrier, &event.tracking_number);
                (index, item, event)
            })
            .collect();
        let Grouping {
            index_of,
            mut shipments,
        } = grouping;

        for (index, registration) in registrations {
            let shipment = &mut shipments[index];
            shipment.creates = true;
            let folded = shipment
                .registration
                .get_or_insert_with(PlannedRegistration::default);
            if registration.order_number.is_some() {
                folded.order_number.clone_from(&registration.order_number);
            }
            if registration.source.is_some() {
                folded.source.clone_from(&registration.source);
            }
            match &registration.metadata {
                serde_json::Value::Null => {}
                serde_json::Value::Object(map) => {
                    folded
                        .metadata
                        .extend(map.iter().map(|(k, v)| (k.clone(), v.clone())));
                }
                other => {
                    folded.metadata.insert("value".to_owned(), other.clone());
                }
            }
            if shipment.source.is_none() {
                shipment.source.clone_from(&registration.source);
            }
        }

        for (index, item, event) in events {
            let shipment = &mut shipments[index];
            shipment.webhook_seen |= event.origin == Origin::Webhook;
            if !item.require_registration {
                shipment.creates = true;
            }
            if shipment.source.is_none() {
                shipment.source = Some(item.source.clone());
            }
            // A shipment has few events in a batch: a scan beats hashing every id.
            if shipment.events.iter().any(|e| e.event.id == event.id) {
                duplicates_in_batch += 1;
                continue;
            }
            shipment.events.push(PlannedEvent {
                event: normalise(event),
                source: Cow::Borrowed(&item.source),
                received_at: item.received_at,
                traceparent: item.traceparent.as_deref(),
            });
        }

        let mut slots: Vec<Option<PlannedShipment<'a>>> = shipments.into_iter().map(Some).collect();
        Plan {
            shipments: index_of
                .into_values()
                .filter_map(|index| slots[index].take())
                .collect(),
            duplicates_in_batch,
        }
    }

    /// The advisory lock ids of every shipment key in the batch, sorted and unique: the order
    /// every batch takes them in, so two batches can never wait on each other in a cycle.
    pub fn lock_ids(&self) -> Vec<i32> {
        let mut ids: Vec<i32> = self.shipments.iter().map(|s| lock_id(&s.key)).collect();
        ids.sort_unstable();
        ids.dedup();
        ids
    }
}

/// The batch's shipments in order of first mention, and their positions by key.
#[derive(Default)]
struct Grouping<'a> {
    index_of: BTreeMap<(&'a str, &'a str, &'a str), usize>,
    shipments: Vec<PlannedShipment<'a>>,
}

impl<'a> Grouping<'a> {
    /// The position of a shipment, added (its key cloned once) when first mentioned.
    fn index(
        &mut self,
        tenant: &'a TenantId,
        carrier: &'a CarrierCode,
        tracking_number: &'a TrackingNumber,
    ) -> usize {
        let shipments = &mut self.shipments;
        *self
            .index_of
            .entry((tenant.as_str(), carrier.as_str(), tracking_number.as_str()))
            .or_insert_with(|| {
                shipments.push(PlannedShipment::new(ShipmentKey {
                    tenant: tenant.clone(),
                    carrier: carrier.clone(),
                    tracking_number: tracking_number.clone(),
                }));
                shipments.len() - 1
            })
    }
}

impl PlannedShipment<'_> {
    fn new<'a>(key: ShipmentKey) -> PlannedShipment<'a> {
        PlannedShipment {
            key,
            registration: None,
            events: Vec::new(),
            creates: false,
            source: None,
            webhook_seen: false,
        }
    }
}

/// Makes an event exactly representable in Postgres: `timestamptz` keeps microseconds, so
/// sub-microsecond digits are dropped before the merge compares times. Otherwise two events a
/// few nanoseconds apart would compare one way in memory and tie once stored. (The event id
/// only uses whole seconds, so it is unchanged.) Borrowed as is when already exact.
fn normalise(event: &TrackingEvent) -> Cow<'_, TrackingEvent> {
    let exact = event.occurred_at.trunc_subsecs(6);
    if exact == event.occurred_at {
        return Cow::Borrowed(event);
    }
    let mut event = event.clone();
    event.occurred_at = exact;
    Cow::Owned(event)
}

/// A stable 32-bit hash (FNV-1a) of a shipment key. Stable across processes, builds and Rust
/// versions — unlike `std`'s hasher — because workers of different versions lock the same keys
/// during a rolling deploy. Collisions only make two shipments share a lock.
pub(super) fn lock_id(key: &ShipmentKey) -> i32 {
    const OFFSET_BASIS: u32 = 0x811c_9dc5;
    const PRIME: u32 = 0x0100_0193;
    let mut hash = OFFSET_BASIS;
    let parts = [
        key.tenant.as_str(),
        key.carrier.as_str(),
        key.tracking_number.as_str(),
    ];
    for (index, part) in parts.iter().enumerate() {
        if index > 0 {
            hash ^= 0x1F;
            hash = hash.wrapping_mul(PRIME);
        }
        for byte in part.bytes() {
            hash ^= u32::from(byte);
            hash = hash.wrapping_mul(PRIME);
        }
    }
    i32::from_ne_bytes(hash.to_ne_bytes())
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;
    use waybill_core::{CarrierCode, Status, TenantId, TrackingEventDraft, TrackingNumber};

    use super::*;
    use crate::batch::{InboundItem, Registration};

    fn event(tracking_number: &str, seconds: i64, nanos: u32) -> TrackingEvent {
        TrackingEventDraft::new(
            CarrierCode::parse("ups").unwrap(),
            TrackingNumber::parse(tracking_number).unwrap(),
            Status::InTransit,
            "IT",
            Utc.timestamp_opt(seconds, nanos).unwrap(),
        )
        .finish()
    }

    fn item(require_registration: bool, events: Vec<TrackingEvent>) -> InboundItem {
        InboundItem {
            tenant: TenantId::default_tenant(),
            source: SourceId::parse("ups-hook").unwrap(),
            require_registration,
            events,
            received_at: Utc.timestamp_opt(1_000, 0).unwrap(),
            traceparent: None,
        }
    }

    /// A batch of `items` and no registrations.
    fn open_batch(items: Vec<InboundItem>) -> InboundBatch {
        InboundBatch {
            items,
            registrations: vec![],
        }
    }

    #[test]
    fn groups_by_key_in_order_and_drops_in_batch_duplicates() {
        let batch = open_batch(vec![
            item(false, vec![event("B2", 10, 0), event("A1", 10, 0)]),
            item(false, vec![event("B2", 10, 0), event("B2", 11, 0)]),
        ]);
        let plan = Plan::new(&batch);
        let keys: Vec<&str> = plan
            .shipments
            .iter()
            .map(|s| s.key.tracking_number.as_str())
            .collect();
        assert_eq!(keys, ["A1", "B2"]);
        assert_eq!(plan.shipments[1].events.len(), 2);
        assert_eq!(plan.duplicates_in_batch, 1);
        assert!(plan.shipments.iter().all(|s| s.creates && s.webhook_seen));
    }

    #[test]
    fn only_registrations_or_open_sources_create_shipments() {
        let batch = InboundBatch {
            items: vec![item(true, vec![event("A1", 10, 0), event("B2", 10, 0)])],
            registrations: vec![Registration {
                tenant: TenantId::default_tenant(),
                source: None,
                carrier: CarrierCode::parse("ups").unwrap(),
                tracking_number: TrackingNumber::parse("B2").unwrap(),
                order_number: Some("ORD-1".into()),
                metadata: serde_json::json!([1, 2]),
            }],
        };
        let plan = Plan::new(&batch);
        assert!(!plan.shipments[0].creates);
        assert!(plan.shipments[1].creates);
        let registration = plan.shipments[1].registration.as_ref().unwrap();
        assert_eq!(registration.metadata["value"], serde_json::json!([1, 2]));
    }

    #[test]
    fn times_are_truncated_to_microseconds() {
        let batch = open_batch(vec![item(false, vec![event("A1", 10, 123_456_789)])]);
        let plan = Plan::new(&batch);
        assert_eq!(
            plan.shipments[0].events[0]
                .event
                .occurred_at
                .timestamp_subsec_nanos(),
            123_456_000
        );
    }

    #[test]
    fn exact_events_are_borrowed_not_copied() {
        let batch = open_batch(vec![item(false, vec![event("A1", 10, 123_456_000)])]);
        let plan = Plan::new(&batch);
        assert!(matches!(
            plan.shipments[0].events[0].event,
            Cow::Borrowed(_)
        ));
    }

    #[test]
    fn lock_ids_are_stable() {
        let key = ShipmentKey {
            tenant: TenantId::default_tenant(),
            carrier: CarrierCode::parse("ups").unwrap(),
            tracking_number: TrackingNumber::parse("1Z999").unwrap(),
        };
        // Pinned: workers of different versions must agree on it.
        assert_eq!(lock_id(&key), lock_id(&key.clone()));
        assert_eq!(lock_id(&key), PINNED);
    }

    // FNV-1a of "default\x1fups\x1f1Z999", cross-checked with an independent Python implementation.
    const PINNED: i32 = 990_387_884;
}
