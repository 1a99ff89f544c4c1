//! `waybill-bench bench`: the machine's ceilings and Waybill's figures, side by side in one run.
//! See docs/performance.md.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use chrono::Utc;
use clap::Args;
use serde::{Deserialize, Serialize};
use tokio::process::{Child, Command};
use waybill_config::Settings;

use crate::loadgen::{self, LoadgenArgs, parse_duration};
use crate::scratch::{self, terminate, topology};

mod console;
pub mod cpu;
mod deliveries;
mod ideal;
pub mod scale;
mod stored;

use cpu::{CpuReading, PhaseCpu};
use waybill_config::ExposeSecret;

/// `waybill-bench bench` arguments.
#[derive(Debug, Clone, Args)]
pub struct BenchArgs {
    /// Where the `waybill-ingress` and `waybill-worker` binaries are (default: beside this one).
    #[arg(long)]
    pub bin_dir: Option<PathBuf>,
    /// Repetitions; medians are reported.
    #[arg(long, default_value_t = 3)]
    pub runs: usize,
    /// Length of each load phase.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub duration: Duration,
    /// Concurrent connections of the full-speed phase.
    #[arg(long, default_value_t = 64)]
    pub concurrency: usize,
    /// Instead of the comparison: one steady run this long (e.g. `10m`) printing both
    /// binaries' memory (RSS) every minute.
    #[arg(long, value_parser = parse_duration)]
    pub soak: Option<Duration>,
    /// Request rate of the soak run.
    #[arg(long, default_value_t = 1000.0)]
    pub soak_rate: f64,
    /// Instead of the comparison: post this many webhooks at full speed with one HTTP
    /// subscription to a local receiver, and print deliveries/s while they arrive and after,
    /// and the delivery lag.
    #[arg(long)]
    pub deliveries: Option<usize>,
    /// With `--deliveries`: this many subscriptions, each to its own local receiver and each
    /// receiving every change.
    #[arg(long, default_value_t = 1, requires = "deliveries")]
    pub subscriptions: usize,
    /// With `--deliveries`: one more subscription whose receiver answers after 1 s, to see what
    /// a slow endpoint costs the fast ones (its deliveries are not counted).
    #[arg(long, requires = "deliveries")]
    pub slow_subscription: bool,
    /// With `--deliveries`: post the webhooks at this rate (per second) instead of at full
    /// speed, to read the delivery lag at a sustained rate.
    #[arg(long, requires = "deliveries")]
    pub deliveries_rate: Option<f64>,
    /// With `--deliveries`: first store this many delivered deliveries of the first
    /// subscription (a day old), to see whether a long history slows the delivery path.
    #[arg(long, requires = "deliveries")]
    pub stored_deliveries: Option<u64>,
    /// Keep an operator console open on the worker during every phase: sign in with an admin
    /// key and refresh the overview this often (e.g. `5s`, the page's own refresh), to compare
    /// with a run without it (docs/console.md).
    #[arg(long, value_parser = parse_duration)]
    pub console: Option<Duration>,
    /// Store this many tracking events (`waybill-bench seed`'s rows) in each run's fresh
    /// database before the phases start, to compare the figures on a big table with a run
    /// without; readers then read the seeded shipments while the worker drains (`--read-rate`).
    #[arg(long, conflicts_with_all = ["soak", "deliveries"])]
    pub stored_events: Option<u64>,
    /// With `--stored-events`: spread them over this many shipments (default: a tenth).
    #[arg(long, requires = "stored_events")]
    pub stored_shipments: Option<u64>,
    /// With `--stored-events`: API reads a second while the worker drains the backlog, from 4
    /// readers alternating a random seeded shipment's current status (by order number) and its
    /// history (by tracking number); 0 for none.
    #[arg(long, default_value_t = 200.0, requires = "stored_events")]
    pub read_rate: f64,
    /// Instead of the comparison: only the ingress at full speed (worker stopped) and then the
    /// worker draining what it left, `--runs` times on fresh databases, one line a run with the
    /// rates and the CPU per request and per merged event: to compare two builds run one after
    /// the other, when the whole comparison moves more from run to run than the change. With
    /// `--stored-events`, each run's database is seeded first and the readers read it while the
    /// worker drains and then for `--duration` on the idle worker; their p50 / p99 of both are
    /// added to the line.
    #[arg(long, conflicts_with_all = ["soak", "deliveries", "console"])]
    pub drain_only: bool,
    /// With `--drain-only`: run in the configured database (`DATABASE_URL`) instead of a fresh
    /// one each run, and keep it, with what the runs merged. Seed a big table once (`waybill-bench
    /// seed`, or the first run's `--stored-events`) and drain over it run after run; seeding it
    /// again skips what it holds. The runs write load-generator shipments, events and API keys
    /// there: use a database of its own, never one you keep.
    #[arg(long, requires = "drain_only")]
    pub configured_database: bool,
    /// Print the results as JSON too.
    #[arg(long)]
    pub json: bool,
}

/// One run's figures.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct RunFigures {
    /// Raw lapin confirmed publishes/s, same envelope size, quorum queue (ingress ceiling).
    pub raw_publish_per_sec: f64,
    /// Raw batched unnest insert + upsert, events/s at the worker's batch size (worker ceiling).
    pub raw_upsert_per_sec: f64,
    /// The ideal ingress's accepted/s at full speed, one source (ingress's fair ceiling).
    pub ideal_ingress_per_sec: f64,
    /// The ideal worker's events/s draining a backlog of the same source (worker's fair
    /// ceiling).
    pub ideal_worker_per_sec: f64,
    /// Ingress accepted/s at full speed.
    pub ingress_accepted_per_sec: f64,
    /// Ingress p99 ack latency at full speed, ms.
    pub ingress_p99_ms_full: f64,
    /// Ingress p99 ack latency at half the raw publish rate, ms.
    pub ingress_p99_ms_half: f64,
    /// Accepted/s achieved in the half-rate phase.
    pub half_rate_achieved: f64,
    /// Ingress p99 ack latency at half its own full-speed rate, ms.
    pub ingress_p99_ms_half_own: f64,
    /// Accepted/s achieved in that phase.
    pub half_own_achieved: f64,
    /// Worker merged events/s draining the full-speed phase's backlog.
    pub worker_merged_per_sec: f64,
    /// End-to-end p50 / p99 at 1,000 webhooks/s, ms.
    pub e2e_p50_ms_1k: f64,
    /// End-to-end p99 at 1,000 webhooks/s, ms.
    pub e2e_p99_ms_1k: f64,
    /// Events accepted but not found, over all phases (must be 0).
    pub lost: u64,
    /// Envelope size used for the raw publish, bytes.
    pub envelope_bytes: usize,
    /// RSS of the ingress at start and end, KiB.
    pub ingress_rss_kib: (u64, u64),
    /// RSS of the worker at start and end, KiB.
    pub worker_rss_kib: (u64, u64),
    /// CPU per unit of work of each phase, by component.
    #[serde(skip_deserializing)]
    pub cpu: Vec<PhaseCpu>,
    /// The history stored before the phases (`--stored-events`); all zero on an empty database.
    /// Flattened, so its rates and latencies are medians over runs like the others.
    #[serde(flatten)]
    pub stored: StoredFigures,
}

