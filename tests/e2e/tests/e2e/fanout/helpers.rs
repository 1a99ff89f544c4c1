//! The fan-out suite's app (fast relay and delivery loops, a short retry schedule, 127.0.0.1
//! allowed), built by `waybill_e2e::TestApp::builder`; its receivers are
//! `waybill_e2e::Receiver`s and its downstream queues `waybill_e2e::Tap`s.

use std::time::Duration;

use waybill_store::fanout::DeliveryStatus;

pub use waybill_e2e::sources::{direct_source, event};
pub use waybill_e2e::{Receiver, Reply, TestApp, eventually};

/// The `[fanout]` section every test app starts from; tests change keys of it.
const FAST_FANOUT: &str = r#"
[fanout]
relay_interval_ms = 20
delivery_interval_ms = 20
retry_schedule = ["0ms", "150ms", "150ms"]
retry_jitter = 0.0
request_timeout_ms = 2000
connect_timeout_ms = 1000
allowed_hosts = ["127.0.0.1"]
"#;

/// An app whose `[fanout]` is [`FAST_FANOUT`] with the keys `fanout_toml` sets, and one worker.
pub async fn spawn(fanout_toml: &str) -> TestApp {
    builder(fanout_toml).start().await
}

/// The same app with no worker yet (start them with `TestApp::start_worker`).
pub async fn spawn_without_workers(fanout_toml: &str) -> TestApp {
    builder(fanout_toml).workers(0).start().await
}

fn builder(fanout_toml: &str) -> waybill_e2e::AppBuilder {
    TestApp::builder()
        .config("[worker]\nshutdown_grace_ms = 5000\n[polling]\nenabled = false")
        .config(FAST_FANOUT)
        .config(&format!("[fanout]\n{fanout_toml}"))
        .config(&direct_source("direct", "default"))
        .config(&direct_source("globex", "globex"))
}

/// A receiver answering `script` in turn (then 200), subscribed at `path` to every change of
/// the default tenant; with the subscription's id and secret.
pub async fn subscribed(app: &TestApp, script: Vec<Reply>, path: &str) -> (Receiver, i64, String) {
    let receiver = Receiver::start(script).await;
    let (id, secret) = app.subscribe(&receiver.url(path), &[], &[]).await;
    (receiver, id, secret)
}

/// Posts a scan of carrier `acme` to the `direct` source (default tenant), expecting 200.
pub async fn post_acme(app: &TestApp, tracking_number: &str, status: &str, occurred_at: &str) {
    post_direct(app, "acme", tracking_number, status, occurred_at).await;
}

/// Posts a scan of `carrier` to the `direct` source (default tenant), expecting 200.
pub async fn post_direct(
    app: &TestApp,
    carrier: &str,
    tracking_number: &str,
    status: &str,
    occurred_at: &str,
) {
    app.post_event(
        "direct",
        &event(carrier, tracking_number, status, occurred_at),
    )
    .await;
}

/// Waits until `receiver` has had `requests` requests, within the suite's 20 s.
pub async fn received(receiver: &Receiver, requests: usize) {
    received_within(receiver, requests, Duration::from_secs(20)).await;
}

/// Waits up to `within` until `receiver` has had `requests` requests.
pub async fn received_within(receiver: &Receiver, requests: usize, within: Duration) {
    let what = format!("{requests} requests at {}", receiver.url(""));
    eventually(within, &what, || async { receiver.count() == requests }).await;
}

/// Waits until the first delivery of `subscription` has `status`.
pub async fn first_delivery_reaches(app: &TestApp, subscription: i64, status: DeliveryStatus) {
    let what = format!("the first delivery of {subscription} is {status:?}");
    eventually(Duration::from_secs(20), &what, async || {
        app.deliveries(subscription)
            .await
            .first()
            .is_some_and(|d| d.status == status)
    })
    .await;
}

/// Waits until `subscription` is disabled.
pub async fn disabled(app: &TestApp, subscription: i64) {
    eventually(
        Duration::from_secs(20),
        "the subscription disabled",
        async || !app.listed(subscription).await.enabled,
    )
    .await;
}
