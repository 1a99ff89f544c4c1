//! The happy paths: a registered shipment is polled; a scan seen by webhook and by poll, in
//! either order, is stored once.

use std::time::Duration;

use serde_json::json;

use super::helpers::*;

const TN: &str = "T01234567890";

fn events(shipment: &serde_json::Value) -> usize {
    shipment["history"].as_array().map_or(0, Vec::len)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registered_shipment_without_webhooks_is_polled_and_updated() {
    let courier = starshipit_courier().await;
    let app = spawn_ssi_app(1, &courier, "poll_only", "").await;

    let response = app
        .register(&json!({"source": "ssi", "tracking_number": TN, "order_number": "12345678"}))
        .await;
    assert_eq!(response.status(), 202);
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["shipments"][0]["carrier"], "starshipit");
    assert_eq!(body["shipments"][0]["source"], "ssi");

    let shipment = app
        .wait_for_shipment_within("starshipit", TN, Duration::from_secs(20), |s| {
            s["status"] == "InTransit"
        })
        .await;
    assert_eq!(
        events(&shipment),
        3,
        "two history scans and the current status"
    );
    assert!(
        shipment["history"]
            .as_array()
            .unwrap()
            .iter()
            .all(|event| event["origin"] == "poll")
    );
    let requests = courier.requests();
    assert_eq!(requests.len(), 1);
    assert_eq!(requests[0].headers["starshipit-api-key"], "ssi-key");
    assert_eq!(requests[0].headers["ocp-apim-subscription-key"], "ssi-sub");
    assert!(requests[0].uri.starts_with("/api/track?tracking_number="));

    // The next poll is the regular interval away (2 h, no jitter in these tests).
    let schedule = app.schedule("starshipit", TN).await;
    let next = schedule.next_poll_at.expect("still polled");
    let in_two_hours = chrono::Utc::now() + chrono::Duration::hours(2);
    assert!((next - in_two_hours).num_seconds().abs() < 60, "{next}");
    assert_eq!((schedule.poll_failures, schedule.slot), (0, None));
    assert!(schedule.last_polled_at.is_some());
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_then_poll_of_the_same_scan_stores_one_event() {
    let courier = starshipit_courier().await;
    // Polls every 2 s, so the poll after the webhook comes quickly.
    let every_2_s = "[polling.intervals]\ninterval_secs = 2\nbefore_first_scan_interval_secs = 2";
    let app = spawn_ssi_app(1, &courier, "hybrid", every_2_s).await;
    post_captured_webhook(&app).await;
    let shipment = app
        .wait_for_shipment_within("starshipit", TN, Duration::from_secs(10), |s| {
            events(s) == 1
        })
        .await;
    let webhooked = shipment["current_event_id"].clone();

    // The webhook pushed the first poll out by the interval; then the poll brings the history.
    let shipment = app
        .wait_for_shipment_within("starshipit", TN, Duration::from_secs(20), |s| {
            events(s) >= 3
        })
        .await;
    assert_eq!(
        events(&shipment),
        3,
        "the webhooked scan is not stored twice"
    );
    assert_eq!(shipment["current_event_id"], webhooked);
    let current = shipment["history"]
        .as_array()
        .unwrap()
        .iter()
        .find(|event| event["event_id"] == webhooked)
        .unwrap();
    assert_eq!(current["origin"], "webhook", "the first arrival is kept");
    assert!(!courier.requests().is_empty());
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poll_then_webhook_of_the_same_scan_stores_one_event() {
    let courier = starshipit_courier().await;
    let app = spawn_ssi_app(1, &courier, "hybrid", "").await;
    app.register_ok(&json!({"carrier": "starshipit", "tracking_number": TN}))
        .await;
    let polled = app
        .wait_for_shipment_within("starshipit", TN, Duration::from_secs(20), |s| {
            events(s) == 3
        })
        .await;
    assert_eq!(
        app.schedule("starshipit", TN).await.source.as_deref(),
        Some("ssi")
    );

    post_captured_webhook(&app).await;
    // The webhook is merged (it refreshes last_webhook_at) but adds no event and no version.
    eventually(
        Duration::from_secs(10),
        "the expected poll outcome",
        async || {
            let row: (Option<chrono::DateTime<chrono::Utc>>,) =
                sqlx::query_as("select last_webhook_at from shipments where tracking_number = $1")
                    .bind(TN)
                    .fetch_one(app.db.store().pool())
                    .await
                    .unwrap();
            row.0
        },
    )
    .await;
    let after = app.shipment("starshipit", TN).await.unwrap();
    assert_eq!(events(&after), 3);
    assert_eq!(after["version"], polled["version"]);
    assert_eq!(after["current_event_id"], polled["current_event_id"]);
    app.shutdown().await;
}
