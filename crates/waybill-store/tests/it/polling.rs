//! The poll schedule's SQL against a real Postgres: adoption, claims that never overlap, leases
//! that bring a lost claim back, and outcomes that only apply to the current slot.

use std::collections::HashSet;

use crate::common::*;
use chrono::{DateTime, Duration, Utc};
use waybill_core::SourceId;
use waybill_store::polling::{
    DefaultPollSource, PollState, SlotOutcome, adopt_new_shipments, begin_poll, claim_due,
    poll_schedule, record_outcomes, release_claims, seed_due_shipments, stop_unpolled_sources,
};
use waybill_store::{InboundBatch, PgConnection, ShipmentKey};

fn source(id: &str) -> SourceId {
    SourceId::parse(id).unwrap()
}

fn key(number_text: &str) -> ShipmentKey {
    ShipmentKey {
        tenant: tenant(),
        carrier: ups(),
        tracking_number: number(number_text),
    }
}

fn now() -> DateTime<Utc> {
    at(1_000_000)
}

/// `count` shipments of the default tenant's `ups`, numbered from `prefix`, polled through
/// source `s` and due at `due`.
async fn seed(conn: &mut PgConnection, prefix: &str, count: u32, due: DateTime<Utc>) {
    seed_due_shipments(conn, &tenant(), &ups(), &source("s"), prefix, count, due)
        .await
        .unwrap();
}

async fn register(db: &waybill_store::testing::TestDatabase, numbers: &[&str], src: Option<&str>) {
    let registrations = numbers
        .iter()
        .map(|n| {
            let mut registration = registration(n, None);
            registration.source = src.map(source);
            registration
        })
        .collect();
    db.store()
        .apply_batch(InboundBatch {
            items: vec![],
            registrations,
        })
        .await
        .unwrap();
}

#[tokio::test]
async fn adoption_schedules_polled_sources_resolves_defaults_and_turns_the_rest_off() {
    let db = database().await;
    register(&db, &["A1"], Some("ups-api")).await;
    register(&db, &["B1"], None).await;
    register(&db, &["C1"], Some("ups-hooks")).await;
    let mut conn = db.store().acquire().await.unwrap();
    let defaults = [DefaultPollSource {
        tenant: tenant(),
        carrier: ups(),
        source: source("ups-api"),
    }];
    let adopted = adopt_new_shipments(&mut conn, now(), &[source("ups-api")], &defaults, 60, 100)
        .await
        .unwrap();
    assert_eq!((adopted.scheduled, adopted.off), (2, 1));

    let a = poll_schedule(&mut conn, &key("A1")).await.unwrap().unwrap();
    assert_eq!(a.state, Some(PollState::Active));
    let first = a.next_poll_at.unwrap();
    assert!(
        first >= now() && first < now() + Duration::seconds(60),
        "{first}"
    );
    let b = poll_schedule(&mut conn, &key("B1")).await.unwrap().unwrap();
    assert_eq!(b.source.as_deref(), Some("ups-api"));
    assert_eq!(b.state, Some(PollState::Active));
    let c = poll_schedule(&mut conn, &key("C1")).await.unwrap().unwrap();
    assert_eq!((c.state, c.next_poll_at), (Some(PollState::Off), None));

    // Adopted once: nothing left to adopt, and registering again changes nothing.
    register(&db, &["A1"], Some("ups-api")).await;
    let again = adopt_new_shipments(&mut conn, now(), &[source("ups-api")], &defaults, 60, 100)
        .await
        .unwrap();
    assert_eq!((again.scheduled, again.off), (0, 0));
    assert_eq!(
        poll_schedule(&mut conn, &key("A1"))
            .await
            .unwrap()
            .unwrap()
            .next_poll_at,
        Some(first)
    );
    drop(conn);
    db.drop_database().await.unwrap();
}

#[tokio::test]
async fn a_claim_pushes_next_poll_by_the_lease_and_a_lost_claim_comes_back_after_it() {
    let (db, mut conn) = connected().await;
    let due = now() - Duration::seconds(5);
    seed(&mut conn, "Z", 3, due).await;
    let budgets = [(source("s"), 2)];
    let first = claim_due(&mut conn, now(), 600, &budgets).await.unwrap();
    assert_eq!(first.len(), 2, "the budget caps a claim");
    assert!(first.iter().all(|c| c.slot == due && c.attempt == 0));
    let second = claim_due(&mut conn, now(), 600, &budgets).await.unwrap();
    assert_eq!(second.len(), 1, "claimed rows are not due any more");
    assert!(
        claim_due(&mut conn, now(), 600, &budgets)
            .await
            .unwrap()
            .is_empty()
    );

    // Nobody recorded an outcome: after the lease the same slots are claimed again.
    let later = now() + Duration::seconds(601);
    let again = claim_due(&mut conn, later, 600, &[(source("s"), 10)])
        .await
        .unwrap();
    assert_eq!(again.len(), 3);
    assert!(again.iter().all(|c| c.slot == due && c.attempt == 1));
    drop(conn);
    db.drop_database().await.unwrap();
}

