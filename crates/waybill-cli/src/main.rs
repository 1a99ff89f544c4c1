//! `waybill`: the admin CLI. Thin: parse arguments, call the library crates.

mod shipments;

use clap::{Parser, Subcommand};
use waybill_cli::{cohorts, deadletters, deliveries, keys, profiles, rejected, subscriptions};
use waybill_config::ExposeSecret;
use waybill_config::Settings;
use waybill_telemetry::TelemetryConfig;

/// Waybill's admin command line.
#[derive(Debug, Parser)]
#[command(
    name = "waybill",
    version,
    about = "Waybill admin CLI: migrations, topology, shipments, dead letters"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Apply the database migrations (idempotent; safe to run from several places at once).
    Migrate,
    /// Declare RabbitMQ exchanges and queues (idempotent).
    Topology,
    /// Register and inspect shipments.
    #[command(subcommand)]
    Shipments(shipments::ShipmentsCommand),
    /// Check the configuration and list the sources and carrier profiles it resolves to
    /// (never a secret).
    Config {
        /// Print JSON instead of lines.
        #[arg(long)]
        json: bool,
    },
    /// Inspect, replay or discard the dead-lettered messages of `waybill.dead` (bodies are
    /// shown only with `show --body`: they carry personal data).
    #[command(subcommand)]
    Deadletters(deadletters::DeadLettersCommand),
    /// Create, list and revoke API keys for the platform endpoints (the secret is shown once).
    #[command(subcommand)]
    Keys(keys::KeysCommand),
    /// Manage HTTP subscriptions to processed changes (signed webhooks).
    #[command(subcommand)]
    Subscriptions(subscriptions::SubscriptionsCommand),
    /// Inspect and replay dead webhook deliveries (same webhook-id, same bytes).
    #[command(subcommand)]
    Deliveries(deliveries::DeliveriesCommand),
    /// The profile author's kit: check a profile file, map a sample, run golden tests (needs
    /// no configuration, database or broker).
    #[command(subcommand)]
    Profiles(profiles::ProfilesCommand),
    /// List, show and replay the webhook events a profile could not map (after fixing it).
    #[command(subcommand)]
    Rejected(rejected::RejectedCommand),
    /// List the tracking history's partitions, one per month of shipments, with their sizes
    /// and when `database.shipment_retention` forgets each.
    Cohorts {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
}

#[tokio::main]
async fn main() {
    let cli = Cli::parse();
    // The profile kit works on files alone: no configuration needed.
    if let Command::Profiles(command) = cli.command {
        match profiles::run(command) {
            Ok(true) => return,
            Ok(false) => std::process::exit(1),
            Err(error) => {
                eprintln!("waybill: {error:#}");
                std::process::exit(1);
            }
        }
    }
    let settings = Settings::load_or_exit("waybill");
    let _telemetry = waybill_telemetry::init(&TelemetryConfig::command_line(
        "waybill-cli",
        settings.telemetry.traces_filter.clone(),
    ));
    if let Err(error) = run(cli.command, settings).await {
        eprintln!("waybill: {error:#}");
        std::process::exit(1);
    }
}

async fn run(command: Command, settings: Settings) -> anyhow::Result<()> {
    match command {
        Command::Migrate => {
            let store =
                waybill_store::Store::connect(settings.database.url.expose_secret(), 1).await?;
            store.migrate().await?;
            eprintln!("migrations applied");
        }
        Command::Topology => {
            let connection = waybill_bus::BusConnection::connect(
                settings.bus.url.expose_secret(),
                "waybill-cli",
            )
            .await?;
            let topology = waybill_cli::topology(&settings);
            topology.declare(&connection).await?;
            connection.close().await?;
            eprintln!("topology declared");
        }
        Command::Shipments(command) => shipments::run(command, &settings).await?,
        Command::Deadletters(command) => deadletters::run(command, &settings).await?,
        Command::Keys(command) => keys::run(command, &settings).await?,
        Command::Subscriptions(command) => subscriptions::run(command, &settings).await?,
        Command::Deliveries(command) => deliveries::run(command, &settings).await?,
        Command::Rejected(command) => rejected::run(command, &settings).await?,
        Command::Cohorts { json } => cohorts::run(&settings, json).await?,
        Command::Profiles(command) => {
            if !profiles::run(command)? {
                anyhow::bail!("profile checks failed");
            }
        }
        Command::Config { json } => print_config(&settings, json)?,
    }
    Ok(())
}

/// `waybill config`: the profiles and the sources they serve, as lines or JSON; secrets are
/// counted, never shown.
fn print_config(settings: &Settings, json: bool) -> anyhow::Result<()> {
    let profiles = settings.profiles()?;
    if json {
        let sources: Vec<serde_json::Value> = settings
            .sources
            .iter()
            .map(|source| {
                serde_json::json!({
                    "id": source.id.as_str(),
                    "profile": source.profile,
                    "tenant": source.tenant.as_str(),
                    "secrets": source.secrets.len(),
                    "require_registration": source.require_registration,
                    "mode": source.mode,
                })
            })
            .collect();
        let profiles: Vec<&str> = profiles.names().collect();
        return waybill_cli::output::json(
            &serde_json::json!({ "profiles": profiles, "sources": sources }),
        );
    }
    println!(
        "profiles: {}",
        profiles.names().collect::<Vec<_>>().join(", ")
    );
    for source in &settings.sources {
        println!(
            "source {}: profile {}, tenant {}, {} secret(s), require_registration={}, mode={:?}",
            source.id,
            source.profile,
            source.tenant,
            source.secrets.len(),
            source.require_registration,
            source.mode
        );
    }
    Ok(())
}
