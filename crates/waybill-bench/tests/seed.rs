//! `waybill-bench seed` on a fresh database: the counts are exact, every seeded shipment is what
//! merging its events would have produced, and the merge and the read query treat the seeded
//! history as real.

use std::collections::BTreeMap;

use chrono::{DateTime, Duration, Utc};
use sqlx::Row;
use waybill_bench::seed;
use waybill_core::merge::{self, ShipmentState};
use waybill_core::{
    CarrierCode, EventId, EventKey, SourceId, Status, TenantId, TrackingEventDraft, TrackingNumber,
};
use waybill_store::seed::SeedPlan;
use waybill_store::testing::TestDatabase;
use waybill_store::{InboundBatch, InboundItem};

const EVENTS: u64 = 2_000;
const SHIPMENTS: u64 = 200;

/// One stored event, as read back.
struct StoredEvent {
    event_id: String,
    status: String,
    raw_status: String,
    occurred_at: DateTime<Utc>,
    location: Option<String>,
}

/// One stored shipment's merge columns.
struct StoredShipment {
    tracking_number: String,
    status: String,
    current_event_id: Option<String>,
    current_event_at: Option<DateTime<Utc>>,
    last_event_at: Option<DateTime<Utc>>,
    version: i64,
}

fn plan() -> SeedPlan {
    SeedPlan::new(
        TenantId::default_tenant(),
        CarrierCode::parse(seed::SEED_CARRIER).unwrap(),
        Some("starshipit".to_owned()),
        "SEEDTEST",
        (EVENTS, SHIPMENTS),
        Utc::now(),
    )
    .unwrap()
}

#[tokio::test]
async fn a_seeded_table_is_what_merging_its_events_would_have_produced() {
    let db = TestDatabase::create(&TestDatabase::admin_url())
        .await
        .unwrap();
    let plan = plan();
    let mut conn = waybill_store::seed::connect(db.url()).await.unwrap();

    // 64 shipments a statement: four statements, the last one short.
    let report = seed::seed(&mut conn, &plan, 64).await.unwrap();
    assert_eq!(report.written.shipments, SHIPMENTS);
    assert_eq!(report.written.events, EVENTS);
    assert_eq!(report.tables.shipments, SHIPMENTS);
    assert_eq!(report.tables.events, EVENTS);
    assert!(report.tables.events_bytes > 0 && report.tables.shipments_bytes > 0);

    let shipments = stored_shipments(&mut conn).await;
    let mut events = stored_events(&mut conn).await;
    assert_eq!(shipments.len() as u64, SHIPMENTS);
    let carrier = plan.carrier().clone();
    for (index, shipment) in shipments.iter().enumerate() {
        assert_eq!(shipment.tracking_number, plan.tracking_number(index as u64));
        let history = events.remove(&shipment.tracking_number).unwrap();
        assert_eq!(history.len() as u64, plan.events_of(index as u64));
        let tracking_number = TrackingNumber::parse(&shipment.tracking_number).unwrap();

        // Every id is the merge's own, and merging the events one by one in time order leaves
        // exactly the stored shipment row.
        let mut state = ShipmentState::default();
        for event in &history {
            let id = EventId::compute(
                &carrier,
                &tracking_number,
                event.occurred_at,
                &event.raw_status,
                event.location.as_deref(),
            );
            assert_eq!(id.as_str(), event.event_id, "{}", shipment.tracking_number);
            let key = EventKey {
                occurred_at: event.occurred_at,
                status: event.status.parse().unwrap(),
                id,
            };
            state = merge::apply(&state, &[key]).state;
        }
        let current = state.current.unwrap();
        assert_eq!(
            shipment.current_event_id.as_deref(),
            Some(current.id.as_str())
        );
        assert_eq!(shipment.current_event_at, Some(current.occurred_at));
        assert_eq!(shipment.status, current.status.as_str());
        assert_eq!(shipment.version, state.version);
        assert_eq!(
            shipment.last_event_at,
            history.iter().map(|event| event.occurred_at).max()
        );
        let first = &history[0];
        assert_eq!(first.status, "InfoReceived");
        let expected_last = match index % 10 {
            0..=7 => "Delivered",
            8 => "OutForDelivery",
            _ => "InTransit",
        };
        assert_eq!(
            shipment.status, expected_last,
            "{}",
            shipment.tracking_number
        );
    }

    // Seeding the same plan again writes nothing.
    let again = seed::seed(&mut conn, &plan, 1_000).await.unwrap();
    assert_eq!(again.written.shipments, 0);
    assert_eq!(again.written.events, 0);
    assert_eq!(again.tables.events, EVENTS);

    // A shipment missing from the middle of a range (whose neighbours are all there) is written
    // again with its events, and only it.
    let missing = plan.tracking_number(70);
    sqlx::query(
        "delete from tracking_events where shipment_id =
             (select id from shipments where tracking_number = $1)",
    )
    .bind(&missing)
    .execute(&mut conn)
    .await
    .unwrap();
    sqlx::query("delete from shipments where tracking_number = $1")
        .bind(&missing)
        .execute(&mut conn)
        .await
        .unwrap();
    let mended = seed::seed(&mut conn, &plan, 64).await.unwrap();
    assert_eq!(mended.written.shipments, 1);
    assert_eq!(mended.written.events, plan.events_of(70));
    assert_eq!(mended.tables.shipments, SHIPMENTS);
    assert_eq!(mended.tables.events, EVENTS);

    the_merge_and_the_read_query_take_the_history_as_real(&db, &plan).await;
    db.drop_database().await.unwrap();
}

