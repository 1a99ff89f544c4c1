//! Shared builders for the store's integration tests.

use chrono::{DateTime, TimeZone, Utc};
use waybill_core::{
    CarrierCode, Origin, RawStatus, SourceId, Status, TenantId, TimeProvenance, TrackingEvent,
    TrackingEventDraft, TrackingNumber,
};
use waybill_store::testing::TestDatabase;
use waybill_store::{
    BatchReport, InboundBatch, InboundItem, PgConnection, PooledConnection, Registration,
    ShipmentView, Store, get_shipment,
};

/// A fresh migrated database.
pub async fn database() -> TestDatabase {
    TestDatabase::create(&TestDatabase::admin_url())
        .await
        .expect("create a test database (is Postgres running? see WAYBILL_TEST_DATABASE_URL)")
}

/// Runs `test` against the store of a fresh migrated database, then drops the database.
pub async fn with_store(test: impl AsyncFnOnce(&Store)) {
    let db = database().await;
    test(db.store()).await;
    db.drop_database().await.unwrap();
}

/// A fresh migrated database and a connection to it.
pub async fn connected() -> (TestDatabase, PooledConnection) {
    let db = database().await;
    let conn = db.store().acquire().await.unwrap();
    (db, conn)
}

/// Seconds after a fixed base instant.
pub fn at(seconds: i64) -> DateTime<Utc> {
    Utc.timestamp_opt(1_780_000_000 + seconds, 0).unwrap()
}

/// An event of carrier `ups` whose raw status is the canonical name (so equal ids imply equal
/// statuses), optionally with a location to make distinct events at the same second.
pub fn event(tracking_number: &str, seconds: i64, status: Status, location: &str) -> TrackingEvent {
    event_with(tracking_number, seconds, status, location, Origin::Webhook)
}

/// [`event`] with a chosen origin.
pub fn event_with(
    tracking_number: &str,
    seconds: i64,
    status: Status,
    location: &str,
    origin: Origin,
) -> TrackingEvent {
    TrackingEventDraft {
        raw_status: RawStatus {
            code: status.as_str().to_owned(),
            description: Some(format!("{status} at {location}")),
        },
        sub_status: Some(format!("{}_001", status.as_str())),
        time_provenance: TimeProvenance::AssumedZone {
            zone: "Australia/Sydney".into(),
        },
        location: (!location.is_empty()).then(|| location.to_owned()),
        message: Some("scanned".into()),
        origin,
        ..TrackingEventDraft::new(
            CarrierCode::parse("ups").unwrap(),
            TrackingNumber::parse(tracking_number).unwrap(),
            status,
            status.as_str(),
            at(seconds),
        )
    }
    .finish()
}

/// A batch of one delivery from an open source (no registration required).
pub fn open_batch(events: Vec<TrackingEvent>) -> InboundBatch {
    InboundBatch {
        items: vec![item(false, events)],
        registrations: vec![],
    }
}

/// A batch of one delivery from a source that tracks registered shipments only (events for a
/// shipment that does not exist are parked).
pub fn registered_only_batch(events: Vec<TrackingEvent>) -> InboundBatch {
    InboundBatch {
        items: vec![item(true, events)],
        registrations: vec![],
    }
}

/// One delivery of the default tenant.
pub fn item(require_registration: bool, events: Vec<TrackingEvent>) -> InboundItem {
    InboundItem {
        tenant: TenantId::default_tenant(),
        source: SourceId::parse(if require_registration {
            "registered-only"
        } else {
            "open"
        })
        .unwrap(),
        require_registration,
        events,
        received_at: at(100_000),
        traceparent: None,
    }
}

/// A registration of a `ups` shipment of the default tenant.
pub fn registration(tracking_number: &str, order_number: Option<&str>) -> Registration {
    Registration {
        tenant: TenantId::default_tenant(),
        source: None,
        carrier: CarrierCode::parse("ups").unwrap(),
        tracking_number: TrackingNumber::parse(tracking_number).unwrap(),
        order_number: order_number.map(str::to_owned),
        metadata: serde_json::json!({"channel": "web"}),
    }
}

pub fn tenant() -> TenantId {
    TenantId::default_tenant()
}

pub fn ups() -> CarrierCode {
    CarrierCode::parse("ups").unwrap()
}

pub fn number(raw: &str) -> TrackingNumber {
    TrackingNumber::parse(raw).unwrap()
}

/// The default tenant's `ups` shipment with this tracking number, as stored (`None`: absent).
pub async fn stored(conn: &mut PgConnection, tracking_number: &str) -> Option<ShipmentView> {
    get_shipment(conn, &tenant(), &ups(), &number(tracking_number))
        .await
        .unwrap()
}

/// Merges `events`, as one open delivery, into `store`.
pub async fn merge(store: &Store, events: Vec<TrackingEvent>) -> BatchReport {
    store.apply_batch(open_batch(events)).await.unwrap()
}

/// Merges `events`, as one delivery from a source that tracks registered shipments only, into
/// `store`.
pub async fn merge_registered_only(store: &Store, events: Vec<TrackingEvent>) -> BatchReport {
    store
        .apply_batch(registered_only_batch(events))
        .await
        .unwrap()
}
