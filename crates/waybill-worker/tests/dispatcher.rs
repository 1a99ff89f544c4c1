//! How far ahead the delivery dispatcher claims a subscription: twice its
//! `concurrency_per_subscription` until the subscription has answered promptly, eight times
//! after; a receiver answering slowly keeps the shorter queue.
//!
//! Needs Postgres (`WAYBILL_TEST_DATABASE_URL`); the receivers are axum servers on 127.0.0.1.

use std::sync::Arc;
use std::time::Duration;

use axum::http::StatusCode;
use waybill_config::FanoutSettings;
use waybill_core::TenantId;
use waybill_store::fanout::{self, NewSubscription, SecretText};
use waybill_store::testing::TestDatabase;
use waybill_worker::fanout::{Dispatcher, WebhookSecret};
use waybill_worker::poll::SystemClock;

/// A receiver answering 204 after `delay`; returns its URL.
async fn receiver(delay: Duration) -> String {
    let app = axum::Router::new().fallback(move || async move {
        tokio::time::sleep(delay).await;
        StatusCode::NO_CONTENT
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    url
}

/// A subscription to `url` with `pending` deliveries due; returns the database.
async fn subscription_with_backlog(url: &str, pending: i64) -> TestDatabase {
    let db = TestDatabase::create(&TestDatabase::admin_url())
        .await
        .unwrap();
    let mut conn = db.store().acquire().await.unwrap();
    let subscription = fanout::insert_subscription(
        &mut conn,
        &NewSubscription {
            tenant: &TenantId::default_tenant(),
            url,
            description: "test",
            carriers: &[],
            statuses: &[],
            secret: &SecretText::new(WebhookSecret::generate()),
        },
    )
    .await
    .unwrap();
    drop(conn);
    db.add_due_deliveries(subscription.id, pending)
        .await
        .unwrap();
    db
}

/// How many deliveries two dispatch rounds claim, the second after the first's requests were
/// answered.
async fn claimed_by_two_rounds(answer_after: Duration) -> (usize, usize) {
    let url = receiver(answer_after).await;
    let db = subscription_with_backlog(&url, 100).await;
    let settings = FanoutSettings {
        allowed_hosts: vec!["127.0.0.1".to_owned()],
        concurrency_per_subscription: 2,
        ..FanoutSettings::default()
    };
    let dispatcher = Dispatcher::new(db.store().clone(), &settings, Arc::new(SystemClock)).unwrap();
    let first = dispatcher.dispatch_once().await.unwrap();
    dispatcher.wait_idle().await;
    let second = dispatcher.dispatch_once().await.unwrap();
    dispatcher.wait_idle().await;
    db.drop_database().await.unwrap();
    (first.claimed, second.claimed)
}

#[tokio::test]
async fn a_prompt_receiver_is_claimed_further_ahead_and_a_slow_one_is_not() {
    // Two in flight, as many again queued; once it has answered promptly, eight times two.
    assert_eq!(claimed_by_two_rounds(Duration::ZERO).await, (4, 16));
    // A 2xx after 600 ms is not prompt: the queue stays at twice the limit.
    assert_eq!(
        claimed_by_two_rounds(Duration::from_millis(600)).await,
        (4, 4)
    );
}