/// The history stored before the phases, and the reads of it while the worker drained.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
pub struct StoredFigures {
    /// Tracking events stored.
    pub stored_events: u64,
    /// Shipments they were spread over.
    pub stored_shipments: u64,
    /// Seconds the seeding took, inserts and `vacuum analyze`.
    pub seed_secs: f64,
    /// `tracking_events` on disk with its indexes, bytes.
    pub stored_events_bytes: u64,
    /// `shipments` on disk with its indexes, bytes.
    pub stored_shipments_bytes: u64,
    /// Current status by order number under the drain, p50, ms.
    pub read_status_p50_ms: f64,
    /// Current status by order number under the drain, p99, ms.
    pub read_status_p99_ms: f64,
    /// History by tracking number under the drain, p50, ms.
    pub read_history_p50_ms: f64,
    /// History by tracking number under the drain, p99, ms.
    pub read_history_p99_ms: f64,
    /// Reads answered 200 under the drain.
    pub reads: u64,
    /// Reads not answered 200, under the drain and idle.
    pub read_failures: u64,
    /// Current status by order number on the idle worker after the drain, p50, ms.
    pub idle_status_p50_ms: f64,
    /// Current status by order number on the idle worker after the drain, p99, ms.
    pub idle_status_p99_ms: f64,
    /// History by tracking number on the idle worker after the drain, p50, ms.
    pub idle_history_p50_ms: f64,
    /// History by tracking number on the idle worker after the drain, p99, ms.
    pub idle_history_p99_ms: f64,
}

/// Runs the benchmark.
pub async fn run(args: &BenchArgs, settings: &Settings) -> anyhow::Result<()> {
    let bin_dir = bin_dir(args.bin_dir.as_ref())?;
    if let Some(soak) = args.soak {
        return run_soak(args, settings, &bin_dir, soak).await;
    }
    if let Some(webhooks) = args.deliveries {
        let stack = Stack::create(settings, &bin_dir).await?;
        return deliveries::run(args, stack, webhooks).await;
    }
    if args.drain_only {
        return run_drain_only(args, settings, &bin_dir).await;
    }
    let mut runs = Vec::new();
    for index in 0..args.runs.max(1) {
        eprintln!("run {}/{}…", index + 1, args.runs.max(1));
        runs.push(one_run(args, settings, &bin_dir).await?);
    }
    let report = Report::from_runs(&runs);
    print!("{report}");
    if args.json {
        println!("{}", serde_json::to_string_pretty(&runs)?);
    }
    if report.lost > 0 {
        anyhow::bail!("{} accepted events were never stored", report.lost);
    }
    Ok(())
}

/// `--drain-only`: phase 5 alone, `--runs` times, each on a fresh stack; a line a run and the
/// medians.
async fn run_drain_only(
    args: &BenchArgs,
    settings: &Settings,
    bin_dir: &std::path::Path,
) -> anyhow::Result<()> {
    let reads = args.stored_events.is_some() && args.read_rate > 0.0;
    let (reads_head, reads_rule) = if reads {
        (
            " reads under the drain, ms: status p50 / p99, history p50 / p99 | the same on the idle worker after it |",
            "---:|---:|",
        )
    } else {
        ("", "")
    };
    println!(
        "| run | ingress accepted/s | µs a request: ingress / RabbitMQ | worker merged events/s | µs an event: worker / RabbitMQ / Postgres |{reads_head}"
    );
    println!("|---|---:|---:|---:|---:|{reads_rule}");
    let mut runs = Vec::new();
    for index in 0..args.runs.max(1) {
        eprintln!("run {}/{}…", index + 1, args.runs.max(1));
        let mut stack = if args.configured_database {
            Stack::create_in_configured(settings, bin_dir).await?
        } else {
            Stack::create(settings, bin_dir).await?
        };
        let mut figures = RunFigures::default();
        let measured = drain_phase(args, &mut stack, &mut figures).await;
        stack.destroy().await;
        measured?;
        println!("{}", drain_line(&(index + 1).to_string(), &figures, reads));
        runs.push(figures);
    }
    let report = Report::from_runs(&runs);
    println!("{}", drain_line("median", &report.median, reads));
    if args.json {
        println!("{}", serde_json::to_string_pretty(&runs)?);
    }
    if report.lost > 0 {
        anyhow::bail!("{} accepted events were never stored", report.lost);
    }
    Ok(())
}

/// Phase 5 on `stack`: the history stored first with `--stored-events`, the ingress started,
/// then [`full_speed_then_drain`] of the first source.
async fn drain_phase(
    args: &BenchArgs,
    stack: &mut Stack,
    figures: &mut RunFigures,
) -> anyhow::Result<()> {
    let stored = store_history(args, &stack.settings, &mut figures.stored).await?;
    let source = BenchSource::of(&stack.settings)?;
    stack.start_ingress().await?;
    full_speed_then_drain(args, stack, (&source, stored.as_ref()), figures).await?;
    idle_reads(
        args,
        stack.settings.worker.addr,
        stored.as_ref(),
        &mut figures.stored,
    )
    .await
}

