//! HTTP deliveries: retried on 5xx and timeouts with the same webhook-id, `Retry-After`
//! honoured within its bound, 410 disables, a rotated secret signs alongside the new one, and a
//! slow receiver holds only its own slots.

use std::time::Duration;

use waybill_store::fanout::{DeliveryStatus, DisabledReason};

use super::helpers::*;

#[tokio::test]
async fn a_500_then_a_200_is_delivered_on_retry_with_the_same_webhook_id_and_bytes() {
    let app = spawn("").await;
    let (receiver, id, secret) = subscribed(&app, vec![Reply::Status(500)], "/hook").await;
    post_acme(&app, "RETRY1", "InTransit", "2026-11-20T10:00:00Z").await;
    first_delivery_reaches(&app, id, DeliveryStatus::Delivered).await;
    let requests = receiver.received();
    assert_eq!(requests.len(), 2);
    assert_eq!(
        requests[0].header("webhook-id"),
        requests[1].header("webhook-id")
    );
    assert_eq!(requests[0].body, requests[1].body);
    for request in &requests {
        request.verify(&secret).expect("every attempt is signed");
    }
    let gap = requests[1].at - requests[0].at;
    assert!(
        gap >= Duration::from_millis(140),
        "the schedule's wait: {gap:?}"
    );
    let delivery = &app.deliveries(id).await[0];
    assert_eq!(delivery.attempts, 2);
    assert_eq!(delivery.last_status, Some(200));
    assert_eq!(delivery.webhook_id, requests[0].header("webhook-id"));
    assert!(
        app.listed(id).await.failing_since.is_none(),
        "a success ends the failing"
    );
    app.shutdown().await;
}

#[tokio::test]
async fn timeouts_are_retried() {
    let app = spawn("request_timeout_ms = 300").await;
    let receiver = Receiver::start(vec![Reply::Slow(Duration::from_secs(2), 200)]).await;
    let (id, _) = app
        .subscribe(&receiver.url("/slow-then-fast"), &[], &[])
        .await;
    post_acme(&app, "TIMEOUT1", "InTransit", "2026-11-20T10:00:00Z").await;
    first_delivery_reaches(&app, id, DeliveryStatus::Delivered).await;
    let requests = receiver.received();
    assert_eq!(requests.len(), 2, "the timed-out attempt and the retry");
    assert_eq!(
        requests[0].header("webhook-id"),
        requests[1].header("webhook-id")
    );
    assert_eq!(app.deliveries(id).await[0].attempts, 2);
    app.shutdown().await;
}

