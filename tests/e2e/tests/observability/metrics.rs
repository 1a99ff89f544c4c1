//! `/metrics` moves by exactly what the traffic did.

use crate::helpers::*;

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
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .next()
        .unwrap_or(0.0)
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
    let _serial = crate::exclusive().await;
    let app = spawn_app().await;
    let before = scrape(&app, &app.ingress).await;
    let accepted_before = sample(
        &before,
        "waybill_webhooks_received_total",
        &[("source", "direct"), ("outcome", "accepted")],
    );
    let unauthorized_before = sample(
        &before,
        "waybill_webhooks_received_total",
        &[("source", "direct"), ("outcome", "unauthorized")],
    );
    let unknown_before = sample(
        &before,
        "waybill_webhooks_received_total",
        &[("source", "unknown"), ("outcome", "unknown_source")],
    );
    let new_before = sample(
        &before,
        "waybill_merge_events_total",
        &[("outcome", "new_current")],
    );
    let duplicate_before = sample(
        &before,
        "waybill_merge_events_total",
        &[("outcome", "duplicate")],
    );
    let outdated_before = sample(
        &before,
        "waybill_merge_events_total",
        &[("outcome", "outdated")],
    );
    let unmapped_before = sample(
        &before,
        "waybill_unmapped_status_total",
        &[("profile", "waybill")],
    );

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

    let after = scrape(&app, app.worker()).await;
    let delta =
        |name: &str, labels: &[(&str, &str)], before: f64| sample(&after, name, labels) - before;
    assert_eq!(
        delta(
            "waybill_webhooks_received_total",
            &[("source", "direct"), ("outcome", "accepted")],
            accepted_before
        ),
        10.0
    );
    assert_eq!(
        delta(
            "waybill_webhooks_received_total",
            &[("source", "direct"), ("outcome", "unauthorized")],
            unauthorized_before
        ),
        1.0
    );
    assert_eq!(
        delta(
            "waybill_webhooks_received_total",
            &[("source", "unknown"), ("outcome", "unknown_source")],
            unknown_before
        ),
        1.0
    );
    assert_eq!(
        delta(
            "waybill_merge_events_total",
            &[("outcome", "new_current")],
            new_before
        ),
        4.0
    );
    assert_eq!(
        delta(
            "waybill_merge_events_total",
            &[("outcome", "outdated")],
            outdated_before
        ),
        3.0
    );
    assert_eq!(
        delta(
            "waybill_merge_events_total",
            &[("outcome", "duplicate")],
            duplicate_before
        ),
        3.0
    );
    assert_eq!(
        delta(
            "waybill_unmapped_status_total",
            &[("profile", "waybill")],
            unmapped_before
        ),
        1.0
    );
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
