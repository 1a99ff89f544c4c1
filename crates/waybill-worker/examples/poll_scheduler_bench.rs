//! How many due shipments the poll scheduler claims and enqueues per second: seeds a fresh
//! database with N shipments due now, then runs one scheduler's ticks back to back (claim with
//! `SKIP LOCKED` + lease, decide, publish `PollJobV1`s with confirms, record) until nothing is
//! due, and prints the rate. With `scheduled`, that many more active shipments are seeded
//! first, their next polls spread over the two hours after the run (a live schedule's table, of
//! which only the due part is claimed); the seeding time and the table's size are printed.
//! Nothing consumes the jobs; the queue and database are removed at the end.
//!
//! ```text
//! cargo run --release -p waybill-worker --example poll_scheduler_bench -- [shipments] [claim_batch] [schedulers] [scheduled]
//! ```
//!
//! Needs Postgres (`WAYBILL_TEST_DATABASE_URL`, default `postgres://postgres@127.0.0.1:5432/postgres`)
//! and RabbitMQ (`WAYBILL_TEST_AMQP_URL`, default `amqp://guest:guest@127.0.0.1:5672/%2f`).

use std::sync::Arc;
use std::time::{Duration, Instant};

use waybill_bench::bench::cpu::{CpuReading, PhaseCpu};
use waybill_core::{CarrierCode, SourceId, TenantId};
use waybill_store::polling::Seed;
use waybill_store::testing::TestDatabase;
use waybill_worker::Worker;
use waybill_worker::poll::{Scheduler, SystemClock, TickTimings};

#[path = "../tests/support/polled_source.rs"]
mod support;
use support::polled_source_settings;

/// Rows per seeding statement (each well within the store's statement timeout).
const SEED_CHUNK: u32 = 250_000;

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
    let scheduled: u32 = args.next().map(|a| a.parse()).transpose()?.unwrap_or(0);
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

    let tenant = TenantId::default_tenant();
    let carrier = CarrierCode::parse("starshipit")?;
    let source = SourceId::parse("bench")?;
    if scheduled > 0 {
        seed_schedule(&db, &tenant, &carrier, &source, scheduled).await?;
    }
    let seeded = {
        let mut conn = db.store().acquire().await?;
        waybill_store::polling::seed_due_shipments(
            &mut conn,
            &tenant,
            &carrier,
            &source,
            "BENCH",
            shipments,
            chrono::Utc::now(),
        )
        .await?
    };
    sqlx_analyze(&db).await?;
    explain_claim(&db, claim_batch).await?;
    let shutdown = tokio_util::sync::CancellationToken::new();
    let started = Instant::now();
    let cpu_before = CpuReading::now(None, None);
    let (published, ticks, spent) = run_schedulers(&settings, schedulers, &shutdown).await?;
    let elapsed = started.elapsed();
    let cpu = PhaseCpu::new(
        "scheduling",
        "shipment",
        &CpuReading::now(None, None).since(&cpu_before),
        published as f64,
    );
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
    print_breakdown(&spent, published);
    print_cpu(&cpu);
    shutdown.cancel();
    topology.delete(&connection).await?;
    connection.close().await?;
    db.drop_database().await?;
    Ok(())
}

/// Seeds `count` active shipments not yet due, their next polls spread evenly over the two
/// hours from ten minutes after now (so none comes due during the run), in statements of
/// [`SEED_CHUNK`] rows; prints the time it took and the table's size.
async fn seed_schedule(
    db: &TestDatabase,
    tenant: &TenantId,
    carrier: &CarrierCode,
    source: &SourceId,
    count: u32,
) -> anyhow::Result<()> {
    let started = Instant::now();
    let cycle = Duration::from_secs(2 * 3600);
    let first = chrono::Utc::now() + chrono::Duration::minutes(10);
    let mut conn = db.store().acquire().await?;
    let mut seeded = 0;
    while seeded < count {
        let chunk = SEED_CHUNK.min(count - seeded);
        let prefix = format!("LATER{:04}-", seeded / SEED_CHUNK);
        let seed = Seed {
            tenant,
            carrier,
            source,
            prefix: &prefix,
        };
        // This chunk's share of the cycle.
        let from = first
            + chrono::Duration::from_std(cycle.mul_f64(f64::from(seeded) / f64::from(count)))?;
        let over = cycle.mul_f64(f64::from(chunk) / f64::from(count));
        waybill_store::polling::seed_scheduled_shipments(&mut conn, &seed, chunk, from, over)
            .await?;
        seeded += chunk;
        eprint!("\rseeded {seeded} of {count} scheduled shipments");
    }
    let size = waybill_store::seed::table_sizes(&mut conn)
        .await?
        .shipments_bytes;
    eprintln!();
    println!(
        "seeded {count} scheduled shipments in {:.0} s; shipments table with indexes: {:.2} GiB",
        started.elapsed().as_secs_f64(),
        waybill_bench::seed::gib(size)
    );
    Ok(())
}

