//! Crashes and restarts lose nothing: rows committed but not published are published by the
//! next relay (consumers dedupe the repeats by message id), a pending retry survives a worker
//! restart, a dead delivery is replayed with the same webhook-id and bytes, and past the
//! retention a worker deletes what is done with but keeps dead deliveries.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use waybill_store::fanout::DeliveryStatus;

use super::helpers::*;

#[tokio::test]
async fn a_worker_stopped_between_commit_and_publish_leaves_it_to_the_next_relay() {
    let mut app = spawn_without_workers("").await;
    let (receiver, subscription, _) = subscribed(&app, vec![], "/hook").await;
    let queue = app.bind_events("#").await;

    // A worker that merges but never relays: the state a crash right after the merge's commit
    // leaves behind.
    let merging_only = app
        .start_worker(|settings| {
            settings.fanout.relay_enabled = false;
            settings.fanout.delivery_enabled = false;
        })
        .await;
    for n in 0..5 {
        let tracking_number = format!("CRASH{n}");
        post_acme(&app, &tracking_number, "InTransit", "2026-11-20T10:00:00Z").await;
    }
    eventually(
        Duration::from_secs(20),
        "five changes committed",
        || async { app.outbox_rows().await == 5 },
    )
    .await;
    app.stop_worker(merging_only).await;
    let mut conn = app.db.store().acquire().await.unwrap();
    assert_eq!(
        waybill_store::fanout::relay_backlog(&mut conn)
            .await
            .unwrap(),
        (5, 5)
    );
    drop(conn);
    assert!(
        queue.drain().await.unwrap().is_empty(),
        "nothing was published"
    );
    assert_eq!(receiver.count(), 0);

    // The next worker publishes and delivers them.
    app.start_worker(|_| {}).await;
    let mut messages = queue.collect(5, Duration::from_secs(20)).await;
    received(&receiver, 5).await;
    assert_eq!(messages.len(), 5);

    // A relay that crashed after the broker's confirms but before its commit leaves its rows
    // unpublished: they are published again. Consumers see every event at least once and
    // dedupe on the message id to exactly once.
    sqlx::query(
        "insert into outbox_to_publish (outbox_id)
         select id from outbox order by id limit 2",
    )
    .execute(app.db.store().pool())
    .await
    .unwrap();
    messages.extend(queue.collect(2, Duration::from_secs(20)).await);
    assert_eq!(messages.len(), 7, "two repeats");
    let mut seen: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    for message in &messages {
        let previous = seen.insert(message.message_id.clone(), message.body.clone());
        if let Some(previous) = previous {
            assert_eq!(previous, message.body, "a repeat is byte-identical");
        }
    }
    assert_eq!(seen.len(), 5, "deduped by message id: once per change");
    let event_ids: BTreeSet<String> = seen
        .values()
        .map(|body| {
            let json: serde_json::Value = serde_json::from_slice(body).unwrap();
            json["event_id"].as_str().unwrap().to_owned()
        })
        .collect();
    assert_eq!(event_ids.len(), 5);
    // The HTTP side was fanned out once; republishing does not deliver again.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(receiver.count(), 5);
    assert_eq!(app.deliveries(subscription).await.len(), 5);
    queue.close().await;
    app.shutdown().await;
}

