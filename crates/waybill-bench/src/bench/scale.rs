//! `waybill-bench scale`: how the merge rate grows with worker processes. For each worker count
//! it fills the same backlog through a real ingress (no worker running), then starts that many
//! `waybill-worker` processes on it and measures their drain: events/s, and the CPU each event
//! cost the workers, RabbitMQ and Postgres, with every accepted event found stored. Meant for a
//! RabbitMQ cluster (`bus.urls`); see docs/scaling.md.

use std::path::Path;
use std::time::Duration;

use clap::Args;
use serde::Serialize;
use tokio::process::Child;
use waybill_config::{ExposeSecret, Settings};

use super::cpu::{self, CpuReading, PhaseCpu};
use super::{Stack, free_port, load_at_full_speed, median, wait_ready};
use crate::loadgen;
use crate::scratch::{terminate, topology};

/// `waybill-bench scale` arguments.
#[derive(Debug, Clone, Args)]
pub struct ScaleArgs {
    /// Where the `waybill-ingress` and `waybill-worker` binaries are (default: beside this one).
    #[arg(long)]
    pub bin_dir: Option<std::path::PathBuf>,
    /// The worker counts to measure, each on a fresh database and queue prefix.
    #[arg(long, value_delimiter = ',', default_value = "1,2,4")]
    pub workers: Vec<usize>,
    /// Webhooks in the backlog each worker count drains.
    #[arg(long, default_value_t = 40_000)]
    pub webhooks: u64,
    /// Repetitions (the worker counts take turns within each); medians are reported.
    #[arg(long, default_value_t = 2)]
    pub runs: usize,
    /// Concurrent connections filling the backlog.
    #[arg(long, default_value_t = 64)]
    pub concurrency: usize,
    /// Print every measurement as JSON too.
    #[arg(long)]
    pub json: bool,
}

/// One drain: a worker count, its backlog and what draining it cost.
#[derive(Debug, Clone, Serialize)]
pub struct Drain {
    /// Worker processes.
    pub workers: usize,
    /// Webhooks accepted into the backlog.
    pub webhooks: u64,
    /// Ready messages in `waybill.webhooks` when the workers started.
    pub backlog: u32,
    /// Distinct events the accepted webhooks carried.
    pub events_sent: u64,
    /// Of those, found stored.
    pub events_stored: u64,
    /// Events merged per second once every worker was ready.
    pub events_per_sec: f64,
    /// CPU per event, by component, from just before the workers started to the drain's end.
    pub cpu: PhaseCpu,
}

/// Runs the scaling bench and prints its table.
pub async fn run(args: &ScaleArgs, settings: &Settings) -> anyhow::Result<()> {
    anyhow::ensure!(
        !args.workers.is_empty() && !args.workers.contains(&0),
        "--workers takes counts of at least 1, e.g. 1,2,4"
    );
    let bin_dir = super::bin_dir(args.bin_dir.as_ref())?;
    let nodes = waybill_bus::split_urls(settings.bus.url.expose_secret()).len();
    if nodes < 2 {
        eprintln!(
            "note: one AMQP URL configured, not a cluster; for the cluster figures start \
             scripts/rabbitmq-cluster.sh and set AMQP_URLS to the URLs it prints"
        );
    }
    let mut drains = Vec::new();
    for run in 0..args.runs.max(1) {
        for &workers in &args.workers {
            eprintln!("run {}/{}: {workers} worker(s)…", run + 1, args.runs.max(1));
            drains.push(one_drain(args, settings, &bin_dir, workers).await?);
        }
    }
    print!("{}", Table::new(args, nodes, &drains));
    if args.json {
        println!("{}", serde_json::to_string_pretty(&drains)?);
    }
    let incomplete: Vec<&Drain> = drains
        .iter()
        .filter(|drain| drain.events_stored != drain.events_sent)
        .collect();
    if !incomplete.is_empty() {
        anyhow::bail!(
            "{} drain(s) did not store every accepted event",
            incomplete.len()
        );
    }
    Ok(())
}

/// A fresh stack: the backlog through the ingress, then `workers` processes draining it.
async fn one_drain(
    args: &ScaleArgs,
    base: &Settings,
    bin_dir: &Path,
    workers: usize,
) -> anyhow::Result<Drain> {
    let mut stack = Stack::create(base, bin_dir).await?;
    let mut children = Vec::new();
    let result = fill_and_drain(args, &mut stack, &mut children, workers).await;
    for child in children {
        terminate(child).await;
    }
    stack.destroy().await;
    result
}

