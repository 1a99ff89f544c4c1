//! Several poll schedulers at once, as several worker replicas run them: three scheduler loops,
//! each with its own worker (its own store pool and publisher connection, and its own
//! connection for the queue depth), against one database holding a few thousand due shipments.
//! What they publish to `waybill.polls` must be one job per due shipment, for the slot the
//! database recorded: no shipment claimed twice, none left out.
//!
//! Needs Postgres (`WAYBILL_TEST_DATABASE_URL`) and RabbitMQ (`WAYBILL_TEST_AMQP_URL`, default
//! `amqp://guest:guest@127.0.0.1:5672/%2f`); uses its own database and queue prefix.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use tokio_util::sync::CancellationToken;
use waybill_bus::envelope::{PollEnvelope, PollJobV1};
use waybill_bus::{BusConnection, Consumer, Topology};
use waybill_config::Settings;
use waybill_core::{CarrierCode, SourceId, TenantId, TrackingNumber};
use waybill_store::ShipmentKey;
use waybill_store::polling::{PollState, poll_schedule, seed_due_shipments};
use waybill_store::testing::TestDatabase;
use waybill_worker::Worker;
use waybill_worker::poll::{Scheduler, SystemClock, run_scheduler};

#[path = "support/polled_source.rs"]
mod support;
use support::polled_source_settings;

const SHIPMENTS: u32 = 3_000;
const SCHEDULERS: usize = 3;
const PREFIX: &str = "SCHED";
/// A tick's budget is two ticks of the source's rate: 500/s × 0.1 s × 2 = 100 slots, so each
/// scheduler claims many times and the three interleave.
const TICK_MS: u64 = 100;

fn amqp_url() -> String {
    std::env::var("WAYBILL_TEST_AMQP_URL")
        .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".to_owned())
}

fn settings(database_url: &str, prefix: &str) -> Settings {
    polled_source_settings(
        &amqp_url(),
        prefix,
        database_url,
        4,
        "polled",
        500,
        &format!(
            r#"
            enabled = true
            tick_ms = {TICK_MS}
            claim_batch = 100
            "#
        ),
    )
    .expect("the test's settings are valid")
}

fn tracking_number(n: u32) -> TrackingNumber {
    TrackingNumber::parse(&format!("{PREFIX}{n:09}")).expect("a valid tracking number")
}

/// Seeds `count` shipments of the default tenant's `starshipit` source `polled`, due a minute
/// ago and numbered as [`tracking_number`] numbers them; returns how many were inserted.
async fn seed_due(conn: &mut waybill_store::PgConnection, count: u32) -> u64 {
    seed_due_shipments(
        conn,
        &TenantId::default_tenant(),
        &CarrierCode::parse("starshipit").unwrap(),
        &SourceId::parse("polled").unwrap(),
        PREFIX,
        count,
        Utc::now() - chrono::Duration::minutes(1),
    )
    .await
    .unwrap()
}

