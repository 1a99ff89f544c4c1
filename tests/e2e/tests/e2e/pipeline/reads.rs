//! The shipments API reads through a pool of its own (`database.api_connections`): a worker
//! whose merge connections are all taken, as batches take them under a backlog, still answers.

use std::time::Duration;

use serde_json::Value;

use super::helpers::*;

/// Less than the pool's acquire timeout (5 s), after which a read that waited for a merge
/// connection would be answered 503.
const READ_WAIT: Duration = Duration::from_secs(3);

#[tokio::test]
async fn shipments_are_read_while_every_merge_connection_is_taken() {
    let app = spawn_app().await;
    let body = fixture("starshipit", "support-article.json");
    assert_eq!(app.post_signed("starshipit", &body).await.status(), 200);
    app.wait_for_shipment("starshipit", "QQQ001737901000931501", |_| true)
        .await;

    let merges = app.worker_handles[0].store();
    let mut taken = Vec::new();
    for _ in 0..app.settings.database.max_connections {
        taken.push(merges.acquire().await.expect("a merge connection"));
    }

    let shipment = tokio::time::timeout(
        READ_WAIT,
        app.shipment("starshipit", "QQQ001737901000931501"),
    )
    .await
    .expect("the history is read without waiting for a merge connection")
    .expect("the shipment is found");
    assert_eq!(shipment["history"].as_array().map(Vec::len), Some(1));

    let order = shipment["order_number"]
        .as_str()
        .expect("the sample has an order number");
    let by_order = tokio::time::timeout(
        READ_WAIT,
        app.http
            .get(format!(
                "{}/v1/shipments?order_number={order}",
                app.workers[0]
            ))
            .send(),
    )
    .await
    .expect("the order is read without waiting for a merge connection")
    .expect("worker reachable");
    assert_eq!(by_order.status(), 200);
    let found: Value = by_order.json().await.expect("JSON");
    assert_eq!(
        found["shipments"][0]["tracking_number"],
        "QQQ001737901000931501"
    );

    drop(taken);
    app.shutdown().await;
}
