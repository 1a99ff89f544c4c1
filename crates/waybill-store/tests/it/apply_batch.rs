//! `apply_batch` against a real Postgres, one fresh database per test.

use std::time::Duration;

use crate::common::*;
use sqlx::Row;
use waybill_core::{Origin, Status, TimeProvenance};
use waybill_store::{
    DownstreamEvent, InboundBatch, StatusChangedV1, Store, count_outbox, count_shipments,
    count_tracking_events, count_unmatched_events, find_by_order_number,
};

async fn outbox_bodies(store: &Store) -> Vec<serde_json::Value> {
    sqlx::query_scalar("select payload from outbox order by id")
        .fetch_all(store.pool())
        .await
        .unwrap()
}

fn status_changed(body: &serde_json::Value) -> StatusChangedV1 {
    match serde_json::from_value::<DownstreamEvent>(body.clone()).unwrap() {
        DownstreamEvent::StatusChanged(change) => change,
    }
}

#[tokio::test]
async fn events_create_a_shipment_with_history_and_one_outbox_row_and_replays_change_nothing() {
    with_store(async |store| {
        let batch = open_batch(vec![
            event("1Z1", 10, Status::InTransit, "Sydney"),
            event("1Z1", 20, Status::OutForDelivery, "Sydney"),
        ]);

        let first = store.apply_batch(batch.clone()).await.unwrap();
        assert_eq!(
            (first.new_current, first.history_only, first.duplicates),
            (1, 1, 0)
        );
        assert_eq!((first.shipments_created, first.shipments_touched), (1, 1));
        assert_eq!(first.changed_shipments.len(), 1);
        let change = &first.changed_shipments[0];
        assert_eq!(
            (change.previous_status, change.new_status, change.version),
            (None, Status::OutForDelivery, 1)
        );

        let mut conn = store.acquire().await.unwrap();
        let shipment = stored(&mut conn, "1Z1").await.unwrap();
        assert_eq!(shipment.status, Status::OutForDelivery);
        assert_eq!(shipment.version, 1);
        assert!(!shipment.registered);
        assert_eq!(shipment.raw_status.as_ref().unwrap().code, "OutForDelivery");
        assert_eq!(shipment.sub_status.as_deref(), Some("OutForDelivery_001"));
        assert_eq!(shipment.last_event_at, Some(at(20)));
        let statuses: Vec<Status> = shipment.history.iter().map(|e| e.status).collect();
        assert_eq!(
            statuses,
            [Status::OutForDelivery, Status::InTransit],
            "newest first"
        );
        let newest = &shipment.history[0];
        assert_eq!(newest.origin, Origin::Webhook);
        assert_eq!(newest.location.as_deref(), Some("Sydney"));
        assert_eq!(
            newest.time_provenance,
            TimeProvenance::AssumedZone {
                zone: "Australia/Sydney".into()
            }
        );
        assert_eq!(shipment.current_event_id.as_ref(), Some(&newest.event_id));

        let bodies = outbox_bodies(store).await;
        assert_eq!(bodies.len(), 1);
        assert_eq!(bodies[0]["type"], "shipment.status_changed");
        assert_eq!(bodies[0]["version"], 1);
        let body = status_changed(&bodies[0]);
        assert_eq!(body.previous_status, None);
        assert_eq!(body.new_status, Status::OutForDelivery);
        assert_eq!(body.shipment_version, 1);
        assert_eq!(body.event_id, newest.event_id);
        assert_eq!(body.recent_history.len(), 2);
        assert_eq!(body.recent_history[0].status, Status::OutForDelivery);

        let again = store.apply_batch(batch).await.unwrap();
        assert_eq!(
            (
                again.new_current,
                again.history_only,
                again.outdated,
                again.duplicates
            ),
            (0, 0, 0, 2)
        );
        assert!(again.changed_shipments.is_empty());
        assert_eq!(count_outbox(&mut conn).await.unwrap(), 1);
        assert_eq!(count_tracking_events(&mut conn).await.unwrap(), 2);
        let after = stored(&mut conn, "1Z1").await.unwrap();
        assert_eq!(after.version, 1);
    })
    .await;
}

#[tokio::test]
async fn an_older_event_after_delivered_lands_in_history_without_a_notification() {
    with_store(async |store| {
        merge(store, vec![event("1Z2", 20, Status::Delivered, "")]).await;
        let late = merge(store, vec![event("1Z2", 10, Status::InTransit, "")]).await;
        assert_eq!((late.outdated, late.new_current), (1, 0));
        assert!(late.changed_shipments.is_empty());

        let mut conn = store.acquire().await.unwrap();
        let shipment = stored(&mut conn, "1Z2").await.unwrap();
        assert_eq!(shipment.status, Status::Delivered);
        assert_eq!(shipment.version, 1);
        assert_eq!(shipment.history.len(), 2);
        assert_eq!(shipment.last_event_at, Some(at(20)));
        assert_eq!(count_outbox(&mut conn).await.unwrap(), 1);
    })
    .await;
}