/// A fresh database, and a queue prefix starting with `tag` whose topology is declared, with
/// the settings of both and a connection to the broker.
async fn fixture(tag: &str) -> (TestDatabase, Settings, BusConnection, Topology) {
    let db = TestDatabase::create(&TestDatabase::admin_url())
        .await
        .expect("create a test database (is Postgres running? see WAYBILL_TEST_DATABASE_URL)");
    let prefix = format!("{tag}{:08x}.", rand::random::<u32>());
    let settings = settings(db.url(), &prefix);
    let connection = BusConnection::connect(&amqp_url(), "waybill-test-schedulers")
        .await
        .expect("connect to RabbitMQ (see WAYBILL_TEST_AMQP_URL)");
    let topology = Topology::new(&prefix);
    topology.declare(&connection).await.unwrap();
    (db, settings, connection, topology)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_schedulers_publish_every_due_shipment_once_for_its_slot() {
    let (db, settings, connection, topology) = fixture("sched").await;
    let tenant = TenantId::default_tenant();
    let carrier = CarrierCode::parse("starshipit").unwrap();
    {
        let mut conn = db.store().acquire().await.unwrap();
        assert_eq!(seed_due(&mut conn, SHIPMENTS).await, u64::from(SHIPMENTS));
    }

    let shutdown = CancellationToken::new();
    let mut loops = Vec::new();
    for _ in 0..SCHEDULERS {
        let worker = Worker::build(settings.clone(), shutdown.clone())
            .await
            .unwrap();
        let scheduler = Scheduler::new(&worker, Arc::new(SystemClock)).unwrap();
        loops.push(tokio::spawn(run_scheduler(scheduler, shutdown.clone())));
    }
    let polls = topology.polls_queue();
    wait_for_depth(&connection, &polls, SHIPMENTS).await;
    // A few more ticks each, so that a second claim of anything would have been published.
    tokio::time::sleep(Duration::from_millis(5 * TICK_MS)).await;
    shutdown.cancel();
    for running in loops {
        running.await.unwrap();
    }

    let jobs = read_all(&connection, &polls).await;
    let mut by_number: BTreeMap<String, Vec<PollJobV1>> = BTreeMap::new();
    for job in jobs {
        by_number
            .entry(job.tracking_number.as_str().to_owned())
            .or_default()
            .push(job);
    }
    let twice: Vec<&String> = by_number
        .iter()
        .filter(|(_, jobs)| jobs.len() > 1)
        .map(|(number, _)| number)
        .collect();
    assert!(twice.is_empty(), "claimed and published twice: {twice:?}");
    let mut conn = db.store().acquire().await.unwrap();
    for n in 1..=SHIPMENTS {
        let number = tracking_number(n);
        let jobs = by_number
            .get(number.as_str())
            .unwrap_or_else(|| panic!("{} was never published", number.as_str()));
        let key = ShipmentKey {
            tenant: tenant.clone(),
            carrier: carrier.clone(),
            tracking_number: number,
        };
        let schedule = poll_schedule(&mut conn, &key).await.unwrap().unwrap();
        assert_eq!(schedule.state, Some(PollState::Active));
        assert_eq!(
            schedule.slot,
            Some(jobs[0].slot),
            "the job is for the slot the claim recorded"
        );
        assert_eq!(jobs[0].attempt, 0, "a first claim of the slot");
    }
    assert_eq!(by_number.len(), SHIPMENTS as usize);
    drop(conn);

    topology.delete(&connection).await.unwrap();
    connection.close().await.unwrap();
    db.drop_database().await.unwrap();
}

/// During a backlog a tick claims the next tick's slots while it publishes its own; a scheduler
/// that stops gives those back, due at once, instead of leaving them to their lease.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slots_claimed_ahead_are_the_next_ticks_and_given_back_when_the_scheduler_stops() {
    const DUE: u32 = 250;
    let (db, settings, connection, topology) = fixture("ahead").await;
    let mut conn = db.store().acquire().await.unwrap();
    seed_due(&mut conn, DUE).await;
    let shutdown = CancellationToken::new();
    let worker = Worker::build(settings, shutdown.clone()).await.unwrap();
    let mut scheduler = Scheduler::new(&worker, Arc::new(SystemClock)).unwrap();

    // The budget is 100 a tick: the first tick publishes 100 and claims the next 100.
    let first = scheduler.tick().await.unwrap();
    assert_eq!(
        (first.budget, first.claimed, first.published),
        (100, 100, 100)
    );
    assert_eq!(
        leased(&mut conn, DUE).await,
        200,
        "100 published, 100 claimed ahead"
    );
    let second = scheduler.tick().await.unwrap();
    assert_eq!(
        (second.claimed, second.published),
        (100, 100),
        "the second tick publishes what the first claimed ahead"
    );
    assert_eq!(
        leased(&mut conn, DUE).await,
        250,
        "the last 50 claimed ahead"
    );

    assert_eq!(scheduler.release_ahead().await.unwrap(), 50);
    assert_eq!(leased(&mut conn, DUE).await, 200, "the 50 are due again");
    assert_eq!(
        scheduler.release_ahead().await.unwrap(),
        0,
        "given back once"
    );
    let third = scheduler.tick().await.unwrap();
    assert_eq!((third.claimed, third.published), (50, 50));
    drop(conn);
    shutdown.cancel();

    let jobs = read_all(&connection, &topology.polls_queue()).await;
    let numbers: std::collections::BTreeSet<String> = jobs
        .iter()
        .map(|job| job.tracking_number.as_str().to_owned())
        .collect();
    assert_eq!(
        (jobs.len(), numbers.len()),
        (DUE as usize, DUE as usize),
        "each due shipment published once"
    );
    topology.delete(&connection).await.unwrap();
    connection.close().await.unwrap();
    db.drop_database().await.unwrap();
}

/// How many of the first `count` seeded shipments are claimed (their next poll is a lease's
/// end, in the future).
async fn leased(conn: &mut waybill_store::PgConnection, count: u32) -> usize {
    let now = Utc::now();
    let mut leased = 0;
    for n in 1..=count {
        let key = ShipmentKey {
            tenant: TenantId::default_tenant(),
            carrier: CarrierCode::parse("starshipit").unwrap(),
            tracking_number: tracking_number(n),
        };
        let schedule = poll_schedule(conn, &key).await.unwrap().unwrap();
        if schedule.next_poll_at.is_some_and(|at| at > now) {
            leased += 1;
        }
    }
    leased
}

/// Waits until `queue` holds at least `count` messages (bounded: the test fails, not hangs).
async fn wait_for_depth(connection: &BusConnection, queue: &str, count: u32) {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let depth = connection.queue_stats(queue).await.unwrap().messages;
        if depth >= count {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "only {depth} of {count} poll jobs published within 120 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Every job on `queue` (nothing else consumes it), decoded.
async fn read_all(connection: &BusConnection, queue: &str) -> Vec<PollJobV1> {
    let depth = connection.queue_stats(queue).await.unwrap().messages;
    let mut consumer = Consumer::start(connection, queue, 1_000, "").await.unwrap();
    let mut jobs = Vec::new();
    while jobs.len() < depth as usize {
        let delivery = tokio::time::timeout(Duration::from_secs(30), consumer.next())
            .await
            .expect("a queued job is delivered")
            .expect("the consumer is open")
            .unwrap();
        let PollEnvelope::PollJobV1(job) = PollEnvelope::decode(&delivery.body).unwrap();
        jobs.push(job);
        consumer.acker().ack(delivery.delivery_tag).await.unwrap();
    }
    consumer.cancel().await;
    jobs
}