/// With a `stored` history and readers, the same reads as under the drain on the idle worker
/// at `worker`, for `--duration`, recorded in `figures`.
async fn idle_reads(
    args: &BenchArgs,
    worker: std::net::SocketAddr,
    stored: Option<&stored::StoredHistory>,
    figures: &mut StoredFigures,
) -> anyhow::Result<()> {
    if let Some(stored) = stored.filter(|_| args.read_rate > 0.0) {
        stored::idle_reads(worker, stored, args.read_rate, args.duration)
            .await?
            .record_idle(figures);
    }
    Ok(())
}

/// With `--stored-events`, the history seeded into the run's database (and its key for the
/// readers); the seed recorded in `figures`.
async fn store_history(
    args: &BenchArgs,
    settings: &Settings,
    figures: &mut StoredFigures,
) -> anyhow::Result<Option<stored::StoredHistory>> {
    let Some(events) = args.stored_events else {
        return Ok(None);
    };
    let history = stored::store_history(settings, (events, args.stored_shipments), figures).await?;
    Ok(Some(history))
}

/// One row of the `--drain-only` table; with `reads`, the reads' latencies under the drain too.
fn drain_line(label: &str, figures: &RunFigures, reads: bool) -> String {
    let cpu = |phase: &str, component: &str| {
        figures
            .cpu
            .iter()
            .find(|measured| measured.phase == phase)
            .and_then(|measured| measured.per_unit_us.get(component).copied())
            .unwrap_or(0.0)
    };
    let (ingress, drain) = ("ingress at full speed", "worker draining the backlog");
    let mut line = format!(
        "| {label} | {:.0}/s | {:.1} / {:.1} | {:.0}/s | {:.1} / {:.1} / {:.1} |",
        figures.ingress_accepted_per_sec,
        cpu(ingress, "ingress"),
        cpu(ingress, "broker"),
        figures.worker_merged_per_sec,
        cpu(drain, "worker"),
        cpu(drain, "broker"),
        cpu(drain, "database"),
    );
    if reads {
        let stored = &figures.stored;
        line.push_str(&format!(
            " {:.1} / {:.1}, {:.1} / {:.1} | {:.1} / {:.1}, {:.1} / {:.1} |",
            stored.read_status_p50_ms,
            stored.read_status_p99_ms,
            stored.read_history_p50_ms,
            stored.read_history_p99_ms,
            stored.idle_status_p50_ms,
            stored.idle_status_p99_ms,
            stored.idle_history_p50_ms,
            stored.idle_history_p99_ms,
        ));
    }
    line
}

/// Where the `waybill-ingress` and `waybill-worker` binaries are: `given`, or beside this one.
fn bin_dir(given: Option<&PathBuf>) -> anyhow::Result<PathBuf> {
    match given {
        Some(dir) => Ok(dir.clone()),
        None => std::env::current_exe()?
            .parent()
            .map(PathBuf::from)
            .ok_or_else(|| anyhow::anyhow!("cannot tell where this binary is; pass --bin-dir")),
    }
}

/// A fresh database, queue prefix and pair of processes for one run.
struct Stack {
    settings: Settings,
    database: Option<waybill_store::testing::TestDatabase>,
    ingress: Option<Child>,
    worker: Option<Child>,
    bin_dir: PathBuf,
    /// The configuration file the binaries read instead of `WAYBILL_CONFIG`'s, removed with the
    /// stack.
    config_file: Option<PathBuf>,
}

impl Stack {
    async fn create(base: &Settings, bin_dir: &std::path::Path) -> anyhow::Result<Stack> {
        // A fresh, migrated database beside the configured one, dropped at the end.
        let admin_url = admin_url(base.database.url.expose_secret())?;
        let database = waybill_store::testing::TestDatabase::create(&admin_url).await?;
        let mut settings = base.clone();
        settings.database.url = database.url().into();
        Stack::with_database(settings, Some(database), bin_dir).await
    }

    /// A stack on the configured database itself, migrated first and kept at the end.
    async fn create_in_configured(
        base: &Settings,
        bin_dir: &std::path::Path,
    ) -> anyhow::Result<Stack> {
        crate::seed::migrate(base.database.url.expose_secret()).await?;
        Stack::with_database(base.clone(), None, bin_dir).await
    }

    /// A stack on `settings`' database (`database`, dropped at the end, when it is a scratch
    /// one) under a fresh queue prefix and ports.
    async fn with_database(
        mut settings: Settings,
        database: Option<waybill_store::testing::TestDatabase>,
        bin_dir: &std::path::Path,
    ) -> anyhow::Result<Stack> {
        let tag = format!("{:08x}", rand::random::<u32>());
        settings.bus.prefix = format!("bench{tag}.");
        settings.ingress.addr = free_port()?;
        settings.worker.addr = free_port()?;
        let connection =
            waybill_bus::BusConnection::connect(settings.bus.url.expose_secret(), "waybill-bench")
                .await?;
        topology(&settings).declare(&connection).await?;
        connection.close().await?;
        Ok(Stack {
            settings,
            database,
            ingress: None,
            worker: None,
            bin_dir: bin_dir.to_owned(),
            config_file: None,
        })
    }

    fn spawn(&self, binary: &str) -> anyhow::Result<Child> {
        self.spawn_at(binary, self.settings.worker.addr)
    }

    /// Starts `binary` with this stack's settings, a worker listening on `worker_addr` (each of
    /// several workers needs its own).
    fn spawn_at(&self, binary: &str, worker_addr: std::net::SocketAddr) -> anyhow::Result<Child> {
        let path = self.bin_dir.join(binary);
        let settings = &self.settings;
        let mut command = Command::new(&path);
        if let Some(file) = &self.config_file {
            command.env(waybill_config::CONFIG_FILE_VARIABLE, file);
        }
        command
            .env("DATABASE_URL", settings.database.url.expose_secret())
            .env("AMQP_URL", settings.bus.url.expose_secret())
            .env("WAYBILL_BUS_PREFIX", &settings.bus.prefix)
            .env("WAYBILL_INGRESS_ADDR", settings.ingress.addr.to_string())
            .env("WAYBILL_WORKER_ADDR", worker_addr.to_string())
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .map_err(|error| {
                anyhow::anyhow!(
                    "cannot start {}: {error} (build with `cargo build --release --bins`)",
                    path.display()
                )
            })
    }

    async fn start_ingress(&mut self) -> anyhow::Result<()> {
        self.ingress = Some(self.spawn("waybill-ingress")?);
        wait_ready(&format!("http://{}/readyz", self.settings.ingress.addr)).await
    }

