//! `bench --stored-events N`: the run's fresh database first gets `N` stored events over
//! `--stored-shipments` shipments (`waybill-bench seed`'s rows, see [`crate::seed`]), so every
//! phase meets a big table; then, while the worker drains the full-speed phase's backlog, a few
//! API clients read random seeded shipments from it, as a platform user sees them. Each reader
//! alternates a shipment's current status (`GET /v1/shipments?order_number=…`)
//! and its history (`GET /v1/shipments/{carrier}/{tracking_number}`), together at `--read-rate`
//! requests a second, with a `shipments:read` key created in the run's database before the
//! worker starts. Latency is from sending the request to the end of the body. The same reads on
//! the idle worker after the drain tell the table's share of it from the drain's.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use reqwest::StatusCode;
use reqwest::header::AUTHORIZATION;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use waybill_config::{ExposeSecret, Settings};
use waybill_core::access::Scope;
use waybill_store::seed::SeedPlan;

use super::StoredFigures;
use crate::loadgen::Percentiles;

/// Concurrent readers.
pub const READERS: usize = 4;

/// What the readers saw.
#[derive(Debug, Clone, Copy, Default)]
pub struct ReadFigures {
    /// Current status by order number.
    pub status: Percentiles,
    /// Shipment with its history by tracking number.
    pub history: Percentiles,
    /// Requests not answered 200 (or not at all).
    pub failures: u64,
}

/// How long the readers wait for the worker to receive the key set (it answers 503 until then).
const KEY_SET_WAIT: Duration = Duration::from_secs(15);

/// The seeded history of a run: what the readers read, and their key.
pub struct StoredHistory {
    /// The seed's plan (tracking and order numbers of the seeded shipments).
    pub plan: Arc<SeedPlan>,
    /// A `shipments:read` key of the default tenant.
    pub key: String,
}

/// Seeds `events` events over `shipments` (default a tenth) into the database of a run
/// configured by `settings`, creates the readers' key, and records the seed in `figures`.
pub async fn store_history(
    settings: &Settings,
    (events, shipments): (u64, Option<u64>),
    figures: &mut StoredFigures,
) -> anyhow::Result<StoredHistory> {
    let shipments = shipments.unwrap_or_else(|| crate::seed::default_shipments(events));
    let plan = crate::seed::plan(
        settings,
        waybill_core::TenantId::DEFAULT,
        "SEED",
        (events, shipments),
    )?;
    let url = settings.database.url.expose_secret();
    let mut conn = waybill_store::seed::connect(url).await?;
    let report = crate::seed::seed(&mut conn, &plan, crate::seed::DEFAULT_CHUNK).await;
    drop(conn);
    let report = report?;
    eprint!("{report}");
    *figures = StoredFigures {
        stored_events: report.tables.events,
        stored_shipments: report.tables.shipments,
        seed_secs: report.insert_secs + report.vacuum_secs,
        stored_events_bytes: report.tables.events_bytes,
        stored_shipments_bytes: report.tables.shipments_bytes,
        ..StoredFigures::default()
    };
    Ok(StoredHistory {
        plan: Arc::new(plan),
        key: reader_key(url).await?,
    })
}

impl ReadFigures {
    /// Records these reads, made while the worker drained, in `figures`.
    pub fn record_under_drain(&self, figures: &mut StoredFigures) {
        figures.read_status_p50_ms = self.status.p50;
        figures.read_status_p99_ms = self.status.p99;
        figures.read_history_p50_ms = self.history.p50;
        figures.read_history_p99_ms = self.history.p99;
        figures.reads = self.status.samples + self.history.samples;
        figures.read_failures = self.failures;
    }

    /// Records these reads, made while the worker was idle, in `figures`.
    pub fn record_idle(&self, figures: &mut StoredFigures) {
        figures.idle_status_p50_ms = self.status.p50;
        figures.idle_status_p99_ms = self.status.p99;
        figures.idle_history_p50_ms = self.history.p50;
        figures.idle_history_p99_ms = self.history.p99;
        figures.read_failures += self.failures;
    }
}

/// Reads `stored` from the idle worker at `worker` for `length` at `rate` requests a second.
pub async fn idle_reads(
    worker: SocketAddr,
    stored: &StoredHistory,
    rate: f64,
    length: Duration,
) -> anyhow::Result<ReadFigures> {
    let readers = Readers::start(worker, &stored.key, stored.plan.clone(), rate)?;
    tokio::time::sleep(length).await;
    readers.stop().await
}

/// Readers running in the background until [`Readers::stop`].
pub struct Readers {
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<anyhow::Result<Tally>>>,
}

