//! `waybill-bench`: the load generator and the benchmark. Thin: parse arguments, call the library.

use clap::{Parser, Subcommand};
use waybill_bench::{bench, loadgen, seed};
use waybill_config::Settings;

/// Waybill's load tools: play couriers against an ingress, measure ceilings and figures
#[derive(Debug, Parser)]
#[command(name = "waybill-bench", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Play many couriers at once against a running ingress and balance the books in Postgres.
    Loadgen(loadgen::LoadgenArgs),
    /// Measure the machine's ceilings and Waybill's figures side by side, and the CPU each
    /// message, request and event costs every process (starts its own ingress and worker on a
    /// fresh database and queue prefix).
    Bench(bench::BenchArgs),
    /// Drain the same backlog with 1, 2, 4… worker processes (on a RabbitMQ cluster given by
    /// `bus.urls`): events/s and CPU per event for each (starts its own ingress and workers on a
    /// fresh database and queue prefix per count).
    Scale(bench::scale::ScaleArgs),
    /// Store N tracking events over M shipments in the configured database (migrated first),
    /// as the merge would have left them, to measure against a big table; prints the time it
    /// took and the tables' on-disk size.
    Seed(seed::SeedArgs),
}

#[tokio::main]
async fn main() {
    let cli = Cli::parse();
    let settings = match Settings::load() {
        Ok(settings) => settings,
        Err(error) => {
            eprintln!("waybill-bench: {error}");
            std::process::exit(2);
        }
    };
    let _telemetry = waybill_telemetry::init(&waybill_telemetry::TelemetryConfig {
        service_name: "waybill-bench",
        format: waybill_telemetry::LogFormat::Pretty,
        default_filter: "warn".to_owned(),
        traces_filter: settings.telemetry.traces_filter.clone(),
    });
    if let Err(error) = run(cli.command, settings).await {
        eprintln!("waybill-bench: {error:#}");
        std::process::exit(1);
    }
}

async fn run(command: Command, settings: Settings) -> anyhow::Result<()> {
    match command {
        Command::Bench(args) => bench::run(&args, &settings).await?,
        Command::Scale(args) => bench::scale::run(&args, &settings).await?,
        Command::Seed(args) => print!("{}", seed::run(&args, &settings).await?),
        Command::Loadgen(args) => {
            let ledger = loadgen::run(&args, &settings).await?;
            if args.json {
                println!("{}", serde_json::to_string_pretty(&ledger)?);
            } else {
                print!("{ledger}");
            }
            if !ledger.balanced() {
                anyhow::bail!(
                    "the ledger does not balance: accepted requests are unaccounted for or answers contradicted their intent"
                );
            }
        }
    }
    Ok(())
}
