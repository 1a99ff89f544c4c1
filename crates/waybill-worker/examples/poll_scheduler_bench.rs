//! How many due shipments the poll scheduler claims and enqueues per second: seeds a fresh
//! database with N shipments due now, then runs one scheduler's ticks back to back (claim with
//! `SKIP LOCKED` + lease, decide, publish `PollJobV1`s with confirms, record) until nothing is
//! due, and prints the rate. Nothing consumes the jobs; the queue and database are removed at
//! the end.
//!
//! ```text
//! cargo run --release -p waybill-worker --example poll_scheduler_bench -- [shipments] [claim_batch] [schedulers]
//! ```
//!
//! Needs Postgres (`WAYBILL_TEST_DATABASE_URL`, default `postgres://postgres@127.0.0.1:5432/postgres`)
//! and RabbitMQ (`WAYBILL_TEST_AMQP_URL`, default `amqp://guest:guest@127.0.0.1:5672/%2f`).

use std::sync::Arc;
use std::time::Instant;

use waybill_core::{CarrierCode, SourceId, TenantId};
use waybill_store::testing::TestDatabase;
use waybill_worker::Worker;
use waybill_worker::poll::{Scheduler, SystemClock};

#[path = "../tests/support/polled_source.rs"]
mod support;
use support::polled_source_settings;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let shipments: u32 = args
        .next()
        .map(|a| a.parse())
        .transpose()?
        .unwrap_or(100_000);
    let claim_batch: u32 = args.next().map(|a| a.parse()).transpose()?.unwrap_or(2_000);
    let schedulers: usize = args.next().map(|a| a.parse()).transpose()?.unwrap_or(1);
    let admin = std::env::var("WAYBILL_TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned());
    let amqp = std::env::var("WAYBILL_TEST_AMQP_URL")
        .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".to_owned());

    let db = TestDatabase::create_with_pool(&admin, 8).await?;
    let prefix = format!("bench{:08x}.", rand::random::<u32>());
    let settings = polled_source_settings(
        &amqp,
        &prefix,
        db.url(),
        8,
        "bench",
        1_000_000_000,
        &format!(
            r#"
            enabled = false
            claim_batch = {claim_batch}
            max_queued_jobs = 4000000000
            "#
        ),
    )?;
    let connection = waybill_bus::BusConnection::connect(&amqp, "poll-bench").await?;
    let topology = waybill_bus::Topology::new(&prefix);
    topology.declare(&connection).await?;

    let seeded = {
        let mut conn = db.store().acquire().await?;
        waybill_store::polling::seed_due_shipments(
            &mut conn,
            &TenantId::default_tenant(),
            &CarrierCode::parse("starshipit")?,
            &SourceId::parse("bench")?,
            "BENCH",
            shipments,
            chrono::Utc::now(),
        )
        .await?
    };
    sqlx_analyze(&db).await?;
    let shutdown = tokio_util::sync::CancellationToken::new();
    let mut tasks = Vec::new();
    let started = Instant::now();
    for _ in 0..schedulers {
        let worker = Worker::build(settings.clone(), shutdown.clone()).await?;
        tasks.push(tokio::spawn(async move {
            let mut scheduler = Scheduler::new(&worker, Arc::new(SystemClock))?;
            let mut published = 0usize;
            let mut ticks = 0usize;
            loop {
                let report = scheduler.tick().await?;
                ticks += 1;
                published += report.published;
                if report.claimed == 0 {
                    return Ok::<_, anyhow::Error>((published, ticks));
                }
            }
        }));
    }
    let mut published = 0;
    let mut ticks = 0;
    for task in tasks {
        let (p, t) = task.await??;
        published += p;
        ticks += t;
    }
    let elapsed = started.elapsed();
    let queued = connection
        .queue_stats(&topology.polls_queue())
        .await?
        .messages;
    println!(
        "poll scheduler: {seeded} due shipments, {schedulers} scheduler(s), claim_batch {claim_batch}: \
         {published} claimed+enqueued (confirmed) in {:.2} s over {ticks} ticks = {:.0} shipments/s; \
         {queued} jobs in {}",
        elapsed.as_secs_f64(),
        published as f64 / elapsed.as_secs_f64(),
        topology.polls_queue(),
    );
    shutdown.cancel();
    topology.delete(&connection).await?;
    connection.close().await?;
    db.drop_database().await?;
    Ok(())
}

/// Fresh statistics, as autovacuum would have them on a live table.
async fn sqlx_analyze(db: &TestDatabase) -> anyhow::Result<()> {
    let mut conn = db.store().acquire().await?;
    waybill_store::polling::analyze_shipments(&mut conn).await?;
    Ok(())
}
