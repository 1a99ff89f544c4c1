//! Webhook deliveries per second to a local receiver: seeds a fresh database with N changes
//! (through the real `apply_batch`, so real outbox rows) for S subscriptions pointing at an
//! axum receiver on 127.0.0.1 that answers 204 at once, fans them out into N × S deliveries,
//! then runs one dispatcher (signing, POSTing, recording each outcome in Postgres) until every
//! delivery is delivered, and prints the rate. The receiver shares the machine's cores.
//!
//! ```text
//! cargo run --release -p waybill-worker --example fanout_bench -- [changes] [subscriptions] [concurrency] [per_subscription]
//! ```
//!
//! Needs Postgres (`WAYBILL_TEST_DATABASE_URL`, default `postgres://postgres@127.0.0.1:5432/postgres`).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use axum::http::StatusCode;
use chrono::{TimeZone, Utc};
use tokio_util::sync::CancellationToken;
use waybill_config::FanoutSettings;
use waybill_core::{
    CarrierCode, RawStatus, SourceId, Status, TenantId, TrackingEventDraft, TrackingNumber,
};
use waybill_store::fanout::{self, DeliveryStatus, NewSubscription, SecretText};
use waybill_store::testing::TestDatabase;
use waybill_store::{InboundBatch, InboundItem};
use waybill_worker::fanout::{Dispatcher, WebhookSecret};
use waybill_worker::poll::SystemClock;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let mut next = |default: usize| -> anyhow::Result<usize> {
        Ok(args
            .next()
            .map(|a| a.parse())
            .transpose()?
            .unwrap_or(default))
    };
    let changes = next(10_000)?;
    let subscriptions = next(2)?;
    let concurrency = next(64)?;
    let per_subscription = next(32)?;
    let admin = std::env::var("WAYBILL_TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned());
    let db = TestDatabase::create_with_pool(&admin, 16).await?;

    // The receiver: counts and answers 204.
    let received = Arc::new(AtomicU64::new(0));
    let counter = Arc::clone(&received);
    let app = axum::Router::new().fallback(move || {
        let counter = Arc::clone(&counter);
        async move {
            counter.fetch_add(1, Ordering::Relaxed);
            StatusCode::NO_CONTENT
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let receiver = format!("http://{}/hook", listener.local_addr()?);
    tokio::spawn(async move { axum::serve(listener, app).await });

    let tenant = TenantId::default_tenant();
    {
        let mut conn = db.store().acquire().await?;
        for _ in 0..subscriptions {
            fanout::insert_subscription(
                &mut conn,
                &NewSubscription {
                    tenant: &tenant,
                    url: &receiver,
                    description: "bench",
                    carriers: &[],
                    statuses: &[],
                    secret: &SecretText::new(WebhookSecret::generate()),
                },
            )
            .await?;
        }
    }
    seed(&db, &tenant, changes).await?;
    let fan_out_started = Instant::now();
    let mut created = 0;
    loop {
        let mut tx = db.store().begin().await?;
        let report = fanout::fan_out_pending(&mut tx, 500, Utc::now()).await?;
        tx.commit().await?;
        created += report.deliveries;
        if report.rows == 0 {
            break;
        }
    }
    let fan_out = fan_out_started.elapsed();

    let settings = FanoutSettings {
        allowed_hosts: vec!["127.0.0.1".to_owned()],
        concurrency,
        concurrency_per_subscription: per_subscription,
        delivery_interval_ms: 10,
        ..FanoutSettings::default()
    };
    let dispatcher = Dispatcher::new(db.store().clone(), &settings, Arc::new(SystemClock))?;
    let shutdown = CancellationToken::new();
    let started = Instant::now();
    let running = tokio::spawn(dispatcher.run(shutdown.clone()));
    loop {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let mut conn = db.store().acquire().await?;
        let delivered = fanout::count_deliveries(&mut conn, DeliveryStatus::Delivered).await?;
        if delivered >= created {
            break;
        }
        anyhow::ensure!(
            started.elapsed() < Duration::from_secs(600),
            "only {delivered} of {created} delivered after 10 minutes"
        );
    }
    let elapsed = started.elapsed();
    shutdown.cancel();
    running.await?;
    println!(
        "fan-out: {changes} changes × {subscriptions} subscriptions = {created} deliveries created in {:.2} s ({:.0} deliveries/s)",
        fan_out.as_secs_f64(),
        created as f64 / fan_out.as_secs_f64()
    );
    println!(
        "delivery: {created} signed POSTs to 127.0.0.1 recorded in Postgres in {:.2} s = {:.0} deliveries/s \
         (concurrency {concurrency}, {per_subscription} per subscription; receiver saw {})",
        elapsed.as_secs_f64(),
        created as f64 / elapsed.as_secs_f64(),
        received.load(Ordering::Relaxed)
    );
    db.drop_database().await?;
    Ok(())
}

/// Writes `changes` first events of as many shipments through `apply_batch`, 500 a batch.
async fn seed(db: &TestDatabase, tenant: &TenantId, changes: usize) -> anyhow::Result<()> {
    let carrier = CarrierCode::parse("bench")?;
    let occurred_at = Utc
        .timestamp_opt(1_780_000_000, 0)
        .single()
        .unwrap_or_default();
    for start in (0..changes).step_by(500) {
        let events = (start..changes.min(start + 500))
            .map(|n| {
                Ok(TrackingEventDraft {
                    raw_status: RawStatus {
                        code: "IT".into(),
                        description: Some("In transit".into()),
                    },
                    location: Some("SYDNEY NSW".into()),
                    message: Some("Arrived at the sorting facility".into()),
                    order_number: Some(format!("ORDER-{n}")),
                    ..TrackingEventDraft::new(
                        carrier.clone(),
                        TrackingNumber::parse(&format!("BENCH{n:08}"))?,
                        Status::InTransit,
                        "IT",
                        occurred_at,
                    )
                }
                .finish())
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        db.store()
            .apply_batch(InboundBatch {
                items: vec![InboundItem {
                    tenant: tenant.clone(),
                    source: SourceId::parse("bench")?,
                    require_registration: false,
                    events,
                    received_at: Utc::now(),
                    traceparent: None,
                }],
                registrations: vec![],
            })
            .await?;
    }
    Ok(())
}
