//! One change, one message: on the topic exchange and at every subscriber, with the same id
//! and the same bytes; nothing for duplicates and outdated events.

use std::collections::BTreeMap;
use std::time::Duration;

use super::helpers::*;

#[tokio::test]
async fn a_change_reaches_a_bound_queue_and_a_subscriber_exactly_once_per_event() {
    let app = spawn("").await;
    let (receiver, _id, secret) = subscribed(&app, vec![], "/hooks/all").await;
    let queue = app.bind_events("#").await;

    let in_transit = event("acme", "FAN001", "InTransit", "2026-11-20T10:00:00+11:00");
    let delivered = event("acme", "FAN001", "Delivered", "2026-11-21T10:00:00+11:00");
    let outdated = event(
        "acme",
        "FAN001",
        "InfoReceived",
        "2026-11-19T10:00:00+11:00",
    );
    app.post_event("direct", &in_transit).await;
    // (Two events merged in one batch would be one change: let the first one through first.)
    let mut messages = queue.collect(1, Duration::from_secs(20)).await;
    app.post_event("direct", &delivered).await;
    // A courier retry, the same scan by another route, and a scan older than the current one:
    // stored (or not) without changing the shipment's current status, so nobody hears of them.
    app.post_event("direct", &delivered).await;
    app.post_event("direct", &in_transit).await;
    app.post_event("direct", &outdated).await;

    messages.extend(queue.collect(1, Duration::from_secs(20)).await);
    eventually(Duration::from_secs(20), "two deliveries", || async {
        receiver.count() >= 2
    })
    .await;
    // Time must pass to show that no extra delivery follows.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let requests = receiver.received();
    assert_eq!(messages.len(), 2, "one message per change: {messages:?}");
    assert_eq!(requests.len(), 2, "one delivery per change");

    let by_id: BTreeMap<&str, &waybill_e2e::TappedMessage> = messages
        .iter()
        .map(|m| (m.message_id.as_str(), m))
        .collect();
    assert_eq!(by_id.len(), 2, "message ids are distinct");
    let mut routing_keys: Vec<&str> = messages.iter().map(|m| m.routing_key.as_str()).collect();
    routing_keys.sort_unstable();
    assert_eq!(routing_keys, ["acme.delivered", "acme.in_transit"]);
    for message in &messages {
        assert!(message.persistent, "published persistent");
        let body = message.json();
        assert_eq!(body["type"], "shipment.status_changed");
        assert_eq!(body["version"], 1);
        assert_eq!(body["shipment"]["tracking_number"], "FAN001");
        let event_id = body["event_id"].as_str().unwrap();
        let version = body["shipment_version"].as_i64().unwrap();
        assert_eq!(message.message_id, format!("msg_{event_id}_{version}"));
        assert_eq!(
            message.headers["x-waybill-event-type"],
            "shipment.status_changed"
        );
        assert_eq!(message.headers["x-waybill-tenant"], "default");
    }

    // Each HTTP delivery is the topic message's change: same id, byte-identical body, and
    // signed so that an independent Standard Webhooks implementation accepts it.
    for request in &requests {
        assert_eq!(request.path, "/hooks/all");
        let id = request.header("webhook-id");
        let message = by_id.get(id).expect("the webhook-id is the message id");
        assert_eq!(request.body.as_ref(), message.body.as_slice());
        assert_eq!(request.header("content-type"), "application/json");
        assert!(request.header("webhook-signature").starts_with("v1,"));
        request.verify(&secret).expect("the signature verifies");
        let wrong = waybill_worker::fanout::WebhookSecret::generate();
        assert!(
            request.verify(&wrong).is_err(),
            "another secret does not verify"
        );
    }
    let first = requests
        .iter()
        .find(|r| r.json()["new_status"] == "InTransit")
        .unwrap();
    assert!(first.json()["previous_status"].is_null());
    let second = requests
        .iter()
        .find(|r| r.json()["new_status"] == "Delivered")
        .unwrap();
    assert_eq!(second.json()["previous_status"], "InTransit");
    assert_eq!(second.json()["shipment_version"], 2);

    let mut conn = app.db.store().acquire().await.unwrap();
    let backlog = waybill_store::fanout::relay_backlog(&mut conn)
        .await
        .unwrap();
    assert_eq!(backlog, (0, 0), "every row published and fanned out");
    drop(conn);
    queue.close().await;
    app.shutdown().await;
}

#[tokio::test]
async fn downstream_queues_bind_to_what_they_care_about() {
    let app = spawn("").await;
    let delivered_anywhere = app.bind_events("*.delivered").await;
    let acme_only = app.bind_events("acme.#").await;
    post_acme(&app, "BIND1", "InTransit", "2026-11-20T10:00:00Z").await;
    post_direct(&app, "dhl", "BIND2", "Delivered", "2026-11-20T10:00:00Z").await;
    post_acme(&app, "BIND3", "OutForDelivery", "2026-11-20T10:00:00Z").await;
    let delivered = delivered_anywhere.collect(1, Duration::from_secs(20)).await;
    let acme = acme_only.collect(2, Duration::from_secs(20)).await;
    let keys = |messages: &[waybill_e2e::TappedMessage]| {
        let mut keys: Vec<String> = messages.iter().map(|m| m.routing_key.clone()).collect();
        keys.sort();
        keys
    };
    assert_eq!(keys(&delivered), ["dhl.delivered"]);
    assert_eq!(keys(&acme), ["acme.in_transit", "acme.out_for_delivery"]);
    delivered_anywhere.close().await;
    acme_only.close().await;
    app.shutdown().await;
}
