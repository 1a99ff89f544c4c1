//! Sources that require registration park events until the shipment is registered.

use waybill_core::{CarrierCode, TenantId, TrackingNumber};
use waybill_store::{InboundBatch, Registration};

use super::helpers::*;

#[tokio::test]
async fn unmatched_events_are_parked_and_applied_on_registration() {
    let app = spawn_app().await;
    let body = direct_event(
        "PARKED1",
        "OutForDelivery",
        "2026-04-01T09:00:00Z",
        "Brisbane",
    );
    assert_eq!(
        app.post_signed("registered-only", &body).await.status(),
        200
    );
    app.drain().await;
    assert!(
        app.shipment("acme", "PARKED1").await.is_none(),
        "an unregistered shipment must not be created"
    );

    // Register as `waybill shipments register` does.
    let registration = Registration {
        tenant: TenantId::default_tenant(),
        source: None,
        carrier: CarrierCode::parse("acme").unwrap(),
        tracking_number: TrackingNumber::parse("PARKED1").unwrap(),
        order_number: Some("ORD-77".to_owned()),
        metadata: serde_json::json!({}),
    };
    let store = waybill_store::Store::connect(app.db.url(), 2)
        .await
        .expect("connect");
    let mut tx = store.begin().await.expect("begin");
    waybill_store::apply_batch(
        &mut tx,
        &InboundBatch {
            items: vec![],
            registrations: vec![registration],
        },
    )
    .await
    .expect("register");
    tx.commit().await.expect("commit");

    let shipment = app
        .wait_for_shipment("acme", "PARKED1", |s| s["status"] == "OutForDelivery")
        .await;
    assert_eq!(shipment["order_number"], "ORD-77");
    assert_eq!(shipment["history"].as_array().map_or(0, Vec::len), 1);

    // Later events for the now-registered shipment apply directly.
    let later = direct_event("PARKED1", "Delivered", "2026-04-01T15:00:00Z", "Brisbane");
    assert_eq!(
        app.post_signed("registered-only", &later).await.status(),
        200
    );
    app.wait_for_shipment("acme", "PARKED1", |s| s["status"] == "Delivered")
        .await;
    app.shutdown().await;
}
