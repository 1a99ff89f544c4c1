//! Shipment cohorts: `tracking_events` partitioned by the month a shipment was created in, and
//! the retention that forgets whole months by dropping partitions.

use chrono::{DateTime, Datelike, Months, Utc};
use waybill_core::Status;
use waybill_store::testing::TestDatabase;
use waybill_store::{PgConnection, cohorts, count_outbox, count_tracking_events, migrate};

use crate::common::*;

/// The first shipment id of `month`'s cohort, as migration 0010 documents it: months since
/// January 2000, shifted left by 32.
fn cohort_base(month: DateTime<Utc>) -> i64 {
    let months = (i64::from(month.year()) - 2000) * 12 + i64::from(month.month0());
    months << 32
}

fn partition_of(month: DateTime<Utc>) -> String {
    format!("tracking_events_{:04}_{:02}", month.year(), month.month())
}

/// The partition each stored event of `tracking_number` is in.
async fn partitions_holding(conn: &mut PgConnection, tracking_number: &str) -> Vec<String> {
    sqlx::query_scalar(
        "select distinct e.tableoid::regclass::text
         from tracking_events e join shipments s on s.id = e.shipment_id
         where s.tracking_number = $1",
    )
    .bind(tracking_number)
    .fetch_all(conn)
    .await
    .unwrap()
}

async fn shipment_id(conn: &mut PgConnection, tracking_number: &str) -> Option<i64> {
    sqlx::query_scalar("select id from shipments where tracking_number = $1")
        .bind(tracking_number)
        .fetch_optional(conn)
        .await
        .unwrap()
}

#[tokio::test]
async fn each_month_of_shipments_has_its_partition_and_the_retention_forgets_whole_months() {
    with_store(async |store| {
        let mut conn = store.acquire().await.unwrap();
        let now = Utc::now();
        let month = |ahead: u32| now.checked_add_months(Months::new(ahead)).unwrap();
        let listed: Vec<String> = cohorts::list(&mut conn)
            .await
            .unwrap()
            .into_iter()
            .map(|p| p.partition)
            .collect();
        assert_eq!(
            listed,
            [
                "tracking_events_initial".to_owned(),
                partition_of(month(0)),
                partition_of(month(1)),
                "tracking_events_default".to_owned()
            ],
            "the migration leaves the initial partition, this month's, the next and the default"
        );

        // One shipment per month: this month's, then two months the upkeep moves into.
        merge(
            store,
            vec![
                event("1ZA", 10, Status::InTransit, "Sydney"),
                event("1ZA", 20, Status::OutForDelivery, "Sydney"),
            ],
        )
        .await;
        assert_eq!(
            cohorts::ensure(&mut conn, month(1)).await.unwrap(),
            [partition_of(month(2))],
            "a month's upkeep creates the month after it, once"
        );
        assert!(
            cohorts::ensure(&mut conn, month(1))
                .await
                .unwrap()
                .is_empty()
        );
        merge(store, vec![event("1ZB", 10, Status::InTransit, "Perth")]).await;
        cohorts::ensure(&mut conn, month(2)).await.unwrap();
        merge(store, vec![event("1ZC", 10, Status::InTransit, "Hobart")]).await;

        assert_eq!(
            partitions_holding(&mut conn, "1ZA").await,
            [partition_of(month(0))]
        );
        assert_eq!(
            partitions_holding(&mut conn, "1ZB").await,
            [partition_of(month(1))]
        );
        assert_eq!(
            partitions_holding(&mut conn, "1ZC").await,
            [partition_of(month(2))]
        );
        let b = shipment_id(&mut conn, "1ZB").await.unwrap();
        let c = shipment_id(&mut conn, "1ZC").await.unwrap();
        let a = shipment_id(&mut conn, "1ZA").await.unwrap();
        assert!((cohort_base(month(0))..cohort_base(month(1))).contains(&a));
        assert_eq!(
            (b, c),
            (cohort_base(month(1)), cohort_base(month(2))),
            "ids are their month's"
        );
        assert_eq!(count_outbox(&mut conn).await.unwrap(), 3);
        let listed = cohorts::list(&mut conn).await.unwrap();
        let next = listed
            .iter()
            .find(|p| p.partition == partition_of(month(1)))
            .unwrap();
        assert_eq!(next.shipments, Some(1), "{listed:?}");
        assert_eq!(next.first_id, Some(cohort_base(month(1))));
        let first_day = |m: DateTime<Utc>| m.date_naive().with_day(1).unwrap();
        assert_eq!(next.month(), Some(first_day(month(1))));
        assert_eq!(
            next.forgotten_from(chrono::Duration::days(40))
                .unwrap()
                .date_naive(),
            first_day(month(2)) + chrono::Duration::days(40),
            "forty days after the month ended"
        );
        assert!(
            listed
                .iter()
                .all(|p| p.partition != "tracking_events_default" || p.shipments.is_none())
        );

        // A retention horizon inside next month: this month's cohort (and the initial one)
        // ended before it; next month's did not.
        let before = month(1);
        let mut dropped = cohorts::forget(&mut conn, before).await.unwrap();
        dropped.sort();
        assert_eq!(
            dropped,
            [partition_of(month(0)), "tracking_events_initial".to_owned()]
        );
        assert_eq!(
            count_tracking_events(&mut conn).await.unwrap(),
            2,
            "1ZB's and 1ZC's"
        );
        assert_eq!(
            cohorts::delete_forgotten_shipments(&mut conn, before, 1)
                .await
                .unwrap(),
            1
        );
        assert_eq!(
            cohorts::delete_forgotten_shipments(&mut conn, before, 1)
                .await
                .unwrap(),
            0
        );
        assert!(stored(&mut conn, "1ZA").await.is_none());
        assert_eq!(
            count_outbox(&mut conn).await.unwrap(),
            2,
            "1ZA's change went with it"
        );
        assert!(cohorts::forget(&mut conn, before).await.unwrap().is_empty());

        // The younger cohorts are whole.
        let kept = stored(&mut conn, "1ZB").await.unwrap();
        assert_eq!((kept.status, kept.history.len()), (Status::InTransit, 1));

        // A late event for a forgotten shipment starts it again, in the current cohort.
        let report = merge(store, vec![event("1ZA", 30, Status::Delivered, "Sydney")]).await;
        assert_eq!((report.shipments_created, report.new_current), (1, 1));
        let again = stored(&mut conn, "1ZA").await.unwrap();
        assert_eq!(
            (again.status, again.version, again.history.len()),
            (Status::Delivered, 1, 1)
        );
        assert_eq!(
            partitions_holding(&mut conn, "1ZA").await,
            [partition_of(month(2))]
        );
    })
    .await;
}