#[tokio::test]
async fn a_pending_retry_survives_a_worker_restart() {
    let mut app = spawn_without_workers(r#"retry_schedule = ["0ms", "1500ms"]"#).await;
    let (receiver, id, _) = subscribed(&app, vec![Reply::Status(500)], "/restart").await;
    let first = app.start_worker(|_| {}).await;
    post_acme(&app, "RESTART1", "InTransit", "2026-11-20T10:00:00Z").await;
    eventually(
        Duration::from_secs(20),
        "the first attempt recorded",
        || async {
            app.deliveries(id)
                .await
                .first()
                .is_some_and(|d| d.last_status == Some(500))
        },
    )
    .await;
    app.stop_worker(first).await;
    let pending = &app.deliveries(id).await[0];
    assert_eq!(pending.status, DeliveryStatus::Pending);
    assert!(pending.next_attempt_at.is_some());

    app.start_worker(|_| {}).await;
    eventually(
        Duration::from_secs(20),
        "delivered by the new worker",
        || async { app.deliveries(id).await[0].status == DeliveryStatus::Delivered },
    )
    .await;
    let requests = receiver.received();
    assert_eq!(requests.len(), 2);
    assert_eq!(
        requests[0].header("webhook-id"),
        requests[1].header("webhook-id")
    );
    app.shutdown().await;
}

#[tokio::test]
async fn a_dead_delivery_is_replayed_with_the_same_webhook_id_and_bytes() {
    let app = spawn(r#"retry_schedule = ["0ms", "100ms"]"#).await;
    let receiver = Receiver::start_with_default(vec![], Reply::Status(500)).await;
    let (id, secret) = app.subscribe(&receiver.url("/dead"), &[], &[]).await;
    post_acme(&app, "DEAD1", "InTransit", "2026-11-20T10:00:00Z").await;
    first_delivery_reaches(&app, id, DeliveryStatus::Dead).await;
    assert_eq!(receiver.count(), 2, "both attempts of the schedule");

    let dead = waybill_cli::deliveries::dead(&app.settings, Some(id), None, 10)
        .await
        .unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].last_status, Some(500));
    assert!(
        dead[0]
            .last_error
            .as_deref()
            .unwrap()
            .contains("no attempts left")
    );

    receiver.answer_from_now_on(Reply::Status(204));
    let replayed = waybill_cli::deliveries::replay(
        &app.settings,
        &waybill_cli::deliveries::ReplayTarget::Ids(vec![dead[0].id]),
    )
    .await
    .unwrap();
    assert_eq!(replayed, 1);
    eventually(Duration::from_secs(20), "the replay delivered", || async {
        app.deliveries(id).await[0].status == DeliveryStatus::Delivered
    })
    .await;
    let requests = receiver.received();
    assert_eq!(requests.len(), 3);
    let (original, replay) = (&requests[0], &requests[2]);
    assert_eq!(replay.header("webhook-id"), original.header("webhook-id"));
    assert_eq!(replay.body, original.body, "the same bytes");
    replay.verify(&secret).expect("signed afresh");
    let delivery = &app.deliveries(id).await[0];
    assert_eq!(delivery.replays, 1);
    assert!(
        waybill_cli::deliveries::dead(&app.settings, Some(id), None, 10)
            .await
            .unwrap()
            .is_empty()
    );
    app.shutdown().await;
}

#[tokio::test]
async fn a_worker_prunes_what_is_done_with_once_older_than_the_retention() {
    let mut app = spawn_without_workers("").await;
    let (_answering, delivered_to, _) = subscribed(&app, vec![], "/ok").await;
    let (_gone, dead_at, _) = subscribed(&app, vec![Reply::Status(410)], "/gone").await;
    let first = app.start_worker(|_| {}).await;
    post_acme(&app, "OLD1", "InTransit", "2026-11-20T10:00:00Z").await;
    // One delivery delivered, one dead (both for good).
    first_delivery_reaches(&app, delivered_to, DeliveryStatus::Delivered).await;
    first_delivery_reaches(&app, dead_at, DeliveryStatus::Dead).await;
    eventually(Duration::from_secs(20), "the change published", || async {
        let mut conn = app.db.store().acquire().await.unwrap();
        waybill_store::fanout::relay_backlog(&mut conn)
            .await
            .unwrap()
            == (0, 0)
    })
    .await;
    app.stop_worker(first).await;

    // A week and a day later.
    for statement in [
        "update outbox set created_at = created_at - interval '8 days'",
        "update deliveries set delivered_at = delivered_at - interval '8 days',
                               dead_at = dead_at - interval '8 days'",
    ] {
        sqlx::query(statement)
            .execute(app.db.store().pool())
            .await
            .unwrap();
    }
    app.start_worker(|_| {}).await;
    eventually(
        Duration::from_secs(20),
        "the outbox row and the delivered delivery pruned",
        || async { app.outbox_rows().await == 0 && status_of(&app, delivered_to).await.is_none() },
    )
    .await;
    assert_eq!(
        status_of(&app, dead_at).await,
        Some(DeliveryStatus::Dead),
        "a dead delivery stays, to be replayed"
    );
    app.shutdown().await;
}

/// The status of a subscription's first delivery, if it has one.
async fn status_of(app: &TestApp, subscription: i64) -> Option<DeliveryStatus> {
    app.deliveries(subscription)
        .await
        .first()
        .map(|delivery| delivery.status)
}