    async fn start_worker(&mut self) -> anyhow::Result<()> {
        self.worker = Some(self.spawn("waybill-worker")?);
        wait_ready(&format!("http://{}/readyz", self.settings.worker.addr)).await
    }

    fn cpu(&self) -> CpuReading {
        let pid = |child: &Option<Child>| child.as_ref().and_then(Child::id);
        CpuReading::now(pid(&self.ingress), pid(&self.worker))
    }

    /// Runs `work` and records the CPU the stack spent on it as `phase`, per `unit` of `units`.
    async fn with_cpu<T, E>(
        &self,
        phases: &mut Vec<PhaseCpu>,
        (phase, unit, units): (&'static str, &'static str, usize),
        work: impl Future<Output = Result<T, E>>,
    ) -> anyhow::Result<T>
    where
        E: std::error::Error + Send + Sync + 'static,
    {
        let before = self.cpu();
        let value = work.await?;
        phases.push(PhaseCpu::new(
            phase,
            unit,
            &self.cpu().since(&before),
            units as f64,
        ));
        Ok(value)
    }

    fn rss(&self) -> (u64, u64) {
        let of = |child: &Option<Child>| child.as_ref().and_then(Child::id).map_or(0, rss_kib);
        (of(&self.ingress), of(&self.worker))
    }

    async fn destroy(mut self) {
        for child in [self.ingress.take(), self.worker.take()]
            .into_iter()
            .flatten()
        {
            terminate(child).await;
        }
        scratch::remove(&self.settings, self.database.take(), "waybill-bench").await;
        if let Some(file) = self.config_file.take() {
            let _ = std::fs::remove_file(file);
        }
    }
}

fn loadgen_args(args: &BenchArgs, settings: &Settings) -> LoadgenArgs {
    load_at_full_speed(args.concurrency, args.duration, settings)
}

/// The bench's load: as fast as `concurrency` connections go for `duration`, no duplicates or
/// invalid requests, a fifth of the shipments' scans out of order.
fn load_at_full_speed(concurrency: usize, duration: Duration, settings: &Settings) -> LoadgenArgs {
    LoadgenArgs {
        ingress: Some(format!("http://{}", settings.ingress.addr)),
        worker: Some(format!("http://{}", settings.worker.addr)),
        sources: Vec::new(),
        rate: 0.0,
        concurrency,
        duration,
        count: None,
        duplicates: 0.0,
        out_of_order: 0.2,
        invalid: 0.0,
        shipments_in_flight: 20,
        retries: 20,
        max_retry_delay: Duration::from_secs(1),
        drain_timeout: Duration::from_secs(60),
        no_drain: false,
        json: false,
        quiet: true,
    }
}

async fn one_run(
    args: &BenchArgs,
    base: &Settings,
    bin_dir: &std::path::Path,
) -> anyhow::Result<RunFigures> {
    let mut stack = Stack::create(base, bin_dir).await?;
    let console = match args.console {
        Some(every) => Some(
            console::ConsoleWatcher::start(
                stack.settings.database.url.expose_secret(),
                stack.settings.worker.addr,
                every,
            )
            .await?,
        ),
        None => None,
    };
    let result = measure(args, &mut stack).await;
    if let Some(console) = console {
        let (refreshes, failures) = console.counts();
        eprintln!(
            "console: {refreshes} overview refreshes, {failures} failed (the worker is stopped during the ingress-only phase)"
        );
    }
    stack.destroy().await;
    result
}

/// One run's figures, phase by phase: the broker's and the database's raw ceilings, the fair
/// ceilings (the ideal ingress, and the ideal worker draining a backlog of Waybill's ingress),
/// the ingress at full speed with the worker draining the backlog after it, the ingress at half
/// rates, and 1,000 webhooks/s end to end. With `--stored-events`, the history is stored first,
/// read while the worker drains, and read again on the idle worker after the drain.
async fn measure(args: &BenchArgs, stack: &mut Stack) -> anyhow::Result<RunFigures> {
    let settings = stack.settings.clone();
    let mut figures = RunFigures {
        envelope_bytes: typical_envelope_len(&settings)?,
        ..RunFigures::default()
    };
    let stored = store_history(args, &settings, &mut figures.stored).await?;
    figures.raw_publish_per_sec =
        broker_ceiling(stack, &settings, figures.envelope_bytes, &mut figures.cpu).await?;
    figures.raw_upsert_per_sec = database_ceiling(stack, &settings, &mut figures.cpu).await?;
    let source = BenchSource::of(&settings)?;
    let mut one_source = loadgen_args(args, &settings);
    one_source.sources = vec![source.id.clone()];
    one_source.no_drain = true;
    figures.ideal_ingress_per_sec =
        ideal_ingress_ceiling(stack, &source, one_source.clone(), &mut figures.cpu).await?;
    stack.start_ingress().await?;
    let rss_start = stack.rss();
    figures.ideal_worker_per_sec =
        ideal_worker_ceiling(stack, &one_source, &mut figures.cpu).await?;
    full_speed_then_drain(args, stack, (&source, stored.as_ref()), &mut figures).await?;
    idle_reads(
        args,
        settings.worker.addr,
        stored.as_ref(),
        &mut figures.stored,
    )
    .await?;
    let rss_after_full = stack.rss();
    half_rates(args, &settings, &mut figures).await?;
    steady_end_to_end(args, &settings, &mut figures).await?;
    let rss_end = stack.rss();
    figures.ingress_rss_kib = (rss_start.0, rss_end.0);
    figures.worker_rss_kib = (rss_after_full.1, rss_end.1);
    Ok(figures)
}

/// Phase 1, the broker ceiling: raw confirmed publishes of `envelope_bytes` (a typical
/// envelope's size) per second.
async fn broker_ceiling(
    stack: &Stack,
    settings: &Settings,
    envelope_bytes: usize,
    phases: &mut Vec<PhaseCpu>,
) -> anyhow::Result<f64> {
    const RAW_MESSAGES: usize = 30_000;
    let connection =
        waybill_bus::BusConnection::connect(settings.bus.url.expose_secret(), "waybill-bench-raw")
            .await?;
    let queue = format!("{}bench.raw", settings.bus.prefix);
    let publish = waybill_bus::bench::raw_confirmed_publish(
        &connection,
        &queue,
        envelope_bytes,
        RAW_MESSAGES,
        settings.bus.publisher_channels,
        256,
    );
    let phase = ("raw confirmed publish", "message", RAW_MESSAGES);
    let per_sec = stack.with_cpu(phases, phase, publish).await?;
    connection.close().await?;
    Ok(per_sec)
}

