//! Measures `apply_batch` throughput on a fresh database: batches of 500 events, each batch in
//! its own committed transaction, over whatever transport the URL negotiates (Debian's Postgres
//! has `ssl=on`, and the default `sslmode=prefer` silently picks TLS — the case where sqlx 0.9.0
//! loses ~40 ms per statement; this prints which transport was used).
//!
//! ```text
//! cargo run -p waybill-store --release --example batch_rate
//! WAYBILL_TEST_DATABASE_URL=postgres://postgres@127.0.0.1/test?sslmode=disable cargo run ...
//! ```
//!
//! Nothing is asserted; numbers are events merged per second (each event is one
//! `tracking_events` row plus its share of shipment upserts/updates and outbox rows).

mod common;

use std::time::Instant;

use chrono::{TimeZone, Utc};
use waybill_core::{
    CarrierCode, SourceId, Status, TenantId, TrackingEvent, TrackingEventDraft, TrackingNumber,
};
use waybill_store::testing::TestDatabase;
use waybill_store::{InboundBatch, InboundItem, Store};

const BATCH: usize = 500;
const BATCHES: usize = 40;

fn event(shipment: usize, step: i64, status: Status) -> TrackingEvent {
    TrackingEventDraft {
        location: Some("Sydney NSW".into()),
        message: Some("Scanned at depot".into()),
        ..TrackingEventDraft::new(
            CarrierCode::parse("ups").expect("valid"),
            TrackingNumber::parse(&format!("BENCH{shipment:08}")).expect("valid"),
            status,
            status.as_str(),
            Utc.timestamp_opt(1_780_000_000 + step * 60, 0)
                .single()
                .expect("valid"),
        )
    }
    .finish()
}

fn batch(events: Vec<TrackingEvent>) -> InboundBatch {
    InboundBatch {
        items: vec![InboundItem {
            tenant: TenantId::default_tenant(),
            source: SourceId::parse("bench").expect("valid"),
            require_registration: false,
            events,
            received_at: Utc::now(),
            traceparent: None,
        }],
        registrations: vec![],
    }
}

/// Applies `batches` with `writers` concurrent tasks; returns events per second.
async fn run(store: &Store, batches: Vec<InboundBatch>, writers: usize) -> anyhow::Result<f64> {
    let events: usize = batches
        .iter()
        .map(|b| b.items.iter().map(|i| i.events.len()).sum::<usize>())
        .sum();
    let started = Instant::now();
    common::on_writers(store, batches, writers, |store, queue| async move {
        for batch in queue {
            store.apply_batch(batch).await?;
        }
        Ok(())
    })
    .await?;
    Ok(events as f64 / started.elapsed().as_secs_f64())
}

/// `BATCHES` batches of `BATCH` events, each for a shipment not seen before.
fn fresh(next_shipment: &mut usize) -> Vec<InboundBatch> {
    (0..BATCHES)
        .map(|_| {
            let base = *next_shipment;
            *next_shipment += BATCH;
            batch(
                (base..base + BATCH)
                    .map(|s| event(s, 1, Status::InTransit))
                    .collect(),
            )
        })
        .collect()
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let db = TestDatabase::create_with_pool(&TestDatabase::admin_url(), 8).await?;
    let store = db.store();
    let tls: Option<(bool, Option<String>)> =
        sqlx::query_as("select ssl, version from pg_stat_ssl where pid = pg_backend_pid()")
            .fetch_optional(store.pool())
            .await?;
    println!("transport: {tls:?} (ssl, tls version)");

    // Warm-up: statement preparation and caches.
    run(
        store,
        vec![batch(
            (0..BATCH)
                .map(|s| event(900_000 + s, 0, Status::InTransit))
                .collect(),
        )],
        1,
    )
    .await?;

    let mut next_shipment = 0;
    let first = fresh(&mut next_shipment);
    let (start, end) = (0, next_shipment);
    let newer = |step: i64| -> Vec<InboundBatch> {
        (start..end)
            .step_by(BATCH)
            .map(|base| {
                batch(
                    (base..base + BATCH)
                        .map(|s| event(s, step, Status::OutForDelivery))
                        .collect(),
                )
            })
            .collect()
    };
    let replay = first.clone();

    let rate = run(store, first, 1).await?;
    println!("1 writer,  new shipments (insert shipment + event + outbox): {rate:>8.0} events/s");
    let rate = run(store, newer(2), 1).await?;
    println!("1 writer,  newer event per existing shipment (fast path):   {rate:>8.0} events/s");
    let rate = run(store, replay, 1).await?;
    println!("1 writer,  replayed duplicates (no change):                  {rate:>8.0} events/s");
    let rate = run(store, fresh(&mut next_shipment), 2).await?;
    println!("2 writers, new shipments:                                    {rate:>8.0} events/s");
    let rate = run(store, fresh(&mut next_shipment), 4).await?;
    println!("4 writers, new shipments:                                    {rate:>8.0} events/s");

    db.drop_database().await?;
    Ok(())
}
