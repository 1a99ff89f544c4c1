//! The worker's upkeep of the shipment cohorts, on its own database: it creates the coming
//! months' event partitions and moves the ids along, and with a retention it forgets whole
//! months of shipments, events and rows, and nothing younger.
//!
//! Needs Postgres (`WAYBILL_TEST_DATABASE_URL`). The months are in 2100, so the test's clock is
//! its own and not the machine's.

use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use tokio_util::sync::CancellationToken;
use waybill_core::{CarrierCode, TenantId};
use waybill_store::seed::{self, SeedPlan};
use waybill_store::testing::TestDatabase;
use waybill_worker::cohorts::upkeep;

fn day(month: u32, day: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2100, month, day, 12, 0, 0).unwrap()
}

/// Seeds `shipments` shipments with `events` events in all, tracking numbers from `prefix`.
async fn seed(url: &str, prefix: &str, (events, shipments): (u64, u64)) {
    let plan = SeedPlan::new(
        TenantId::default_tenant(),
        CarrierCode::parse("ups").unwrap(),
        None,
        prefix,
        (events, shipments),
        Utc::now(),
    )
    .unwrap();
    let mut conn = seed::connect(url).await.unwrap();
    seed::seed_range(&mut conn, &plan, 0..shipments)
        .await
        .unwrap();
}

#[tokio::test]
async fn the_upkeep_keeps_months_ahead_and_the_retention_forgets_only_whole_old_months() {
    let db = TestDatabase::create(&TestDatabase::admin_url())
        .await
        .unwrap();
    let store = db.store();
    let shutdown = CancellationToken::new();
    let retention = Some(Duration::from_secs(31 * 86_400));

    let january = upkeep(store, day(1, 15), None, &shutdown).await.unwrap();
    assert_eq!(
        january.created,
        ["tracking_events_2100_01", "tracking_events_2100_02"]
    );
    seed(db.url(), "JAN", (40, 10)).await;
    let february = upkeep(store, day(2, 15), None, &shutdown).await.unwrap();
    assert_eq!(february.created, ["tracking_events_2100_03"]);
    seed(db.url(), "FEB", (30, 10)).await;

    // On 20 March with 31 days of retention the horizon is 17 February: January (and every
    // month before it) is wholly older; February is not. Two workers run it at once.
    let (one, other) = tokio::join!(
        upkeep(store, day(3, 20), retention, &shutdown),
        upkeep(store, day(3, 20), retention, &shutdown)
    );
    let (one, other) = (one.unwrap(), other.unwrap());
    let mut dropped = [one.dropped.clone(), other.dropped.clone()].concat();
    dropped.sort();
    let unique = dropped.len();
    dropped.dedup();
    assert_eq!(
        unique,
        dropped.len(),
        "each partition dropped once: {one:?} {other:?}"
    );
    assert!(
        dropped.contains(&"tracking_events_2100_01".to_owned()),
        "{dropped:?}"
    );
    assert!(
        dropped.contains(&"tracking_events_initial".to_owned()),
        "{dropped:?}"
    );
    assert!(
        !dropped
            .iter()
            .any(|p| p.ends_with("2100_02") || p.ends_with("2100_03"))
    );
    assert_eq!(
        one.deleted_shipments + other.deleted_shipments,
        10,
        "January's shipments, once"
    );
    let mut conn = seed::connect(db.url()).await.unwrap();
    let left = seed::table_sizes(&mut conn).await.unwrap();
    assert_eq!((left.shipments, left.events), (10, 30), "February's, whole");

    let again = upkeep(store, day(3, 20), retention, &shutdown)
        .await
        .unwrap();
    assert!(
        again.dropped.is_empty() && again.deleted_shipments == 0,
        "{again:?}"
    );
    drop(conn);
    db.drop_database().await.unwrap();
}