/// Phase 2, the database ceiling: events upserted per second, at the worker's batch size and
/// concurrency.
async fn database_ceiling(
    stack: &Stack,
    settings: &Settings,
    phases: &mut Vec<PhaseCpu>,
) -> anyhow::Result<f64> {
    const RAW_BATCHES: usize = 40;
    let store = waybill_store::Store::connect(
        settings.database.url.expose_secret(),
        settings.worker.consumers.max(1) as u32 + 1,
    )
    .await?;
    let upsert = waybill_store::bench::raw_batched_upsert(
        &store,
        settings.worker.batch_size,
        RAW_BATCHES,
        settings.worker.consumers.max(1),
    );
    let phase = (
        "raw batched upsert",
        "event",
        settings.worker.batch_size * RAW_BATCHES,
    );
    let per_sec = stack.with_cpu(phases, phase, upsert).await?;
    store.close().await;
    Ok(per_sec)
}

/// The source the full-speed phases load: the first Starshipit source with a secret (the
/// ideal ingress verifies its scheme, HMAC-SHA256 in hex).
struct BenchSource {
    id: String,
    header: String,
    secret: String,
}

impl BenchSource {
    fn of(settings: &Settings) -> anyhow::Result<BenchSource> {
        let profiles = settings.profiles()?;
        settings
            .sources
            .iter()
            .filter(|source| source.profile == "starshipit" && !source.require_registration)
            .find_map(|source| {
                let secret = source.secrets.first()?.expose_secret().to_owned();
                let profile = profiles.get(&source.profile)?;
                let (header, _) = profile.sign(b"{}", &secret, Utc::now())?;
                Some(BenchSource {
                    id: source.id.to_string(),
                    header,
                    secret,
                })
            })
            .ok_or_else(|| {
                anyhow::anyhow!(
                    "the benchmark needs a [[sources]] entry of profile starshipit with a secret"
                )
            })
    }
}

/// Phase 3, the ingress's fair ceiling: the ideal ingress (see `ideal.rs`), in this process,
/// under `load` (one source, no drain). Its CPU shows in the load generator's column.
async fn ideal_ingress_ceiling(
    stack: &Stack,
    source: &BenchSource,
    mut load: LoadgenArgs,
    phases: &mut Vec<PhaseCpu>,
) -> anyhow::Result<f64> {
    let settings = &stack.settings;
    let ideal = ideal::IdealIngress::start(
        settings.bus.url.expose_secret(),
        &format!("{}bench.ideal-ingress", settings.bus.prefix),
        (&source.header, &source.secret),
        settings.bus.publisher_channels,
    )
    .await?;
    load.ingress = Some(format!("http://{}", ideal.addr));
    let before = stack.cpu();
    let ledger = loadgen::run(&load, settings).await;
    let spent = stack.cpu().since(&before);
    ideal.stop().await;
    let requests = ledger?.requests;
    phases.push(PhaseCpu::new(
        "ideal ingress at full speed (in the load generator)",
        "request",
        &spent,
        requests.accepted as f64,
    ));
    Ok(requests.accepted_per_sec)
}

/// Phase 4, the worker's fair ceiling: Waybill's ingress under `load` (one source, no drain)
/// with no worker leaves a backlog; the ideal worker (see `ideal.rs`) drains it at the worker's
/// prefetch, consumers and batch size, into a tenant of its own that is deleted afterwards.
async fn ideal_worker_ceiling(
    stack: &Stack,
    load: &LoadgenArgs,
    phases: &mut Vec<PhaseCpu>,
) -> anyhow::Result<f64> {
    const TENANT: &str = "bench-ideal-worker";
    let settings = &stack.settings;
    loadgen::run(load, settings).await?;
    let connection = waybill_bus::BusConnection::connect(
        settings.bus.url.expose_secret(),
        "waybill-bench-backlog",
    )
    .await?;
    let queue = topology(settings).webhooks_queue();
    let backlog = connection.queue_stats(&queue).await?.messages as usize;
    connection.close().await?;
    let store = waybill_store::Store::connect(
        settings.database.url.expose_secret(),
        settings.worker.consumers.max(1) as u32 + 1,
    )
    .await?;
    let plan = ideal::IdealWorkerPlan {
        queue,
        changes_queue: format!("{}bench.ideal-changes", settings.bus.prefix),
        tenant: TENANT.to_owned(),
        prefetch: settings.worker.prefetch,
        consumers: settings.worker.consumers,
        batch_size: settings.worker.batch_size,
        messages: backlog,
    };
    let before = stack.cpu();
    let drain = ideal::ideal_worker(settings.bus.url.expose_secret(), &store, &plan).await;
    let spent = stack.cpu().since(&before);
    waybill_store::bench::remove_tenant(&store, TENANT).await?;
    store.close().await;
    let drain = drain?;
    phases.push(PhaseCpu::new(
        "ideal worker draining a backlog (in the load generator)",
        "event",
        &spent,
        drain.events as f64,
    ));
    Ok(drain.events_per_sec)
}