#[tokio::test]
async fn a_late_event_can_make_a_stored_later_event_current() {
    // (an event, a later one stored beside it, a late event merged after both)
    let cases = [
        // Delivered@10 then a stray InTransit@30 (history only). An Exception@20 arrives late:
        // Delivered → Exception is allowed, and after Exception the stored InTransit@30 applies.
        // The new current event is an old one, so its details come from the database.
        (
            event("1Z3", 10, Status::Delivered, ""),
            event("1Z3", 30, Status::InTransit, "Depot"),
            event("1Z3", 20, Status::Exception, ""),
        ),
        // Delivered@0 is current; Cancelled@5 is stored but blocked (Delivered only yields to
        // Exception/Returned). Exception@5 ties the newest stored time but ranks below
        // Cancelled, so in merge order it comes first: Delivered → Exception → Cancelled.
        // Folding only from the stored current event would wrongly stop at Exception.
        (
            event("TIE1", 0, Status::Delivered, ""),
            event("TIE1", 5, Status::Cancelled, ""),
            event("TIE1", 5, Status::Exception, ""),
        ),
    ];
    for (first, current, late) in cases {
        with_store(async |store| {
            merge(store, vec![first, current.clone()]).await;
            let report = merge(store, vec![late]).await;
            assert_eq!(
                (report.history_only, report.outdated, report.new_current),
                (1, 0, 0)
            );
            assert_eq!(report.changed_shipments.len(), 1);
            let change = &report.changed_shipments[0];
            assert_eq!(
                (change.previous_status, change.new_status),
                (Some(Status::Delivered), current.status)
            );

            let mut conn = store.acquire().await.unwrap();
            let shipment = stored(&mut conn, current.tracking_number.as_str())
                .await
                .unwrap();
            assert_eq!(shipment.status, current.status);
            assert_eq!(shipment.current_event_id.as_ref(), Some(&current.id));
            assert_eq!(shipment.raw_status.unwrap().code, current.raw_status.code);
            assert_eq!(shipment.version, 2);
            let body = status_changed(&outbox_bodies(store).await[1]);
            assert_eq!(
                (body.event_id, body.scan.location),
                (current.id, current.location)
            );
            assert_eq!(body.shipment_version, 2);
        })
        .await;
    }
}

#[tokio::test]
async fn events_for_unregistered_shipments_wait_for_their_registration() {
    with_store(async |store| {
        let parked =
            registered_only_batch(vec![event("PARK1", 10, Status::OutForDelivery, "Perth")]);
        let report = store.apply_batch(parked.clone()).await.unwrap();
        assert_eq!(
            (
                report.unmatched,
                report.new_current,
                report.shipments_touched
            ),
            (1, 0, 0)
        );
        let again = store.apply_batch(parked).await.unwrap();
        assert_eq!(again.unmatched, 1);
        let mut conn = store.acquire().await.unwrap();
        assert_eq!(count_shipments(&mut conn).await.unwrap(), 0);
        assert_eq!(count_unmatched_events(&mut conn).await.unwrap(), 1);
        assert_eq!(count_outbox(&mut conn).await.unwrap(), 0);

        let registered = store
            .apply_batch(InboundBatch {
                items: vec![],
                registrations: vec![registration("PARK1", Some("ORD-1"))],
            })
            .await
            .unwrap();
        assert_eq!(
            (registered.pulled_from_unmatched, registered.new_current),
            (1, 1)
        );
        assert_eq!(registered.shipments_created, 1);
        assert_eq!(count_unmatched_events(&mut conn).await.unwrap(), 0);
        let shipment = stored(&mut conn, "PARK1").await.unwrap();
        assert_eq!(shipment.status, Status::OutForDelivery);
        assert!(shipment.registered);
        assert_eq!(shipment.order_number.as_deref(), Some("ORD-1"));
        assert_eq!(shipment.metadata, serde_json::json!({"channel": "web"}));
        let body = status_changed(&outbox_bodies(store).await[0]);
        assert_eq!(body.shipment.order_number.as_deref(), Some("ORD-1"));

        // Once registered, the shipment's events apply directly.
        let later =
            merge_registered_only(store, vec![event("PARK1", 20, Status::Delivered, "Perth")])
                .await;
        assert_eq!((later.unmatched, later.new_current), (0, 1));
        assert_eq!(count_outbox(&mut conn).await.unwrap(), 2);
    })
    .await;
}

