//! The happy paths: every built-in sample flows through; duplicates and old scans change nothing.

use serde_json::Value;

use super::helpers::*;

fn statuses(shipment: &Value) -> Vec<String> {
    shipment["history"]
        .as_array()
        .expect("history array")
        .iter()
        .map(|event| event["status"].as_str().expect("status").to_owned())
        .collect()
}

fn history_len(shipment: &Value) -> usize {
    shipment["history"].as_array().map_or(0, Vec::len)
}

#[tokio::test]
async fn every_builtin_sample_is_accepted_and_visible() {
    let app = spawn_app().await;
    // (source, fixture, carrier, tracking number, expected current status, expected events)
    let cases = [
        (
            "starshipit",
            "support-article.json",
            "starshipit",
            "QQQ001737901000931501",
            "InTransit",
            1,
        ),
        (
            "starshipit",
            "captured-real.json",
            "starshipit",
            "T01234567890",
            "InTransit",
            1,
        ),
        (
            "clickpost",
            "all-status-out-for-delivery.json",
            "clickpost",
            "P0109276342",
            "OutForDelivery",
            1,
        ),
        (
            "clickpost",
            "failed-delivery-ndr.json",
            "clickpost",
            "XYZABC",
            "AttemptFail",
            1,
        ),
        (
            "clickpost",
            "selected-event-delivered.json",
            "clickpost",
            "420714276075",
            "Delivered",
            1,
        ),
        (
            "aftership",
            "webhook-2026-07.json",
            "aftership",
            "0000000000000000",
            "InTransit",
            1,
        ),
        (
            "clickpost",
            "wrapped-payload.json",
            "clickpost",
            "420714276075",
            "Delivered",
            1,
        ),
        (
            "easypost",
            "event-body.json",
            "easypost",
            "1",
            "InTransit",
            7,
        ),
    ];
    for (source, file, carrier, tracking_number, status, events) in cases {
        let body = fixture(source, file);
        let response = app.post_signed(source, &body).await;
        assert_eq!(
            response.status(),
            200,
            "{source}/{file}: {}",
            response.text().await.unwrap_or_default()
        );
        let shipment = app
            .wait_for_shipment(carrier, tracking_number, |s| history_len(s) == events)
            .await;
        assert_eq!(shipment["status"], status, "{source}/{file}: {shipment}");
        for event in shipment["history"].as_array().expect("history") {
            assert!(
                event["raw_status"]["code"].is_string(),
                "raw status kept beside the canonical one: {event}"
            );
        }
    }
    app.shutdown().await;
}

#[tokio::test]
async fn the_same_webhook_five_times_is_one_event() {
    let app = spawn_app().await;
    let body = fixture("starshipit", "support-article.json");
    for _ in 0..5 {
        assert_eq!(app.post_signed("starshipit", &body).await.status(), 200);
    }
    app.drain().await;
    let shipment = app
        .wait_for_shipment("starshipit", "QQQ001737901000931501", |_| true)
        .await;
    assert_eq!(history_len(&shipment), 1, "{shipment}");
    assert_eq!(shipment["version"], 1);
    app.shutdown().await;
}

#[tokio::test]
async fn an_older_scan_after_delivery_lands_in_history_without_regressing() {
    let app = spawn_app().await;
    let delivered = direct_event("ORDER1", "Delivered", "2026-03-02T10:00:00Z", "Sydney");
    let older = direct_event("ORDER1", "InTransit", "2026-03-01T08:00:00Z", "Melbourne");
    assert_eq!(app.post_signed("direct", &delivered).await.status(), 200);
    app.wait_for_shipment("acme", "ORDER1", |s| s["status"] == "Delivered")
        .await;
    assert_eq!(app.post_signed("direct", &older).await.status(), 200);
    let shipment = app
        .wait_for_shipment("acme", "ORDER1", |s| history_len(s) == 2)
        .await;
    assert_eq!(shipment["status"], "Delivered");
    // History is newest first.
    assert_eq!(statuses(&shipment), vec!["Delivered", "InTransit"]);
    assert_eq!(shipment["version"], 1);
    app.shutdown().await;
}

#[tokio::test]
async fn a_scan_pushed_and_seen_again_in_a_later_batch_is_stored_once() {
    let app = spawn_app().await;
    let first = serde_json::json!([
        {"carrier": "acme", "tracking_number": "BATCH1", "status": "InTransit", "raw_status": "DEP",
         "occurred_at": "2026-03-01T08:00:00Z", "location": "Perth"}
    ]);
    let later = serde_json::json!([
        {"carrier": "acme", "tracking_number": "BATCH1", "status": "InTransit", "raw_status": "DEP",
         "occurred_at": "2026-03-01T08:00:00Z", "location": "Perth"},
        {"carrier": "acme", "tracking_number": "BATCH1", "status": "OutForDelivery", "raw_status": "OFD",
         "occurred_at": "2026-03-02T07:00:00Z", "location": "Adelaide"}
    ]);
    assert_eq!(
        app.post_signed("direct", &serde_json::to_vec(&first).unwrap())
            .await
            .status(),
        200
    );
    app.wait_for_shipment("acme", "BATCH1", |s| history_len(s) == 1)
        .await;
    assert_eq!(
        app.post_signed("direct", &serde_json::to_vec(&later).unwrap())
            .await
            .status(),
        200
    );
    app.drain().await;
    let shipment = app
        .wait_for_shipment("acme", "BATCH1", |s| s["status"] == "OutForDelivery")
        .await;
    assert_eq!(history_len(&shipment), 2, "{shipment}");
    assert_eq!(shipment["version"], 2);
    app.shutdown().await;
}

#[tokio::test]
async fn shipments_are_found_by_order_number() {
    let app = spawn_app().await;
    let body = fixture("starshipit", "support-article.json");
    assert_eq!(app.post_signed("starshipit", &body).await.status(), 200);
    app.wait_for_shipment("starshipit", "QQQ001737901000931501", |_| true)
        .await;
    let found: Value = app
        .http
        .get(format!(
            "{}/v1/shipments?order_number=5567476",
            app.worker()
        ))
        .send()
        .await
        .expect("worker reachable")
        .json()
        .await
        .expect("JSON");
    let shipments = found["shipments"].as_array().expect("shipments array");
    assert_eq!(shipments.len(), 1, "{found}");
    assert_eq!(shipments[0]["tracking_number"], "QQQ001737901000931501");
    app.shutdown().await;
}