/// A webhook replaying a seeded scan is a duplicate; a later scan of a shipment in transit
/// becomes current at the next version; the read query returns the whole history.
async fn the_merge_and_the_read_query_take_the_history_as_real(db: &TestDatabase, plan: &SeedPlan) {
    // Shipment 9 is in transit; its second scan was `Dispatched` at a depot.
    let tracking_number = TrackingNumber::parse(&plan.tracking_number(9)).unwrap();
    let store = db.store();
    let view = store
        .get_shipment(plan.tenant(), plan.carrier(), &tracking_number)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(view.history.len() as u64, plan.events_of(9));
    assert_eq!(view.version, plan.events_of(9) as i64);
    let second = view
        .history
        .iter()
        .find(|entry| entry.raw_status.code == "Dispatched")
        .unwrap();
    let replay = scan(
        plan,
        &tracking_number,
        (Status::InTransit, "Dispatched"),
        second.occurred_at,
        second.location.as_deref().map(str::to_uppercase),
    );
    let later = scan(
        plan,
        &tracking_number,
        (Status::OutForDelivery, "OutForDelivery"),
        view.last_event_at.unwrap() + Duration::hours(1),
        Some("Sydney NSW".to_owned()),
    );
    let report = store
        .apply_batch(InboundBatch {
            items: vec![InboundItem {
                tenant: plan.tenant().clone(),
                source: SourceId::parse("starshipit").unwrap(),
                require_registration: false,
                events: vec![replay, later],
                received_at: Utc::now(),
                traceparent: None,
            }],
            registrations: Vec::new(),
        })
        .await
        .unwrap();
    assert_eq!(report.duplicates, 1, "the replayed scan is known");
    assert_eq!(report.new_current, 1);
    assert_eq!(report.shipments_created, 0);
    let changed = &report.changed_shipments[0];
    assert_eq!(changed.previous_status, Some(Status::InTransit));
    assert_eq!(changed.version, view.version + 1);
    let after = store
        .get_shipment(plan.tenant(), plan.carrier(), &tracking_number)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(after.status, Status::OutForDelivery);
    assert_eq!(after.history.len(), view.history.len() + 1);
}

fn scan(
    plan: &SeedPlan,
    tracking_number: &TrackingNumber,
    (status, raw_status): (Status, &str),
    occurred_at: DateTime<Utc>,
    location: Option<String>,
) -> waybill_core::TrackingEvent {
    TrackingEventDraft {
        location,
        ..TrackingEventDraft::new(
            plan.carrier().clone(),
            tracking_number.clone(),
            status,
            raw_status,
            occurred_at,
        )
    }
    .finish()
}

async fn stored_shipments(conn: &mut sqlx::PgConnection) -> Vec<StoredShipment> {
    sqlx::query(
        "select tracking_number, status, current_event_id, current_event_at, last_event_at,
                version
         from shipments order by tracking_number",
    )
    .fetch_all(conn)
    .await
    .unwrap()
    .iter()
    .map(|row| StoredShipment {
        tracking_number: row.get("tracking_number"),
        status: row.get("status"),
        current_event_id: row.get("current_event_id"),
        current_event_at: row.get("current_event_at"),
        last_event_at: row.get("last_event_at"),
        version: row.get("version"),
    })
    .collect()
}

/// Every stored event by tracking number, oldest first.
async fn stored_events(conn: &mut sqlx::PgConnection) -> BTreeMap<String, Vec<StoredEvent>> {
    let rows = sqlx::query(
        "select s.tracking_number, e.event_id, e.status, e.raw_status, e.occurred_at, e.location
         from tracking_events e join shipments s on s.id = e.shipment_id
         order by s.tracking_number, e.occurred_at",
    )
    .fetch_all(conn)
    .await
    .unwrap();
    let mut events: BTreeMap<String, Vec<StoredEvent>> = BTreeMap::new();
    for row in &rows {
        events
            .entry(row.get("tracking_number"))
            .or_default()
            .push(StoredEvent {
                event_id: row.get("event_id"),
                status: row.get("status"),
                raw_status: row.get("raw_status"),
                occurred_at: row.get("occurred_at"),
                location: row.get("location"),
            });
    }
    events
}