#[tokio::test]
async fn registration_is_idempotent_and_merges_metadata() {
    with_store(async |store| {
        let register = |order: Option<&str>, metadata: serde_json::Value| InboundBatch {
            items: vec![],
            registrations: vec![waybill_store::Registration {
                metadata,
                ..registration("REG1", order)
            }],
        };
        let first = store
            .apply_batch(register(Some("ORD-9"), serde_json::json!({"a": 1})))
            .await
            .unwrap();
        assert_eq!(first.shipments_created, 1);
        let updated_at = async || {
            sqlx::query("select updated_at, version, status, metadata, order_number from shipments")
                .fetch_one(store.pool())
                .await
                .unwrap()
        };
        let before = updated_at().await;
        let second = store
            .apply_batch(register(Some("ORD-9"), serde_json::json!({"a": 1})))
            .await
            .unwrap();
        assert_eq!(second.shipments_created, 0);
        let after = updated_at().await;
        assert_eq!(
            before.get::<chrono::DateTime<chrono::Utc>, _>("updated_at"),
            after.get::<chrono::DateTime<chrono::Utc>, _>("updated_at"),
            "a repeated registration writes nothing"
        );
        assert_eq!(after.get::<i64, _>("version"), 0);
        assert_eq!(after.get::<String, _>("status"), "Pending");

        store
            .apply_batch(register(None, serde_json::json!({"b": 2})))
            .await
            .unwrap();
        let merged = updated_at().await;
        assert_eq!(
            merged.get::<serde_json::Value, _>("metadata"),
            serde_json::json!({"a": 1, "b": 2})
        );
        assert_eq!(
            merged.get::<Option<String>, _>("order_number").as_deref(),
            Some("ORD-9")
        );
    })
    .await;
}

#[tokio::test]
async fn order_numbers_from_events_fill_an_empty_one_and_are_searchable() {
    with_store(async |store| {
        let mut first = event("ORD1", 10, Status::InTransit, "");
        first.order_number = Some("A-100".into());
        let mut second = event("ORD2", 10, Status::InTransit, "");
        second.order_number = Some("A-100".into());
        merge(store, vec![first, second]).await;
        let mut conn = store.acquire().await.unwrap();
        let found = find_by_order_number(&mut conn, &tenant(), "A-100")
            .await
            .unwrap();
        let numbers: Vec<&str> = found.iter().map(|s| s.tracking_number.as_str()).collect();
        assert_eq!(numbers, ["ORD1", "ORD2"]);
        assert_eq!(found[0].status, Status::InTransit);
        assert!(
            find_by_order_number(&mut conn, &tenant(), "nope")
                .await
                .unwrap()
                .is_empty()
        );
    })
    .await;
}

#[tokio::test]
async fn webhook_events_record_last_webhook_at_and_polls_do_not() {
    with_store(async |store| {
        merge(
            store,
            vec![
                event_with("HOOK1", 10, Status::InTransit, "", Origin::Webhook),
                event_with("POLL1", 10, Status::InTransit, "", Origin::Poll),
            ],
        )
        .await;
        let rows: Vec<(String, bool)> = sqlx::query_as(
            "select tracking_number, last_webhook_at is not null from shipments order by 1",
        )
        .fetch_all(store.pool())
        .await
        .unwrap();
        assert_eq!(
            rows,
            [("HOOK1".to_owned(), true), ("POLL1".to_owned(), false)]
        );

        // A replay within the minute writes nothing at all (no refresh of last_webhook_at).
        let stamps = || async {
            sqlx::query_as::<
                _,
                (
                    chrono::DateTime<chrono::Utc>,
                    Option<chrono::DateTime<chrono::Utc>>,
                ),
            >(
                "select updated_at, last_webhook_at from shipments where tracking_number = 'HOOK1'"
            )
            .fetch_one(store.pool())
            .await
            .unwrap()
        };
        let before = stamps().await;
        let replay = merge(
            store,
            vec![event_with(
                "HOOK1",
                10,
                Status::InTransit,
                "",
                Origin::Webhook,
            )],
        )
        .await;
        assert_eq!(replay.duplicates, 1);
        assert_eq!(stamps().await, before);

        let mut conn = store.acquire().await.unwrap();
        let key = waybill_store::ShipmentKey {
            tenant: tenant(),
            carrier: ups(),
            tracking_number: number("POLL1"),
        };
        assert_eq!(
            waybill_store::webhook_touch(&mut conn, &[key.clone(), key])
                .await
                .unwrap(),
            1
        );
    })
    .await;
}