#[tokio::test]
async fn a_410_disables_the_subscription_until_it_is_enabled() {
    let app = spawn("").await;
    let (receiver, id, _) = subscribed(&app, vec![Reply::Status(410)], "/gone").await;
    post_acme(&app, "GONE1", "InTransit", "2026-11-20T10:00:00Z").await;
    disabled(&app, id).await;
    let listed = app.listed(id).await;
    assert_eq!(listed.disabled_reason, Some(DisabledReason::Gone));
    let deliveries = app.deliveries(id).await;
    assert_eq!(deliveries.len(), 1);
    assert_eq!(
        deliveries[0].status,
        DeliveryStatus::Dead,
        "410 is not retried"
    );
    assert_eq!(deliveries[0].last_status, Some(410));
    assert!(
        app.metrics()
            .contains(r#"waybill_subscriptions_disabled_total{reason="gone"}"#)
    );

    // While disabled, later changes are not owed to it.
    post_acme(&app, "GONE2", "InTransit", "2026-11-20T10:00:00Z").await;
    eventually(
        Duration::from_secs(20),
        "the second change merged",
        || async { app.outbox_rows().await == 2 },
    )
    .await;
    // Time must pass to show that no delivery is created for the disabled subscription.
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(app.deliveries(id).await.len(), 1);
    assert_eq!(receiver.count(), 1);

    // Enabled again, it receives what changes next.
    waybill_cli::subscriptions::enable(&app.settings, id)
        .await
        .unwrap();
    post_acme(&app, "GONE3", "InTransit", "2026-11-20T10:00:00Z").await;
    received(&receiver, 2).await;
    assert_eq!(
        receiver.received()[1].json()["shipment"]["tracking_number"],
        "GONE3"
    );
    app.shutdown().await;
}

#[tokio::test]
async fn retry_after_postpones_the_next_attempt_within_its_bound() {
    // The schedule says 50 ms; the receiver says an hour; the bound says 1 s.
    let app = spawn(
        r#"retry_schedule = ["0ms", "50ms", "50ms"]
max_retry_after = "1s""#,
    )
    .await;
    let (receiver, id, _) = subscribed(&app, vec![Reply::RetryAfter(429, "3600")], "/busy").await;
    post_acme(&app, "BUSY1", "InTransit", "2026-11-20T10:00:00Z").await;
    received(&receiver, 2).await;
    let requests = receiver.received();
    let gap = requests[1].at - requests[0].at;
    assert!(
        gap >= Duration::from_millis(950) && gap < Duration::from_secs(5),
        "waited for Retry-After, within max_retry_after: {gap:?}"
    );
    assert_eq!(
        app.deliveries(id).await[0].status,
        DeliveryStatus::Delivered
    );
    app.shutdown().await;
}

#[tokio::test]
async fn a_subscription_failing_for_the_configured_period_is_disabled() {
    let app = spawn(
        r#"retry_schedule = ["0ms", "200ms", "200ms", "200ms", "200ms", "200ms", "200ms", "200ms"]
disable_after = "700ms""#,
    )
    .await;
    let receiver = Receiver::start_with_default(vec![], Reply::Status(503)).await;
    let (id, _) = app.subscribe(&receiver.url("/down"), &[], &[]).await;
    post_acme(&app, "DOWN1", "InTransit", "2026-11-20T10:00:00Z").await;
    disabled(&app, id).await;
    let listed = app.listed(id).await;
    assert_eq!(listed.disabled_reason, Some(DisabledReason::Failing));
    assert!(listed.failing_since.is_some());
    let attempts = receiver.count();
    assert!(
        (4..8).contains(&attempts),
        "disabled after ~700 ms of failures: {attempts}"
    );
    assert!(
        app.metrics()
            .contains(r#"waybill_subscriptions_disabled_total{reason="failing"}"#)
    );
    // The delivery waits (pending) for the subscription to be enabled again.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(receiver.count(), attempts);
    assert_eq!(app.deliveries(id).await[0].status, DeliveryStatus::Pending);
    receiver.answer_from_now_on(Reply::Status(200));
    waybill_cli::subscriptions::enable(&app.settings, id)
        .await
        .unwrap();
    eventually(
        Duration::from_secs(20),
        "delivered after enabling",
        || async { app.deliveries(id).await[0].status == DeliveryStatus::Delivered },
    )
    .await;
    app.shutdown().await;
}

#[tokio::test]
async fn a_rotated_secret_signs_alongside_the_new_one() {
    let app = spawn("").await;
    let (receiver, id, old) = subscribed(&app, vec![], "/rotating").await;
    let (rotated, new) = waybill_cli::subscriptions::rotate_secret(&app.settings, id, None)
        .await
        .unwrap();
    assert_ne!(old, new);
    assert!(rotated.previous_secret_expires_at.is_some());
    post_acme(&app, "ROT1", "InTransit", "2026-11-20T10:00:00Z").await;
    received(&receiver, 1).await;
    let request = &receiver.received()[0];
    assert_eq!(request.header("webhook-signature").split(' ').count(), 2);
    request.verify(&new).expect("the new secret verifies");
    request
        .verify(&old)
        .expect("the old secret verifies during the window");
    app.shutdown().await;
}

#[tokio::test]
async fn a_slow_receiver_holds_only_its_own_slots() {
    let app = spawn(
        r#"concurrency = 4
concurrency_per_subscription = 2
request_timeout_ms = 10000"#,
    )
    .await;
    let slow = Receiver::start_with_default(vec![], Reply::Slow(Duration::from_secs(3), 200)).await;
    let fast = Receiver::start(vec![]).await;
    app.subscribe(&slow.url("/slow"), &[], &[]).await;
    app.subscribe(&fast.url("/fast"), &[], &[]).await;
    for n in 0..6 {
        let tracking_number = format!("SLOW{n}");
        post_acme(&app, &tracking_number, "InTransit", "2026-11-20T10:00:00Z").await;
    }
    // Every change at the fast receiver.
    received_within(&fast, 6, Duration::from_secs(3)).await;
    assert!(
        slow.count() <= 2,
        "the slow one has at most its two slots busy"
    );
    // Every change at the slow receiver.
    received_within(&slow, 6, Duration::from_secs(30)).await;
    assert_eq!(slow.max_in_flight(), 2, "per-subscription concurrency");
    app.shutdown().await;
}
