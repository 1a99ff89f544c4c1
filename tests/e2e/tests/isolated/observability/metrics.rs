//! `/metrics` moves by exactly what the traffic did.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::http::{HeaderMap, StatusCode};
use waybill_store::fanout::{self, DeliveryStatus};

use super::helpers::*;

/// The value of the first sample of `name` whose labels include all of `labels`.
pub fn sample(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    text.lines()
        .filter(|line| line.starts_with(name) && !line.starts_with('#'))
        .filter(|line| {
            let rest = &line[name.len()..];
            (rest.starts_with('{') || rest.starts_with(' '))
                && labels
                    .iter()
                    .all(|(key, value)| rest.contains(&format!("{key}=\"{value}\"")))
        })
        .find_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .unwrap_or(0.0)
}

/// Each counter the traffic below moves: its name, the labels of its sample (`key=value`,
/// comma-separated), and by how much it moves.
const MOVES: [(&str, &str, f64); 11] = [
    (
        "waybill_webhooks_received_total",
        "source=direct,outcome=accepted",
        10.0,
    ),
    (
        "waybill_webhooks_received_total",
        "source=direct,outcome=unauthorized",
        1.0,
    ),
    (
        "waybill_webhooks_received_total",
        "source=unknown,outcome=unknown_source",
        1.0,
    ),
    ("waybill_merge_events_total", "outcome=new_current", 4.0),
    ("waybill_merge_events_total", "outcome=outdated", 3.0),
    ("waybill_merge_events_total", "outcome=duplicate", 3.0),
    ("waybill_unmapped_status_total", "profile=waybill", 1.0),
    ("waybill_outbox_published_total", "", 4.0),
    ("waybill_deliveries_created_total", "", 4.0),
    (
        "waybill_webhook_attempts_total",
        "outcome=retry,attempt=1",
        4.0,
    ),
    (
        "waybill_webhook_attempts_total",
        "outcome=delivered,attempt=2",
        4.0,
    ),
];

/// The sample of a `MOVES` counter in `text`.
fn moved(text: &str, name: &str, labels: &str) -> f64 {
    let labels: Vec<(&str, &str)> = labels
        .split(',')
        .filter_map(|label| label.split_once('='))
        .collect();
    sample(text, name, &labels)
}

async fn scrape(app: &TestApp, base: &str) -> String {
    app.http
        .get(format!("{base}/metrics"))
        .send()
        .await
        .expect("metrics reachable")
        .text()
        .await
        .expect("metrics text")
}

#[tokio::test]
async fn counters_move_by_what_the_traffic_did() {
    let _serial = super::exclusive().await;
    let app = TestApp::builder()
        .couriers()
        .config("[fanout]\nallowed_hosts = [\"127.0.0.1\"]\nretry_schedule = [\"0s\", \"100ms\", \"100ms\"]\nretry_jitter = 0.0\nrelay_interval_ms = 20\ndelivery_interval_ms = 50\n")
        .start()
        .await;
    // A subscriber that answers 500 to the first attempt of each change and 204 to the next.
    let receiver = fail_first_receiver().await;
    super::subscribe(&app, &receiver).await;
    let before = scrape(&app, &app.ingress).await;
    let before: Vec<f64> = MOVES
        .iter()
        .map(|(name, labels, _)| moved(&before, name, labels))
        .collect();

    // Three shipments, each: a newer scan, then an older one (outdated), then the newer again
    // (a duplicate that reaches the worker: same bytes, new signature, new envelope).
    for n in 0..3 {
        let newer = direct_event(
            &format!("MET{n}"),
            "OutForDelivery",
            "2026-06-01T10:00:00Z",
            "A",
        );
        let older = direct_event(&format!("MET{n}"), "InTransit", "2026-06-01T08:00:00Z", "B");
        assert_eq!(app.post_signed("direct", &newer).await.status(), 200);
        app.wait_for_shipment("acme", &format!("MET{n}"), |s| s["version"] == 1)
            .await;
        assert_eq!(app.post_signed("direct", &older).await.status(), 200);
        assert_eq!(app.post_signed("direct", &newer).await.status(), 200);
    }
    // One unmapped raw status: accepted, stored as Unknown, counted.
    let odd = direct_event("MET-ODD", "TELEPORTED", "2026-06-01T09:00:00Z", "C");
    assert_eq!(app.post_signed("direct", &odd).await.status(), 200);
    let body = direct_event("MET9", "InTransit", "2026-06-01T08:00:00Z", "B");
    assert_eq!(
        app.post_webhook(
            "direct",
            &body,
            &[("waybill-signature", "t=1,v1=00".to_owned())]
        )
        .await
        .status(),
        401
    );
    assert_eq!(
        app.post_webhook("nobody-here", &body, &[]).await.status(),
        404
    );
    app.drain().await;
    for n in 0..3 {
        app.wait_for_shipment("acme", &format!("MET{n}"), |s| {
            s["history"].as_array().map_or(0, Vec::len) == 2
        })
        .await;
    }
    app.wait_for_shipment("acme", "MET-ODD", |s| s["status"] == "Unknown")
        .await;
    // Four changes (three first scans and the unmapped one), each delivered on its 2nd attempt.
    eventually(
        Duration::from_secs(20),
        "4 deliveries delivered",
        async || {
            let mut conn = app.db.store().acquire().await.expect("connection");
            let delivered = fanout::count_deliveries(&mut conn, DeliveryStatus::Delivered)
                .await
                .expect("count");
            delivered == 4
        },
    )
    .await;

    let after = scrape(&app, app.worker()).await;
    for ((name, labels, by), before) in MOVES.iter().zip(before) {
        assert_eq!(
            moved(&after, name, labels) - before,
            *by,
            "{name} {{{labels}}}"
        );
    }
    assert!(
        after.contains("waybill_webhook_ack_seconds_bucket"),
        "ack latency histogram exported"
    );
    assert!(
        after.contains("waybill_publish_confirm_seconds_bucket"),
        "confirm latency histogram exported"
    );
    app.shutdown().await;
}

/// A local subscriber: `500` to the first request of each `webhook-id`, `204` afterwards.
async fn fail_first_receiver() -> String {
    let seen: Arc<Mutex<HashSet<String>>> = Arc::default();
    let app = axum::Router::new().fallback(move |headers: HeaderMap| {
        let seen = Arc::clone(&seen);
        async move {
            let id = headers
                .get("webhook-id")
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_owned();
            if seen.lock().unwrap().insert(id) {
                StatusCode::INTERNAL_SERVER_ERROR
            } else {
                StatusCode::NO_CONTENT
            }
        }
    });
    let addr = waybill_e2e::serve(app).await.expect("serve the receiver");
    format!("http://{addr}/hook")
}
