//! Concurrent batches: overlapping batches in different orders never deadlock and converge to
//! the sequential result; parking and registering the same shipment at once loses nothing.

use std::collections::BTreeSet;

use crate::common::*;
use waybill_core::merge::{self, ShipmentState};
use waybill_core::{EventKey, Status, TrackingEvent};
use waybill_store::InboundBatch;
use waybill_store::testing::{Random, TestDatabase};

fn permutations(n: usize) -> Vec<Vec<usize>> {
    if n == 0 {
        return vec![vec![]];
    }
    let mut all = Vec::new();
    for rest in permutations(n - 1) {
        for position in 0..=rest.len() {
            let mut order = rest.clone();
            order.insert(position, n - 1);
            all.push(order);
        }
    }
    all
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overlapping_batches_in_different_orders_never_deadlock_and_converge() {
    const WRITERS: usize = 4;
    const SHIPMENTS: usize = 40;
    const ROUNDS: usize = 15;
    let db = TestDatabase::create_with_pool(&TestDatabase::admin_url(), 8)
        .await
        .unwrap();
    let mut random = Random(0x5eed_1234_abcd_0001);

    for round in 0..ROUNDS {
        let tracking_number = |shipment: usize| format!("CC{round}S{shipment}");
        // Each writer gets events for most shipments, half of them in reverse key order.
        let mut batches: Vec<Vec<TrackingEvent>> = vec![Vec::new(); WRITERS];
        for (writer, events) in batches.iter_mut().enumerate() {
            for shipment in 0..SHIPMENTS {
                for _ in 0..random.below(3) {
                    let status = Status::ALL[random.below(12)];
                    let seconds = random.below(5) as i64;
                    events.push(event(&tracking_number(shipment), seconds, status, ""));
                }
            }
            if writer % 2 == 1 {
                events.reverse();
            }
        }

        let tasks: Vec<_> = batches
            .iter()
            .map(|events| {
                let store = db.store().clone();
                let batch = open_batch(events.clone());
                tokio::spawn(async move { store.apply_batch(batch).await })
            })
            .collect();
        for task in tasks {
            task.await
                .unwrap()
                .expect("no batch fails (a deadlock would be error 40P01)");
        }

        let mut conn = db.store().acquire().await.unwrap();
        for shipment in 0..SHIPMENTS {
            let per_writer: Vec<Vec<EventKey>> = batches
                .iter()
                .map(|events| {
                    events
                        .iter()
                        .filter(|e| e.tracking_number.as_str() == tracking_number(shipment))
                        .map(TrackingEvent::key)
                        .collect()
                })
                .collect();
            let all: Vec<EventKey> = per_writer.iter().flatten().cloned().collect();
            let stored = stored(&mut conn, &tracking_number(shipment)).await;
            if all.is_empty() {
                assert!(stored.is_none());
                continue;
            }
            let stored = stored.expect("shipment exists");
            let at_once = merge::apply(&ShipmentState::default(), &all).state;
            assert_eq!(
                stored.current_event_id.as_ref(),
                at_once.current.as_ref().map(|c| &c.id)
            );
            let stored_ids: BTreeSet<_> =
                stored.history.iter().map(|e| e.event_id.clone()).collect();
            let model_ids: BTreeSet<_> = at_once.history.iter().map(|k| k.id.clone()).collect();
            assert_eq!(stored_ids, model_ids);
            // The version is that of *some* serial order of the writers.
            let possible: BTreeSet<i64> = permutations(WRITERS)
                .iter()
                .map(|order| {
                    order
                        .iter()
                        .fold(ShipmentState::default(), |state, &writer| {
                            if per_writer[writer].is_empty() {
                                state
                            } else {
                                merge::apply(&state, &per_writer[writer]).state
                            }
                        })
                })
                .map(|state| state.version)
                .collect();
            assert!(
                possible.contains(&stored.version),
                "version {} not in {possible:?}",
                stored.version
            );
        }
    }
    db.drop_database().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parking_and_registering_the_same_shipment_at_once_loses_nothing() {
    const ROUNDS: usize = 40;
    let db = TestDatabase::create_with_pool(&TestDatabase::admin_url(), 8)
        .await
        .unwrap();
    for round in 0..ROUNDS {
        let tracking_number = format!("RACE{round}");
        let events =
            registered_only_batch(vec![event(&tracking_number, 10, Status::InTransit, "")]);
        let register = InboundBatch {
            items: vec![],
            registrations: vec![registration(&tracking_number, None)],
        };
        let (first, second) = if round % 2 == 0 {
            (events, register)
        } else {
            (register, events)
        };
        let (a, b) = tokio::join!(
            tokio::spawn({
                let store = db.store().clone();
                async move { store.apply_batch(first).await }
            }),
            tokio::spawn({
                let store = db.store().clone();
                async move { store.apply_batch(second).await }
            }),
        );
        a.unwrap().unwrap();
        b.unwrap().unwrap();
        let mut conn = db.store().acquire().await.unwrap();
        let shipment = stored(&mut conn, &tracking_number)
            .await
            .expect("registered");
        assert_eq!(
            shipment.status,
            Status::InTransit,
            "round {round}: the event was applied"
        );
        assert_eq!(shipment.version, 1);
    }
    let mut conn = db.store().acquire().await.unwrap();
    assert_eq!(
        waybill_store::count_unmatched_events(&mut conn)
            .await
            .unwrap(),
        0
    );
    drop(conn);
    db.drop_database().await.unwrap();
}