#[tokio::test]
async fn the_migration_keeps_existing_events_in_the_initial_partition_and_merges_go_on() {
    let db = TestDatabase::create_empty(&TestDatabase::admin_url(), 2)
        .await
        .unwrap();
    let store = db.store();
    let mut conn = store.acquire().await.unwrap();
    migrate::migrate_to(&mut conn, 9).await.unwrap();
    // History written by the release before partitioning.
    merge(
        store,
        vec![
            event("1ZOLD", 10, Status::InTransit, "Sydney"),
            event("1ZOLD", 20, Status::OutForDelivery, "Sydney"),
        ],
    )
    .await;

    store.migrate().await.unwrap();

    assert_eq!(
        partitions_holding(&mut conn, "1ZOLD").await,
        ["tracking_events_initial"]
    );
    // A retention whose horizon is before the upgrade's month keeps the initial partition, and
    // so its shipments, however small their ids.
    let last_month = Utc::now().checked_sub_months(Months::new(1)).unwrap();
    assert!(
        cohorts::forget(&mut conn, last_month)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        cohorts::delete_forgotten_shipments(&mut conn, last_month, 100)
            .await
            .unwrap(),
        0
    );
    let old = stored(&mut conn, "1ZOLD").await.unwrap();
    assert_eq!((old.status, old.history.len()), (Status::OutForDelivery, 2));
    // An out-of-order event reloads the whole history, from the initial partition; a replay
    // changes nothing.
    let report = merge(
        store,
        vec![event("1ZOLD", 15, Status::InTransit, "Sydney-east")],
    )
    .await;
    assert_eq!((report.outdated, report.new_current), (1, 0));
    let replay = merge(
        store,
        vec![event("1ZOLD", 20, Status::OutForDelivery, "Sydney")],
    )
    .await;
    assert_eq!(replay.duplicates, 1);
    assert_eq!(stored(&mut conn, "1ZOLD").await.unwrap().history.len(), 3);
    // New shipments start this month's cohort.
    merge(store, vec![event("1ZNEW", 10, Status::InTransit, "Perth")]).await;
    assert_eq!(
        partitions_holding(&mut conn, "1ZNEW").await,
        [partition_of(Utc::now())]
    );
    drop(conn);
    db.drop_database().await.unwrap();
}