/// Phase 5, the ingress alone at full speed; the worker starts when sending stops and drains
/// the backlog, which measures its merge rate. With a `stored` history, readers read it from
/// the worker while it drains.
async fn full_speed_then_drain(
    args: &BenchArgs,
    stack: &mut Stack,
    (source, stored): (&BenchSource, Option<&stored::StoredHistory>),
    figures: &mut RunFigures,
) -> anyhow::Result<()> {
    let settings = &stack.settings.clone();
    let mut full = loadgen_args(args, settings);
    full.sources = vec![source.id.clone()];
    let sending_started = stack.cpu();
    let mut sending_ended = None;
    let mut draining_started = None;
    let mut readers = None;
    let worker_start = async {
        sending_ended = Some(stack.cpu());
        if let Err(error) = stack.start_worker().await {
            eprintln!("worker did not start: {error:#}");
        }
        draining_started = Some(stack.cpu());
        if let Some(stored) = stored.filter(|_| args.read_rate > 0.0) {
            let worker = settings.worker.addr;
            readers = Some(stored::Readers::start(
                worker,
                &stored.key,
                stored.plan.clone(),
                args.read_rate,
            ));
        }
    };
    let ledger = loadgen::run_with(&full, settings, worker_start).await?;
    let draining_ended = stack.cpu();
    if let Some(readers) = readers {
        readers?
            .stop()
            .await?
            .record_under_drain(&mut figures.stored);
    }
    figures.ingress_accepted_per_sec = ledger.requests.accepted_per_sec;
    figures.ingress_p99_ms_full = ledger.requests.ack_latency_ms.p99;
    if let Some(ended) = sending_ended {
        figures.cpu.push(PhaseCpu::new(
            "ingress at full speed",
            "request",
            &ended.since(&sending_started),
            ledger.requests.accepted as f64,
        ));
    }
    if let Some(drain) = &ledger.drain {
        figures.worker_merged_per_sec = drain.drain_rate_per_sec;
        figures.lost += drain.lost;
        // Every event of the phase is merged after the worker started. The load generator's
        // lookups of what was stored are its own work, not Postgres' for the worker.
        if let Some(started) = draining_started {
            figures.cpu.push(PhaseCpu::new(
                "worker draining the backlog",
                "event",
                &draining_ended
                    .since(&started)
                    .with_accounting(drain.accounting_cpu_secs),
                drain.found_events as f64,
            ));
        }
    }
    Ok(())
}

/// Phase 6, half the raw publish rate, then half the ingress's own full-speed rate (its
/// latency when it is not saturated); the worker running.
async fn half_rates(
    args: &BenchArgs,
    settings: &Settings,
    figures: &mut RunFigures,
) -> anyhow::Result<()> {
    let half_rate = async |rate: f64| {
        let mut load = loadgen_args(args, settings);
        load.rate = rate;
        load.concurrency = args.concurrency.max(128);
        let ledger = loadgen::run(&load, settings).await?;
        let lost = ledger.drain.as_ref().map_or(0, |drain| drain.lost);
        anyhow::Ok((ledger.requests, lost))
    };
    let (requests, lost) = half_rate(figures.raw_publish_per_sec / 2.0).await?;
    figures.ingress_p99_ms_half = requests.ack_latency_ms.p99;
    figures.half_rate_achieved = requests.accepted_per_sec;
    figures.lost += lost;
    let (requests, lost) = half_rate(figures.ingress_accepted_per_sec / 2.0).await?;
    figures.ingress_p99_ms_half_own = requests.ack_latency_ms.p99;
    figures.half_own_achieved = requests.accepted_per_sec;
    figures.lost += lost;
    Ok(())
}

/// Phase 7, 1,000 webhooks/s end to end.
async fn steady_end_to_end(
    args: &BenchArgs,
    settings: &Settings,
    figures: &mut RunFigures,
) -> anyhow::Result<()> {
    let mut steady = loadgen_args(args, settings);
    steady.rate = 1000.0;
    steady.concurrency = 32;
    let ledger = loadgen::run(&steady, settings).await?;
    if let Some(drain) = &ledger.drain {
        figures.e2e_p50_ms_1k = drain.end_to_end_latency_ms.p50;
        figures.e2e_p99_ms_1k = drain.end_to_end_latency_ms.p99;
        figures.lost += drain.lost;
    }
    Ok(())
}

async fn run_soak(
    args: &BenchArgs,
    base: &Settings,
    bin_dir: &std::path::Path,
    soak: Duration,
) -> anyhow::Result<()> {
    let mut stack = Stack::create(base, bin_dir).await?;
    let result = async {
        stack.start_ingress().await?;
        stack.start_worker().await?;
        let settings = stack.settings.clone();
        let (ingress_start, worker_start) = stack.rss();
        println!("soak: {:.0} webhooks/s for {} s", args.soak_rate, soak.as_secs());
        println!("minute  ingress RSS KiB  worker RSS KiB");
        println!("{:>6}  {:>15}  {:>14}", 0, ingress_start, worker_start);
        let mut load = loadgen_args(args, &settings);
        load.rate = args.soak_rate;
        load.concurrency = 32;
        load.duration = soak;
        load.duplicates = 0.1;
        load.invalid = 0.01;
        let started = Instant::now();
        let monitor = async {
            let mut minute = 0;
            while started.elapsed() < soak {
                tokio::time::sleep(Duration::from_secs(60).min(soak)).await;
                minute += 1;
                let (ingress, worker) = stack.rss();
                println!("{minute:>6}  {ingress:>15}  {worker:>14}");
            }
        };
        let (ledger, ()) = tokio::join!(loadgen::run(&load, &settings), monitor);
        let ledger = ledger?;
        let (ingress_end, worker_end) = stack.rss();
        print!("{ledger}");
        println!(
            "RSS start → end: ingress {ingress_start} → {ingress_end} KiB, worker {worker_start} → {worker_end} KiB"
        );
        anyhow::ensure!(ledger.balanced(), "the soak run's ledger does not balance");
        Ok(())
    }
    .await;
    stack.destroy().await;
    result
}

/// The size of a typical inbound envelope: a Starshipit webhook with its one mapped event.
fn typical_envelope_len(settings: &Settings) -> anyhow::Result<usize> {
    let profiles = settings.profiles()?;
    let profile = profiles
        .get("starshipit")
        .ok_or_else(|| anyhow::anyhow!("the built-in starshipit profile is missing"))?;
    let scan = loadgen::payloads::Scan {
        tracking_number: "LG0000000000001".to_owned(),
        step: 1,
        occurred_at: Utc::now(),
    };
    let body = loadgen::payloads::render("starshipit", &scan, 1).unwrap_or_default();
    let headers = loadgen::signed_headers(&profile, &body, "bench", Utc::now())?;
    let verified = profile.verify(
        waybill_carriers::UnverifiedRequest {
            headers: &headers,
            body: &body,
        },
        &["bench".to_owned()],
        Utc::now(),
    )?;
    let mapped = profile.map_webhook(&verified, Utc::now())?;
    let envelope = waybill_bus::envelope::WebhookV1::new(
        waybill_core::SourceId::parse("starshipit")?,
        waybill_core::TenantId::default_tenant(),
        false,
        Utc::now(),
        None,
        mapped.events,
        String::from_utf8_lossy(&body).into_owned(),
        None,
    );
    Ok(waybill_bus::envelope::InboundEnvelope::WebhookV1(envelope)
        .encode()
        .len())
}

