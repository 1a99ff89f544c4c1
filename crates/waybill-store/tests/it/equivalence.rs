//! The equivalence property: whatever the batching and order, `apply_batch` leaves exactly the
//! state the pure `waybill_core::merge::apply` defines.
//!
//! Each case generates a few shipments, each with a small pool of events (all 12 statuses, times
//! within four seconds so ties happen, repeated picks so duplicates happen), deals the picks into
//! up to five batches, and applies the batches in order, each in its own transaction. Some
//! shipments come from a source that requires registration and are registered in a random
//! batch, so their events are parked and pulled back in. The model replays the same batches
//! through the pure function; per batch the reports must agree, and at the end the stored
//! current event, status, history set, version and outbox rows must match — and the current
//! event must equal `merge::apply` over the whole set in one go.
//!
//! One database for all cases (distinct tracking numbers per case); `PROPTEST_CASES` overrides
//! the default of 256 cases.

use std::collections::{BTreeSet, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::common::*;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use waybill_core::merge::{self, ShipmentState};
use waybill_core::{ChangeKind, EventId, EventKey, Status, TrackingEvent};
use waybill_store::{
    BatchReport, DownstreamEvent, HistoryEntryV1, InboundBatch, ScanV1, Store, get_shipment,
};

#[derive(Debug, Clone)]
struct ShipmentCase {
    /// Candidate events: (seconds, index into `Status::ALL`, location variant).
    pool: Vec<(i64, usize, u8)>,
    /// Deliveries: (index into `pool`, batch).
    deliveries: Vec<(usize, usize)>,
    registered_only: bool,
    registration_batch: usize,
}

#[derive(Debug, Clone)]
struct Case {
    batches: usize,
    shipments: Vec<ShipmentCase>,
}

/// Any of the 12 statuses, with the terminal ones and `Exception` (where the transition rules
/// bite) drawn more often.
fn status_index() -> impl Strategy<Value = usize> {
    prop_oneof![2 => 0usize..12, 1 => prop::sample::select(vec![6usize, 7, 8, 9, 10])]
}

fn shipment_case(batches: usize) -> impl Strategy<Value = ShipmentCase> {
    (
        prop::collection::vec((0i64..4, status_index(), 0u8..2), 1..10),
        prop::bool::weighted(0.3),
        0..batches,
    )
        .prop_flat_map(move |(pool, registered_only, registration_batch)| {
            let size = pool.len();
            (
                Just(pool),
                prop::collection::vec((0..size, 0..batches), 1..16),
                Just(registered_only),
                Just(registration_batch),
            )
        })
        .prop_map(
            |(pool, deliveries, registered_only, registration_batch)| ShipmentCase {
                pool,
                deliveries,
                registered_only,
                registration_batch,
            },
        )
}

fn case() -> impl Strategy<Value = Case> {
    (1usize..=5).prop_flat_map(|batches| {
        prop::collection::vec(shipment_case(batches), 1..=3)
            .prop_map(move |shipments| Case { batches, shipments })
    })
}

/// What the pure model expects of one batch.
#[derive(Debug, Default, PartialEq, Eq)]
struct Expected {
    new_current: u64,
    history_only: u64,
    outdated: u64,
    duplicates: u64,
    unmatched: u64,
    pulled: u64,
    changed: usize,
}

impl Expected {
    fn of(report: &BatchReport) -> Expected {
        Expected {
            new_current: report.new_current,
            history_only: report.history_only,
            outdated: report.outdated,
            duplicates: report.duplicates,
            unmatched: report.unmatched,
            pulled: report.pulled_from_unmatched,
            changed: report.changed_shipments.len(),
        }
    }
}

/// The pure model of one shipment.
#[derive(Default)]
struct Model {
    state: ShipmentState,
    registered: bool,
    parked: Vec<EventKey>,
    all: Vec<EventKey>,
}

static CASE_NUMBER: AtomicU64 = AtomicU64::new(0);

async fn check(store: &Store, case: &Case) -> Result<(), TestCaseError> {
    let case_number = CASE_NUMBER.fetch_add(1, Ordering::Relaxed);
    let tracking_number = |index: usize| format!("EQ{case_number}X{index}");

    // events_of[batch][shipment]
    let mut events_of: Vec<Vec<Vec<TrackingEvent>>> =
        vec![vec![Vec::new(); case.shipments.len()]; case.batches];
    for (index, shipment) in case.shipments.iter().enumerate() {
        for &(pick, batch) in &shipment.deliveries {
            let (seconds, status, location) = shipment.pool[pick];
            let location = if location == 0 { "" } else { "Hub" };
            events_of[batch][index].push(event(
                &tracking_number(index),
                seconds,
                Status::ALL[status],
                location,
            ));
        }
    }

    let mut models: Vec<Model> = case
        .shipments
        .iter()
        .map(|s| Model {
            registered: !s.registered_only,
            ..Model::default()
        })
        .collect();

    for (batch_index, batch_events) in events_of.iter().enumerate() {
        let mut batch = InboundBatch {
            items: vec![item(false, vec![]), item(true, vec![])],
            registrations: vec![],
        };
        let mut expected = Expected::default();
        for (index, shipment) in case.shipments.iter().enumerate() {
            let events = &batch_events[index];
            let slot = usize::from(shipment.registered_only);
            batch.items[slot].events.extend(events.iter().cloned());
            let model = &mut models[index];
            model.all.extend(events.iter().map(TrackingEvent::key));

            let mut input: Vec<EventKey> = events.iter().map(TrackingEvent::key).collect();
            if shipment.registered_only && !model.registered {
                if batch_index == shipment.registration_batch {
                    batch
                        .registrations
                        .push(registration(&tracking_number(index), None));
                    model.registered = true;
                    let in_batch: HashSet<EventId> = input.iter().map(|k| k.id.clone()).collect();
                    expected.pulled += model.parked.len() as u64;
                    input.extend(model.parked.drain(..).filter(|k| !in_batch.contains(&k.id)));
                } else {
                    let mut seen = HashSet::new();
                    for key in input {
                        if !seen.insert(key.id.clone()) {
                            expected.duplicates += 1;
                            continue;
                        }
                        expected.unmatched += 1;
                        if !model.parked.iter().any(|p| p.id == key.id) {
                            model.parked.push(key);
                        }
                    }
                    continue;
                }
            }
            if input.is_empty() {
                continue;
            }
            let outcome = merge::apply(&model.state, &input);
            for (_, kind) in &outcome.changes {
                match kind {
                    ChangeKind::NewCurrent => expected.new_current += 1,
                    ChangeKind::HistoryOnly => expected.history_only += 1,
                    ChangeKind::Outdated => expected.outdated += 1,
                    ChangeKind::Duplicate => expected.duplicates += 1,
                }
            }
            if outcome.current_changed() {
                expected.changed += 1;
            }
            model.state = outcome.state;
        }
        let report = store
            .apply_batch(batch)
            .await
            .map_err(|e| TestCaseError::fail(format!("apply_batch failed: {e:?}")))?;
        prop_assert_eq!(
            Expected::of(&report),
            expected,
            "report of batch {}",
            batch_index
        );
        check_notifications(store, &report).await?;
    }

    let mut conn = store.acquire().await.unwrap();
    for (index, model) in models.iter().enumerate() {
        let stored = stored(&mut conn, &tracking_number(index)).await;
        let stored = stored.ok_or_else(|| TestCaseError::fail("shipment missing"))?;
        let current = model
            .state
            .current
            .as_ref()
            .expect("every shipment has events");
        prop_assert_eq!(stored.status, current.status);
        prop_assert_eq!(stored.current_event_id.as_ref(), Some(&current.id));
        prop_assert_eq!(stored.current_event_at, Some(current.occurred_at));
        prop_assert_eq!(stored.version, model.state.version);
        let stored_ids: BTreeSet<&EventId> = stored.history.iter().map(|e| &e.event_id).collect();
        let model_ids: BTreeSet<&EventId> = model.state.history.iter().map(|k| &k.id).collect();
        prop_assert_eq!(stored_ids, model_ids);
        prop_assert_eq!(
            stored.last_event_at,
            model.all.iter().map(|k| k.occurred_at).max()
        );
        // History is newest first in merge order.
        let keys: Vec<EventKey> = stored
            .history
            .iter()
            .map(|e| EventKey {
                occurred_at: e.occurred_at,
                status: e.status,
                id: e.event_id.clone(),
            })
            .collect();
        prop_assert!(keys.windows(2).all(|pair| pair[0] > pair[1]));

        // The whole set in one go gives the same current event.
        let at_once = merge::apply(&ShipmentState::default(), &model.all);
        prop_assert_eq!(at_once.state.current.as_ref(), Some(current));

        let (rows, max_version): (i64, Option<i64>) = sqlx::query_as(
            "select count(*), max(o.version) from outbox o
             join shipments s on s.id = o.shipment_id where s.tracking_number = $1",
        )
        .bind(tracking_number(index))
        .fetch_one(&mut *conn)
        .await
        .unwrap();
        prop_assert_eq!(rows, model.state.version);
        prop_assert_eq!(max_version.unwrap_or(0), model.state.version);
    }
    Ok(())
}

/// Each outbox row the batch wrote announces the shipment's stored current event with its
/// stored details, and carries its five newest stored events, newest first — whatever the merge
/// assembled in memory must read exactly like the database after the batch.
async fn check_notifications(store: &Store, report: &BatchReport) -> Result<(), TestCaseError> {
    let mut conn = store.acquire().await.unwrap();
    for changed in &report.changed_shipments {
        let payload: serde_json::Value =
            sqlx::query_scalar("select payload from outbox where id = $1")
                .bind(changed.outbox_id)
                .fetch_one(&mut *conn)
                .await
                .unwrap();
        let DownstreamEvent::StatusChanged(body) = serde_json::from_value(payload).unwrap();
        let stored = get_shipment(
            &mut conn,
            &changed.key.tenant,
            &changed.key.carrier,
            &changed.key.tracking_number,
        )
        .await
        .unwrap()
        .ok_or_else(|| TestCaseError::fail("shipment missing"))?;
        let entry = |e: &waybill_store::HistoryEntry| HistoryEntryV1 {
            event_id: e.event_id.clone(),
            status: e.status,
            scan: ScanV1 {
                raw_status: e.raw_status.clone(),
                sub_status: e.sub_status.clone(),
                occurred_at: e.occurred_at,
                location: e.location.clone(),
                message: e.message.clone(),
            },
            origin: e.origin,
        };
        let newest: Vec<HistoryEntryV1> = stored.history.iter().take(5).map(entry).collect();
        prop_assert_eq!(&body.recent_history, &newest);
        let current = stored
            .history
            .iter()
            .find(|e| Some(&e.event_id) == stored.current_event_id.as_ref())
            .map(entry)
            .ok_or_else(|| TestCaseError::fail("current event not in history"))?;
        prop_assert_eq!(&body.event_id, &current.event_id);
        prop_assert_eq!(body.new_status, current.status);
        prop_assert_eq!(&body.scan, &current.scan);
        prop_assert_eq!(body.shipment_version, stored.version);
    }
    Ok(())
}

#[test]
fn apply_batch_is_equivalent_to_the_pure_merge() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let db = runtime.block_on(database());
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(256);
    let mut runner = TestRunner::new(Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    });
    let outcome = runner.run(&case(), |case| runtime.block_on(check(db.store(), &case)));
    let leftovers = runtime.block_on(async {
        let mut conn = db.store().acquire().await.unwrap();
        waybill_store::count_unmatched_events(&mut conn)
            .await
            .unwrap()
    });
    runtime.block_on(db.drop_database()).unwrap();
    if let Err(failure) = outcome {
        panic!("{failure}");
    }
    assert_eq!(
        leftovers, 0,
        "every parked event was pulled in by its registration"
    );
}
