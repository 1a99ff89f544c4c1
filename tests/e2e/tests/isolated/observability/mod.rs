//! Metrics and traces of a real pipeline run. In the `isolated` test binary: the metrics
//! recorder and the tracing subscriber are process-wide, so no other suite may add to them.

mod helpers {
    pub use waybill_e2e::sources::*;
    pub use waybill_e2e::{Receiver, Reply, TestApp, eventually, eventually_or};
}

mod metrics;

/// Installs the recorder and the subscriber before any test sends traffic, and runs the tests
/// of this binary one at a time: they read process-wide counters and spans.
async fn exclusive() -> tokio::sync::MutexGuard<'static, ()> {
    let _ = traces::exporter();
    crate::alone().await
}
mod traces;

/// Subscribes `url` to every change of the default tenant, in the app's database.
async fn subscribe(app: &waybill_e2e::TestApp, url: &str) {
    use waybill_store::fanout::{self, NewSubscription, SecretText};
    let mut conn = app.db.store().acquire().await.expect("connection");
    fanout::insert_subscription(
        &mut conn,
        &NewSubscription {
            tenant: &waybill_core::TenantId::default_tenant(),
            url,
            description: "observability",
            carriers: &[],
            statuses: &[],
            secret: &SecretText::new(waybill_worker::fanout::WebhookSecret::generate()),
        },
    )
    .await
    .expect("subscription");
}