/// The `postgres` maintenance database on the server of `url`.
fn admin_url(url: &str) -> anyhow::Result<String> {
    let (base, query) = match url.split_once('?') {
        Some((base, query)) => (base, format!("?{query}")),
        None => (url, String::new()),
    };
    let slash = base
        .rfind('/')
        .filter(|at| *at > "postgres://".len())
        .ok_or_else(|| anyhow::anyhow!("DATABASE_URL has no database name"))?;
    Ok(format!("{}/postgres{query}", &base[..slash]))
}

fn free_port() -> anyhow::Result<std::net::SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    Ok(listener.local_addr()?)
}

async fn wait_ready(url: &str) -> anyhow::Result<()> {
    let http = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if let Ok(response) = http.get(url).send().await
            && response.status().is_success()
        {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    anyhow::bail!("{url} did not become ready within 30 s")
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find(|line| line.starts_with("VmRSS:"))
                .and_then(|line| line.split_whitespace().nth(1))
                .and_then(|kib| kib.parse().ok())
        })
        .unwrap_or(0)
}

/// Medians over runs, printed as the README's table.
struct Report {
    runs: usize,
    median: RunFigures,
    lost: u64,
}

fn median(values: impl Iterator<Item = f64>) -> f64 {
    let mut values: Vec<f64> = values.collect();
    values.sort_by(f64::total_cmp);
    values.get(values.len() / 2).copied().unwrap_or(0.0)
}

impl Report {
    fn from_runs(runs: &[RunFigures]) -> Report {
        let lost = runs.iter().map(|r| r.lost).sum();
        Report {
            runs: runs.len(),
            median: RunFigures {
                lost,
                cpu: median_cpu(runs),
                ..median_rates(runs)
            },
            lost,
        }
    }
}

/// The last run's figures with every rate, latency and ratio (each `f64` field) replaced by its
/// median over `runs`.
fn median_rates(runs: &[RunFigures]) -> RunFigures {
    let as_json: Vec<serde_json::Value> = runs
        .iter()
        .filter_map(|run| serde_json::to_value(run).ok())
        .collect();
    let Some(mut merged) = as_json.last().cloned() else {
        return RunFigures::default();
    };
    if let Some(fields) = merged.as_object_mut() {
        for (name, value) in fields.iter_mut().filter(|(_, value)| value.is_f64()) {
            let of_runs = as_json.iter().filter_map(|run| run[name.as_str()].as_f64());
            *value = serde_json::json!(median(of_runs));
        }
    }
    serde_json::from_value(merged).unwrap_or_default()
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let r = &self.median;
        let ratio = |a: f64, b: f64| if b > 0.0 { a / b } else { 0.0 };
        writeln!(
            f,
            "medians of {} runs; envelope {} bytes",
            self.runs, r.envelope_bytes
        )?;
        writeln!(f, "| figure | ceiling | Waybill | ratio | target |")?;
        writeln!(f, "|---|---:|---:|---:|---|")?;
        writeln!(
            f,
            "| ingress accepted/s vs the ideal ingress (one source) | {:.0}/s | {:.0}/s | {:.2} | ≥ 0.85 |",
            r.ideal_ingress_per_sec,
            r.ingress_accepted_per_sec,
            ratio(r.ingress_accepted_per_sec, r.ideal_ingress_per_sec)
        )?;
        writeln!(
            f,
            "| ingress accepted/s vs raw confirmed publish (quorum) | {:.0}/s | {:.0}/s | {:.2} | floor |",
            r.raw_publish_per_sec,
            r.ingress_accepted_per_sec,
            ratio(r.ingress_accepted_per_sec, r.raw_publish_per_sec)
        )?;
        writeln!(
            f,
            "| ingress p99 ack at full speed | | {:.1} ms | | |",
            r.ingress_p99_ms_full
        )?;
        writeln!(
            f,
            "| ingress p99 ack at half the raw rate ({:.0}/s achieved) | | {:.1} ms | | ≤ 20 ms |",
            r.half_rate_achieved, r.ingress_p99_ms_half
        )?;
        writeln!(
            f,
            "| ingress p99 ack at half its own full speed ({:.0}/s achieved) | | {:.1} ms | | |",
            r.half_own_achieved, r.ingress_p99_ms_half_own
        )?;
        writeln!(
            f,
            "| worker merged events/s vs the ideal worker (same backlog) | {:.0}/s | {:.0}/s | {:.2} | ≥ 0.70 |",
            r.ideal_worker_per_sec,
            r.worker_merged_per_sec,
            ratio(r.worker_merged_per_sec, r.ideal_worker_per_sec)
        )?;
        writeln!(
            f,
            "| worker merged events/s vs raw batched upsert | {:.0}/s | {:.0}/s | {:.2} | floor |",
            r.raw_upsert_per_sec,
            r.worker_merged_per_sec,
            ratio(r.worker_merged_per_sec, r.raw_upsert_per_sec)
        )?;
        writeln!(
            f,
            "| end-to-end latency at 1,000 webhooks/s (p50 / p99) | | {:.1} / {:.1} ms | | p99 ≤ 100 ms |",
            r.e2e_p50_ms_1k, r.e2e_p99_ms_1k
        )?;
        writeln!(
            f,
            "| RSS ingress / worker, start → end of run (KiB) | | {} → {} / {} → {} | | flat |",
            r.ingress_rss_kib.0, r.ingress_rss_kib.1, r.worker_rss_kib.0, r.worker_rss_kib.1
        )?;
        write_stored_rows(f, &r.stored)?;
        writeln!(f, "| lost (accepted − stored) | | {} | | 0 |", self.lost)?;
        writeln!(f)?;
        write_cpu_table(f, &r.cpu)
    }
}

