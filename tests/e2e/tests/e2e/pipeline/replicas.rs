//! Several workers on one queue reach the same state as one.

use super::helpers::*;

#[tokio::test]
async fn two_workers_racing_reach_the_same_state_as_one() {
    let app = app().workers(2).start().await;
    // 30 shipments × 6 scans, posted in a scrambled order, each scan twice.
    let statuses = [
        "InfoReceived",
        "InTransit",
        "InTransit",
        "OutForDelivery",
        "AttemptFail",
        "Delivered",
    ];
    let mut bodies = Vec::new();
    for shipment in 0..30 {
        for (step, status) in statuses.iter().enumerate() {
            let at = format!("2026-05-01T{:02}:00:00Z", 8 + step);
            let body = direct_event(
                &format!("RACE{shipment}"),
                status,
                &at,
                &format!("hub {step}"),
            );
            bodies.push(body.clone());
            bodies.push(body);
        }
    }
    // A deterministic scramble: reverse pairs of thirds.
    bodies.reverse();
    let mut handles = Vec::new();
    for chunk in bodies.chunks(30) {
        let chunk = chunk.to_vec();
        let ingress = app.ingress.clone();
        let http = app.http.clone();
        handles.push(tokio::spawn(async move {
            for body in chunk {
                let headers = sign("direct", &body);
                let mut request = http
                    .post(format!("{ingress}/v1/webhooks/direct"))
                    .body(body);
                for (name, value) in headers {
                    request = request.header(name, value);
                }
                let response = request.send().await.expect("ingress reachable");
                assert_eq!(response.status(), 200);
            }
        }));
    }
    for handle in handles {
        handle.await.expect("poster");
    }
    app.drain().await;
    for shipment in 0..30 {
        let found = app
            .wait_for_shipment("acme", &format!("RACE{shipment}"), |s| {
                s["history"].as_array().map_or(0, Vec::len) == 6
            })
            .await;
        assert_eq!(found["status"], "Delivered", "{found}");
        let version = found["version"].as_i64().expect("version");
        assert!(
            (1..=6).contains(&version),
            "version counts current-event changes: {found}"
        );
    }
    app.shutdown().await;
}