#[tokio::test]
async fn concurrent_schedulers_never_claim_the_same_slot() {
    let (db, mut conn) = connected().await;
    seed(&mut conn, "C", 2_000, now()).await;
    drop(conn);
    let mut tasks = Vec::new();
    for _ in 0..6 {
        let store = db.store().clone();
        tasks.push(tokio::spawn(async move {
            let mut mine = Vec::new();
            loop {
                let mut tx = store.begin().await.unwrap();
                let claimed = claim_due(&mut tx, now(), 600, &[(source("s"), 50)])
                    .await
                    .unwrap();
                tx.commit().await.unwrap();
                if claimed.is_empty() {
                    return mine;
                }
                mine.extend(claimed.into_iter().map(|c| c.id));
            }
        }));
    }
    let mut seen = HashSet::new();
    let mut total = 0;
    for task in tasks {
        for id in task.await.unwrap() {
            total += 1;
            assert!(seen.insert(id), "shipment {id} claimed twice");
        }
    }
    assert_eq!(total, 2_000);
    db.drop_database().await.unwrap();
}

#[tokio::test]
async fn a_slot_is_started_once_and_outcomes_only_apply_to_the_current_slot() {
    let (db, mut conn) = connected().await;
    seed(&mut conn, "P", 1, now()).await;
    let claim = claim_due(&mut conn, now(), 600, &[(source("s"), 1)])
        .await
        .unwrap()
        .remove(0);
    let target = begin_poll(&mut conn, claim.id, claim.slot, 0, now())
        .await
        .unwrap()
        .expect("the first start of a slot");
    assert_eq!(target.key, claim.key);
    for (attempt, why) in [
        (
            0,
            "a second delivery of the job does not start a second request",
        ),
        (1, "a job of another claim of the slot is stale"),
    ] {
        assert!(
            begin_poll(&mut conn, claim.id, claim.slot, attempt, now())
                .await
                .unwrap()
                .is_none(),
            "{why}"
        );
    }
    let next = now() + Duration::hours(2);
    let outcome = SlotOutcome {
        shipment_id: claim.id,
        slot: claim.slot,
        state: PollState::Active,
        next_poll_at: Some(next),
        poll_failures: 0,
        polled: true,
    };
    assert_eq!(
        record_outcomes(&mut conn, now(), std::slice::from_ref(&outcome), false)
            .await
            .unwrap(),
        1
    );
    let schedule = poll_schedule(&mut conn, &claim.key).await.unwrap().unwrap();
    assert_eq!(schedule.next_poll_at, Some(next));
    assert_eq!(
        (schedule.slot, schedule.last_polled_at),
        (None, Some(now()))
    );
    // The same outcome again, or a late job for the finished slot: nothing happens.
    assert_eq!(
        record_outcomes(&mut conn, now(), &[outcome], true)
            .await
            .unwrap(),
        0
    );
    assert!(
        begin_poll(
            &mut conn,
            claim.id,
            claim.slot,
            0,
            now() + Duration::hours(1)
        )
        .await
        .unwrap()
        .is_none()
    );

    // A released claim is due again at the given time, on the same slot.
    let claim = claim_due(&mut conn, next, 600, &[(source("s"), 1)])
        .await
        .unwrap()
        .remove(0);
    release_claims(
        &mut conn,
        &[(claim.id, claim.slot)],
        next + Duration::seconds(10),
    )
    .await
    .unwrap();
    let back = claim_due(
        &mut conn,
        next + Duration::seconds(10),
        600,
        &[(source("s"), 1)],
    )
    .await
    .unwrap();
    assert_eq!((back[0].slot, back[0].attempt), (next, 1));

    // A source no longer polled: its shipments are switched off.
    assert_eq!(
        stop_unpolled_sources(&mut conn, &[source("other")])
            .await
            .unwrap(),
        1
    );
    let schedule = poll_schedule(&mut conn, &claim.key).await.unwrap().unwrap();
    assert_eq!(
        (schedule.state, schedule.next_poll_at),
        (Some(PollState::Off), None)
    );
    drop(conn);
    db.drop_database().await.unwrap();
}