/// One reader's latencies (µs) and failures.
struct Tally {
    status: Histogram<u64>,
    history: Histogram<u64>,
    failures: u64,
}

/// Where and what the readers read.
struct Target {
    client: reqwest::Client,
    worker: SocketAddr,
    authorization: String,
    plan: Arc<SeedPlan>,
}

impl Readers {
    /// Starts [`READERS`] readers of `plan`'s shipments on the worker at `worker`, with `key`,
    /// `rate` requests a second in all.
    pub fn start(
        worker: SocketAddr,
        key: &str,
        plan: Arc<SeedPlan>,
        rate: f64,
    ) -> anyhow::Result<Readers> {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()?;
        let target = Arc::new(Target {
            client,
            worker,
            authorization: format!("Bearer {key}"),
            plan,
        });
        let every = Duration::from_secs_f64(READERS as f64 / rate.max(0.001));
        let (stop, stopped) = watch::channel(false);
        let tasks = (0..READERS)
            .map(|_| tokio::spawn(read_loop(target.clone(), every, stopped.clone())))
            .collect();
        Ok(Readers { stop, tasks })
    }

    /// Stops the readers and gathers what they saw.
    pub async fn stop(self) -> anyhow::Result<ReadFigures> {
        let _ = self.stop.send(true);
        let mut all = Tally::new()?;
        for task in self.tasks {
            let tally = task.await??;
            all.status.add(&tally.status)?;
            all.history.add(&tally.history)?;
            all.failures += tally.failures;
        }
        Ok(ReadFigures {
            status: Percentiles::of(&all.status),
            history: Percentiles::of(&all.history),
            failures: all.failures,
        })
    }
}

impl Tally {
    fn new() -> anyhow::Result<Tally> {
        Ok(Tally {
            status: Histogram::new_with_bounds(1, 60_000_000, 3)?,
            history: Histogram::new_with_bounds(1, 60_000_000, 3)?,
            failures: 0,
        })
    }
}

/// Creates a key of the default tenant with `shipments:read` in the database at `url`; the
/// worker loads it when it starts.
async fn reader_key(url: &str) -> anyhow::Result<String> {
    let store = waybill_store::Store::connect(url, 1).await?;
    let mut conn = store.acquire().await?;
    let (key, _) = waybill_store::keys::create_api_key(
        &mut conn,
        &waybill_core::TenantId::default_tenant(),
        &[Scope::ShipmentsRead],
        "bench-reader",
    )
    .await?;
    drop(conn);
    store.close().await;
    Ok(key.expose())
}

async fn read_loop(
    target: Arc<Target>,
    every: Duration,
    mut stopped: watch::Receiver<bool>,
) -> anyhow::Result<Tally> {
    let mut tally = Tally::new()?;
    wait_for_key_set(&target).await;
    let mut ticks = tokio::time::interval(every);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut history_next = false;
    loop {
        tokio::select! {
            _ = ticks.tick() => {}
            _ = stopped.changed() => break,
        }
        let index = rand::random_range(0..target.plan.shipments());
        let (url, histogram) = if history_next {
            let url = format!(
                "http://{}/v1/shipments/{}/{}",
                target.worker,
                target.plan.carrier(),
                target.plan.tracking_number(index)
            );
            (url, &mut tally.history)
        } else {
            let url = format!(
                "http://{}/v1/shipments?order_number={}",
                target.worker,
                target.plan.order_number(index)
            );
            (url, &mut tally.status)
        };
        history_next = !history_next;
        let started = Instant::now();
        if read(&target, &url).await {
            let micros = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
            histogram.saturating_record(micros.max(1));
        } else {
            tally.failures += 1;
        }
    }
    Ok(tally)
}

/// Waits until the worker answers a read, which it does once it has received the key set
/// (shortly after it is ready), or [`KEY_SET_WAIT`].
async fn wait_for_key_set(target: &Target) {
    let url = format!(
        "http://{}/v1/shipments/{}/{}",
        target.worker,
        target.plan.carrier(),
        target.plan.tracking_number(0)
    );
    let deadline = Instant::now() + KEY_SET_WAIT;
    while Instant::now() < deadline && !read(target, &url).await {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// One request; whether it was answered 200 with a whole body.
async fn read(target: &Target, url: &str) -> bool {
    let answer = target
        .client
        .get(url)
        .header(AUTHORIZATION, &target.authorization)
        .send()
        .await;
    match answer {
        Ok(answer) if answer.status() == StatusCode::OK => answer.bytes().await.is_ok(),
        _ => false,
    }
}