#[tokio::test]
async fn notifications_carry_the_five_newest_events_newest_first() {
    with_store(async |store| {
        let events: Vec<_> = (0..7)
            .map(|i| event("HIST1", i * 10, Status::InTransit, &format!("hub {i}")))
            .collect();
        merge(store, events).await;
        let body = status_changed(&outbox_bodies(store).await[0]);
        let locations: Vec<&str> = body
            .recent_history
            .iter()
            .map(|e| e.scan.location.as_deref().unwrap())
            .collect();
        assert_eq!(locations, ["hub 6", "hub 5", "hub 4", "hub 3", "hub 2"]);
    })
    .await;
}

#[tokio::test]
async fn a_rolled_back_batch_leaves_nothing_behind() {
    with_store(async |store| {
        // Something parked beforehand, so the rollback also has a pull to undo.
        merge_registered_only(store, vec![event("RB2", 5, Status::InTransit, "")]).await;

        let mut tx = store.begin().await.unwrap();
        let report = waybill_store::apply_batch(
            &mut tx,
            &InboundBatch {
                items: vec![
                    item(false, vec![event("RB1", 10, Status::InTransit, "")]),
                    item(true, vec![event("RB3", 10, Status::InTransit, "")]),
                ],
                registrations: vec![registration("RB2", Some("X"))],
            },
        )
        .await
        .unwrap();
        assert_eq!(
            (
                report.new_current,
                report.unmatched,
                report.pulled_from_unmatched
            ),
            (2, 1, 1)
        );
        tx.rollback().await.unwrap();

        let mut conn = store.acquire().await.unwrap();
        assert_eq!(count_shipments(&mut conn).await.unwrap(), 0);
        assert_eq!(count_tracking_events(&mut conn).await.unwrap(), 0);
        assert_eq!(count_outbox(&mut conn).await.unwrap(), 0);
        assert_eq!(
            count_unmatched_events(&mut conn).await.unwrap(),
            1,
            "only the earlier parked event"
        );
    })
    .await;
}

#[tokio::test]
async fn a_dropped_caller_never_leaves_a_transaction_open() {
    with_store(async |store| {
        let events: Vec<_> = (0..200)
            .map(|i| event(&format!("DROP{i}"), 10, Status::InTransit, ""))
            .collect();
        // Give up on the call almost at once: the spawned transaction must still finish.
        let outcome = tokio::time::timeout(
            Duration::from_micros(50),
            store.apply_batch(open_batch(events)),
        )
        .await;
        let mut conn = store.acquire().await.unwrap();
        waybill_testkit::eventually(Duration::from_secs(10), "the batch commits", async || {
            count_tracking_events(&mut conn).await.unwrap() == 200
        })
        .await;
        let idle_in_transaction: i64 = sqlx::query_scalar(
            "select count(*) from pg_stat_activity
         where datname = current_database() and state like 'idle in transaction%'",
        )
        .fetch_one(&mut *conn)
        .await
        .unwrap();
        assert_eq!(idle_in_transaction, 0);
        drop((conn, outcome));
    })
    .await;
}

#[tokio::test]
async fn migrations_are_idempotent_and_safe_to_run_concurrently() {
    let db = waybill_store::testing::TestDatabase::create_empty(
        &waybill_store::testing::TestDatabase::admin_url(),
        4,
    )
    .await
    .unwrap();
    let other = Store::connect(db.url(), 1).await.unwrap();
    let (a, b) = tokio::join!(db.store().migrate(), other.migrate());
    a.unwrap();
    b.unwrap();
    db.store().migrate().await.unwrap();
    let applied: i64 = sqlx::query_scalar("select count(*) from _sqlx_migrations where success")
        .fetch_one(db.store().pool())
        .await
        .unwrap();
    assert_eq!(applied as usize, waybill_store::migrate::migration_count());
    other.close().await;
    db.store().ping().await.unwrap();
    db.drop_database().await.unwrap();
}

#[tokio::test]
async fn a_shipment_created_by_an_open_source_takes_in_the_events_parked_for_it() {
    with_store(async |store| {
        let parked =
            merge_registered_only(store, vec![event("MIX1", 20, Status::OutForDelivery, "")]).await;
        assert_eq!(parked.unmatched, 1);
        let created = merge(store, vec![event("MIX1", 10, Status::InTransit, "")]).await;
        assert_eq!(
            (created.shipments_created, created.pulled_from_unmatched),
            (1, 1)
        );
        assert_eq!((created.new_current, created.history_only), (1, 1));
        let mut conn = store.acquire().await.unwrap();
        let shipment = stored(&mut conn, "MIX1").await.unwrap();
        assert_eq!(shipment.status, Status::OutForDelivery);
        assert!(!shipment.registered);
        assert_eq!(shipment.history.len(), 2);
        assert_eq!(count_unmatched_events(&mut conn).await.unwrap(), 0);
    })
    .await;
}
