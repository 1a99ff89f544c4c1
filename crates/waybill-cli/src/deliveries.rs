//! `waybill deliveries dead|replay`: webhook deliveries that were given up, and sending them
//! again with the same `webhook-id` and the same bytes (see `docs/subscriptions.md`).
//!
//! Replaying puts a dead delivery back in the queue with a fresh retry schedule; a running
//! worker sends it within `fanout.delivery_interval_ms` (once its subscription is enabled).
//! Bodies are never printed: they carry personal data.

use chrono::Utc;
use clap::Subcommand;
use waybill_config::ExposeSecret;
use waybill_config::Settings;
use waybill_core::TenantId;
use waybill_store::Store;
use waybill_store::fanout::{self, DeadFilter, DeliveryRecord};

/// Delivery commands.
#[derive(Debug, Clone, Subcommand)]
pub enum DeliveriesCommand {
    /// List dead deliveries, newest first, with why they were given up.
    Dead {
        /// Only this subscription's.
        #[arg(long)]
        subscription: Option<i64>,
        /// Only this tenant's.
        #[arg(long)]
        tenant: Option<String>,
        /// At most this many.
        #[arg(long, default_value_t = 100)]
        limit: u32,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Send dead deliveries again, with the same webhook-id and bytes and a fresh schedule.
    Replay {
        /// The deliveries' ids, as `dead` lists them.
        #[arg(required_unless_present = "subscription")]
        ids: Vec<i64>,
        /// Every dead delivery of this subscription instead.
        #[arg(long, conflicts_with = "ids")]
        subscription: Option<i64>,
    },
}

/// What to replay.
#[derive(Debug, Clone)]
pub enum ReplayTarget {
    /// These deliveries (those that are dead).
    Ids(Vec<i64>),
    /// Every dead delivery of a subscription.
    Subscription(i64),
}

/// Runs a deliveries command, printing for people.
pub async fn run(command: DeliveriesCommand, settings: &Settings) -> anyhow::Result<()> {
    match command {
        DeliveriesCommand::Dead {
            subscription,
            tenant,
            limit,
            json,
        } => {
            let tenant = crate::args::tenant_filter(tenant.as_deref())?;
            let dead = dead(settings, subscription, tenant.as_ref(), limit).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&dead)?);
            } else {
                print_table(&dead);
            }
        }
        DeliveriesCommand::Replay { ids, subscription } => {
            let target = match subscription {
                Some(id) => ReplayTarget::Subscription(id),
                None => ReplayTarget::Ids(ids.clone()),
            };
            let replayed = replay(settings, &target).await?;
            eprintln!("{replayed} dead deliveries are pending again");
            if let ReplayTarget::Ids(ids) = &target
                && replayed < ids.len() as u64
            {
                eprintln!(
                    "{} of the ids given are not dead deliveries and were left alone",
                    ids.len() as u64 - replayed
                );
            }
        }
    }
    Ok(())
}

/// Dead deliveries, newest first.
pub async fn dead(
    settings: &Settings,
    subscription_id: Option<i64>,
    tenant: Option<&TenantId>,
    limit: u32,
) -> anyhow::Result<Vec<DeliveryRecord>> {
    let store = Store::connect(settings.database.url.expose_secret(), 1).await?;
    let listed = match store.acquire().await {
        Ok(mut connection) => {
            fanout::list_dead(
                &mut connection,
                &DeadFilter {
                    subscription_id,
                    tenant,
                    limit,
                },
            )
            .await
        }
        Err(error) => Err(error),
    };
    store.close().await;
    Ok(listed?)
}

/// Sends dead deliveries back to pending; returns how many. Warns (stderr) about those whose
/// subscription is disabled: they wait until it is enabled.
pub async fn replay(settings: &Settings, target: &ReplayTarget) -> anyhow::Result<u64> {
    let store = Store::connect(settings.database.url.expose_secret(), 1).await?;
    let outcome = replay_on(&store, target).await;
    store.close().await;
    outcome
}

async fn replay_on(store: &Store, target: &ReplayTarget) -> anyhow::Result<u64> {
    let mut connection = store.acquire().await?;
    let (count, subscriptions) = match target {
        ReplayTarget::Ids(ids) => {
            let mut subscriptions = Vec::new();
            for id in ids {
                if let Some(record) = fanout::get_delivery(&mut connection, *id).await? {
                    subscriptions.push(record.subscription_id);
                }
            }
            let replayed = fanout::replay_dead(&mut connection, ids, Utc::now()).await?;
            (replayed.len() as u64, subscriptions)
        }
        ReplayTarget::Subscription(id) => (
            fanout::replay_all_dead(&mut connection, *id, Utc::now()).await?,
            vec![*id],
        ),
    };
    let mut subscriptions = subscriptions;
    subscriptions.sort_unstable();
    subscriptions.dedup();
    for id in subscriptions {
        match fanout::get_subscription(&mut connection, id).await? {
            Some(s) if !s.enabled => eprintln!(
                "note: subscription {id} is disabled; its deliveries wait until `waybill subscriptions enable {id}`"
            ),
            Some(_) => {}
            None => eprintln!("note: subscription {id} does not exist"),
        }
    }
    Ok(count)
}

fn print_table(deliveries: &[DeliveryRecord]) {
    if deliveries.is_empty() {
        eprintln!("no dead deliveries");
    }
    println!(
        "{:>8} {:>6}  {:<46} {:>8} {:>6}  {:<25} LAST ERROR",
        "ID", "SUB", "WEBHOOK-ID", "ATTEMPTS", "STATUS", "DEAD AT"
    );
    for d in deliveries {
        println!(
            "{:>8} {:>6}  {:<46} {:>8} {:>6}  {:<25} {}",
            d.id,
            d.subscription_id,
            d.webhook_id,
            d.attempts,
            d.last_status
                .map_or_else(|| "-".to_owned(), |s| s.to_string()),
            d.dead_at.map(|at| at.to_rfc3339()).unwrap_or_default(),
            crate::output::cell(d.last_error.as_deref().unwrap_or_default())
        );
    }
}