/// The rows of a run on a stored history (`--stored-events`): the seed, and the reads while the
/// worker drained. None on an empty database.
fn write_stored_rows(f: &mut std::fmt::Formatter<'_>, stored: &StoredFigures) -> std::fmt::Result {
    if stored.stored_events == 0 {
        return Ok(());
    }
    let gib = crate::seed::gib;
    writeln!(
        f,
        "| stored before the phases: {} events over {} shipments, seeded in {:.0} s (on disk with indexes: tracking_events {:.2} GiB, shipments {:.2} GiB) | | | | |",
        stored.stored_events,
        stored.stored_shipments,
        stored.seed_secs,
        gib(stored.stored_events_bytes),
        gib(stored.stored_shipments_bytes)
    )?;
    if stored.reads + stored.read_failures == 0 {
        return Ok(());
    }
    writeln!(
        f,
        "| current status by order number while the worker drains (p50 / p99; {} reads in all, {} failed) | | {:.1} / {:.1} ms | | p99 ≤ 10 ms |",
        stored.reads, stored.read_failures, stored.read_status_p50_ms, stored.read_status_p99_ms
    )?;
    writeln!(
        f,
        "| history by tracking number while the worker drains (p50 / p99) | | {:.1} / {:.1} ms | | p99 ≤ 10 ms |",
        stored.read_history_p50_ms, stored.read_history_p99_ms
    )?;
    writeln!(
        f,
        "| the same reads on the idle worker after the drain, status / history (p50 / p99) | | {:.1} / {:.1}, {:.1} / {:.1} ms | | |",
        stored.idle_status_p50_ms,
        stored.idle_status_p99_ms,
        stored.idle_history_p50_ms,
        stored.idle_history_p99_ms
    )
}

/// Each phase's median CPU per unit, component by component, over the runs.
fn median_cpu(runs: &[RunFigures]) -> Vec<PhaseCpu> {
    let Some(first) = runs.first() else {
        return Vec::new();
    };
    first
        .cpu
        .iter()
        .map(|phase| {
            let of_runs = || {
                runs.iter()
                    .filter_map(|run| run.cpu.iter().find(|p| p.phase == phase.phase))
            };
            PhaseCpu {
                phase: phase.phase,
                unit: phase.unit,
                per_unit_us: cpu::COMPONENTS
                    .iter()
                    .map(|name| {
                        let value = median(of_runs().map(|p| p.per_unit_us[name]));
                        (*name, value)
                    })
                    .collect(),
                idle_share: median(of_runs().map(|p| p.idle_share)),
            }
        })
        .collect()
}

fn write_cpu_table(f: &mut std::fmt::Formatter<'_>, phases: &[PhaseCpu]) -> std::fmt::Result {
    writeln!(
        f,
        "where the CPU went: µs of CPU per unit, by process (all share the machine's {} cores)",
        std::thread::available_parallelism().map_or(0, usize::from)
    )?;
    writeln!(
        f,
        "| phase | unit | load generator / raw client | ingress | worker | RabbitMQ | Postgres | other | all | machine idle |"
    )?;
    writeln!(f, "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|")?;
    for phase in phases {
        write!(f, "| {} | {} |", phase.phase, phase.unit)?;
        for name in cpu::COMPONENTS {
            write!(f, " {:.1} |", phase.per_unit_us[name])?;
        }
        writeln!(
            f,
            " {:.1} | {:.0}% |",
            phase.total_us(),
            phase.idle_share * 100.0
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::cpu::PhaseCpu;
    use super::{Report, RunFigures, StoredFigures, drain_line};

    /// A `--drain-only` row reads each figure from its own phase and component.
    #[test]
    fn a_drain_row_takes_each_figure_from_its_phase_and_component() {
        let phase = |phase: &'static str, unit: &'static str, base: f64| PhaseCpu {
            phase,
            unit,
            per_unit_us: ["bench", "ingress", "worker", "broker", "database"]
                .into_iter()
                .zip([base, base + 1.0, base + 2.0, base + 3.0, base + 4.0])
                .collect::<BTreeMap<_, _>>(),
            idle_share: 0.0,
        };
        let figures = RunFigures {
            ingress_accepted_per_sec: 16_000.4,
            worker_merged_per_sec: 15_000.6,
            cpu: vec![
                phase("ingress at full speed", "request", 10.0),
                phase("worker draining the backlog", "event", 50.0),
            ],
            ..RunFigures::default()
        };
        assert_eq!(
            drain_line("1", &figures, false),
            "| 1 | 16000/s | 11.0 / 13.0 | 15001/s | 52.0 / 53.0 / 54.0 |"
        );
        let figures = RunFigures {
            stored: StoredFigures {
                read_status_p50_ms: 1.04,
                read_status_p99_ms: 2.0,
                read_history_p50_ms: 3.0,
                read_history_p99_ms: 40.06,
                idle_status_p50_ms: 0.5,
                idle_status_p99_ms: 4.0,
                idle_history_p50_ms: 0.7,
                idle_history_p99_ms: 9.96,
                ..StoredFigures::default()
            },
            ..figures
        };
        assert_eq!(
            drain_line("median", &figures, true),
            "| median | 16000/s | 11.0 / 13.0 | 15001/s | 52.0 / 53.0 / 54.0 | 1.0 / 2.0, 3.0 / 40.1 | 0.5 / 4.0, 0.7 / 10.0 |"
        );
    }

    /// Every rate and latency is the median of the runs, losses add up, and the rest (sizes,
    /// memory) is the last run's.
    #[test]
    fn the_report_takes_medians_of_rates_and_sums_losses() {
        let run = |rate: f64, p99: f64, lost: u64, envelope_bytes: usize| RunFigures {
            ideal_ingress_per_sec: rate,
            worker_merged_per_sec: rate * 2.0,
            e2e_p99_ms_1k: p99,
            lost,
            envelope_bytes,
            ..RunFigures::default()
        };
        let report = Report::from_runs(&[
            run(300.0, 9.0, 1, 700),
            run(100.0, 30.0, 0, 700),
            run(200.0, 1.5, 2, 710),
        ]);
        assert_eq!(report.median.ideal_ingress_per_sec, 200.0);
        assert_eq!(report.median.worker_merged_per_sec, 400.0);
        assert_eq!(report.median.e2e_p99_ms_1k, 9.0);
        assert_eq!(report.lost, 3);
        assert_eq!(report.median.lost, 3);
        assert_eq!(report.median.envelope_bytes, 710);
    }
}