async fn fill_and_drain(
    args: &ScaleArgs,
    stack: &mut Stack,
    children: &mut Vec<Child>,
    workers: usize,
) -> anyhow::Result<Drain> {
    let settings = stack.settings.clone();
    stack.start_ingress().await?;
    let mut load = load_at_full_speed(args.concurrency, Duration::ZERO, &settings);
    load.count = Some(args.webhooks);
    load.drain_timeout = Duration::from_secs(120);
    let mut started: Option<(CpuReading, u32)> = None;
    let mut start_error = None;
    let start_workers = async {
        // The ingress is idle from here on: stop it so the CPU readings are the drain's.
        if let Some(ingress) = stack.ingress.take() {
            terminate(ingress).await;
        }
        let backlog = backlog(&settings).await;
        let before = CpuReading::with_workers(None, &[]);
        match start(stack, workers).await {
            Ok(started_children) => children.extend(started_children),
            Err(error) => start_error = Some(error),
        }
        started = Some((before, backlog));
    };
    let ledger = loadgen::run_with(&load, &settings, start_workers).await?;
    let pids: Vec<u32> = children.iter().filter_map(Child::id).collect();
    let after = CpuReading::with_workers(None, &pids);
    if let Some(error) = start_error {
        return Err(error);
    }
    let (before, backlog) = started.unwrap_or_default();
    let drain = ledger
        .drain
        .ok_or_else(|| anyhow::anyhow!("the load generator did not account for the drain"))?;
    Ok(Drain {
        workers,
        webhooks: ledger.requests.accepted,
        backlog,
        events_sent: drain.expected_events,
        events_stored: drain.found_events,
        events_per_sec: drain.drain_rate_per_sec,
        cpu: PhaseCpu::new(
            "draining",
            "event",
            &after.since(&before),
            drain.found_events as f64,
        ),
    })
}

/// Starts `count` workers at once, each on its own HTTP port, and waits until all are ready.
async fn start(stack: &Stack, count: usize) -> anyhow::Result<Vec<Child>> {
    let mut children = Vec::new();
    let mut addrs = Vec::new();
    for _ in 0..count {
        let addr = free_port()?;
        children.push(stack.spawn_at("waybill-worker", addr)?);
        addrs.push(addr);
    }
    for addr in addrs {
        wait_ready(&format!("http://{addr}/readyz")).await?;
    }
    Ok(children)
}

/// Ready messages in `waybill.webhooks` (0 when the broker does not say).
async fn backlog(settings: &Settings) -> u32 {
    let queue = topology(settings).webhooks_queue();
    let Ok(connection) =
        waybill_bus::BusConnection::connect(settings.bus.url.expose_secret(), "waybill-bench")
            .await
    else {
        return 0;
    };
    let depth = connection
        .queue_stats(&queue)
        .await
        .map_or(0, |stats| stats.messages);
    let _ = connection.close().await;
    depth
}

/// Medians by worker count, printed as docs/scaling.md's table.
struct Table {
    nodes: usize,
    runs: usize,
    rows: Vec<Row>,
}

struct Row {
    workers: usize,
    events: f64,
    events_per_sec: f64,
    cpu: PhaseCpu,
    complete: usize,
    drains: usize,
}

impl Table {
    fn new(args: &ScaleArgs, nodes: usize, drains: &[Drain]) -> Table {
        let rows = args
            .workers
            .iter()
            .map(|&workers| {
                let of = || drains.iter().filter(|drain| drain.workers == workers);
                let cpu = PhaseCpu {
                    phase: "draining",
                    unit: "event",
                    per_unit_us: cpu::COMPONENTS
                        .iter()
                        .map(|name| (*name, median(of().map(|d| d.cpu.per_unit_us[name]))))
                        .collect(),
                    idle_share: median(of().map(|d| d.cpu.idle_share)),
                };
                Row {
                    workers,
                    events: median(of().map(|d| d.events_sent as f64)),
                    events_per_sec: median(of().map(|d| d.events_per_sec)),
                    cpu,
                    complete: of().filter(|d| d.events_stored == d.events_sent).count(),
                    drains: of().count(),
                }
            })
            .collect();
        Table {
            nodes,
            runs: args.runs.max(1),
            rows,
        }
    }
}

impl std::fmt::Display for Table {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "medians of {} runs; RabbitMQ nodes: {}; {} cores shared by every process",
            self.runs,
            self.nodes,
            std::thread::available_parallelism().map_or(0, usize::from)
        )?;
        writeln!(
            f,
            "| workers | events | events/s | × 1 worker | µs CPU/event: workers | RabbitMQ | Postgres | load generator | other | all | machine idle | stored = sent |"
        )?;
        writeln!(
            f,
            "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"
        )?;
        let one = self
            .rows
            .first()
            .map_or(0.0, |row| row.events_per_sec)
            .max(f64::MIN_POSITIVE);
        for row in &self.rows {
            let us = |name: &str| row.cpu.per_unit_us[name];
            writeln!(
                f,
                "| {} | {:.0} | {:.0} | {:.2} | {:.1} | {:.1} | {:.1} | {:.1} | {:.1} | {:.1} | {:.0}% | {}/{} |",
                row.workers,
                row.events,
                row.events_per_sec,
                row.events_per_sec / one,
                us("worker"),
                us("broker"),
                us("database"),
                us("bench"),
                us("other"),
                row.cpu.total_us(),
                row.cpu.idle_share * 100.0,
                row.complete,
                row.drains,
            )?;
        }
        Ok(())
    }
}
