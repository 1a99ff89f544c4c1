//! Metrics and traces of a real pipeline run. Its own test binary: the metrics recorder and the
//! tracing subscriber are process-wide, so no other test may add to them.

#[path = "../pipeline/helpers.rs"]
#[allow(dead_code)]
mod helpers;

#[path = "../polling/helpers.rs"]
#[allow(dead_code)]
mod polling_helpers;

mod metrics;

/// Installs the recorder and the subscriber before any test sends traffic, and runs the tests
/// of this binary one at a time: they read process-wide counters and spans.
async fn exclusive() -> tokio::sync::MutexGuard<'static, ()> {
    static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    let _ = traces::exporter();
    SERIAL.lock().await
}
mod traces;

/// Subscribes `url` to every change of the default tenant, in the app's database.
async fn subscribe(app: &helpers::TestApp, url: &str) {
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