/// Runs `schedulers` schedulers' ticks back to back until a tick claims nothing; returns the
/// jobs they published, their ticks, and each tick's timings.
async fn run_schedulers(
    settings: &waybill_config::Settings,
    schedulers: usize,
    shutdown: &tokio_util::sync::CancellationToken,
) -> anyhow::Result<(usize, usize, Vec<TickTimings>)> {
    let mut tasks = Vec::new();
    for _ in 0..schedulers {
        let worker = Worker::build(settings.clone(), shutdown.clone()).await?;
        tasks.push(tokio::spawn(async move {
            let mut scheduler = Scheduler::new(&worker, Arc::new(SystemClock))?;
            let mut spent = Vec::new();
            let mut published = 0;
            loop {
                let report = scheduler.tick().await?;
                published += report.published;
                spent.push(report.timings);
                if report.claimed == 0 {
                    return Ok::<_, anyhow::Error>((published, spent));
                }
            }
        }));
    }
    let mut published = 0;
    let mut spent = Vec::new();
    for task in tasks {
        let (p, s) = task.await??;
        published += p;
        spent.extend(s);
    }
    Ok((published, spent.len(), spent))
}

/// Where the ticks' time went: each step's total, share and time per shipment published. While
/// a backlog lasts, a tick's claim overlaps the previous tick's publish, so the steps add up to
/// more than the elapsed time.
fn print_breakdown(spent: &[TickTimings], published: usize) {
    let mut totals: Vec<(&str, Duration)> = Vec::new();
    for timings in spent {
        for (n, (name, took)) in timings.steps().into_iter().enumerate() {
            match totals.get_mut(n) {
                Some((_, total)) => *total += took,
                None => totals.push((name, took)),
            }
        }
    }
    let all: Duration = totals.iter().map(|(_, total)| *total).sum();
    println!("where the ticks' time went (summed over schedulers):");
    for (name, total) in totals {
        println!(
            "  {name:<20} {:>8.0} ms  {:>5.1} %  {:>6.1} µs per shipment",
            total.as_secs_f64() * 1e3,
            100.0 * total.as_secs_f64() / all.as_secs_f64().max(f64::EPSILON),
            total.as_secs_f64() * 1e6 / published.max(1) as f64,
        );
    }
}

/// The CPU each shipment claimed and enqueued cost, µs: the schedulers (this process), RabbitMQ,
/// Postgres and the rest of the machine.
fn print_cpu(cpu: &PhaseCpu) {
    let of = |component: &str| cpu.per_unit_us.get(component).copied().unwrap_or(0.0);
    println!(
        "CPU per shipment: schedulers {:.1} µs, RabbitMQ {:.1} µs, Postgres {:.1} µs, other {:.1} µs; \
         all {:.1} µs; machine idle {:.0} %",
        of("bench"),
        of("broker"),
        of("database"),
        of("other"),
        cpu.total_us(),
        cpu.idle_share * 100.0,
    );
}

/// Prints Postgres's own account of one claim of `claim_batch` (rolled back: nothing claimed).
async fn explain_claim(db: &TestDatabase, claim_batch: u32) -> anyhow::Result<()> {
    let mut conn = db.store().acquire().await?;
    let plan = waybill_store::polling::explain_claim(
        &mut conn,
        chrono::Utc::now(),
        60,
        &[(SourceId::parse("bench")?, claim_batch)],
    )
    .await?;
    println!("one claim of {claim_batch}, as Postgres ran it (rolled back):");
    for line in plan {
        println!("  {line}");
    }
    Ok(())
}

/// Fresh statistics, as autovacuum would have them on a live table.
async fn sqlx_analyze(db: &TestDatabase) -> anyhow::Result<()> {
    let mut conn = db.store().acquire().await?;
    waybill_store::polling::analyze_shipments(&mut conn).await?;
    Ok(())
}
