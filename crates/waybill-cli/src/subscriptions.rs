//! `waybill subscriptions add|list|disable|enable|rotate-secret|remove`: HTTP subscriptions to a
//! tenant's changes (see `docs/subscriptions.md`).
//!
//! `add` and `rotate-secret` print the signing secret (`whsec_…`) once, alone on stdout, so
//! `secret=$(waybill subscriptions add …)` works; everything else goes to stderr. A secret can
//! be given instead of generated with `--secret` or `WAYBILL_SUBSCRIPTION_SECRET` (the variable
//! keeps it out of the shell history and the process list).

use anyhow::Context;
use chrono::{DateTime, Utc};
use clap::{Args, Subcommand};
use reqwest::Url;
use serde::Serialize;
use waybill_config::ExposeSecret;
use waybill_config::Settings;
use waybill_core::{CarrierCode, Status, TenantId};
use waybill_store::Store;
use waybill_store::fanout::{self, DisabledReason, NewSubscription, SecretText, Subscription};
use waybill_worker::fanout::{DestinationPolicy, WebhookSecret};

/// Subscription commands.
#[derive(Debug, Clone, Subcommand)]
pub enum SubscriptionsCommand {
    /// Subscribe a URL to a tenant's changes; prints the signing secret once (stdout).
    Add {
        #[command(flatten)]
        subscription: AddSubscription,
        /// Print the subscription, secret included, as JSON.
        #[arg(long)]
        json: bool,
    },
    /// List subscriptions (never their secrets), with why a disabled one is disabled.
    List {
        /// Only this tenant's.
        #[arg(long)]
        tenant: Option<String>,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Stop delivering to a subscription; its pending deliveries wait.
    Disable {
        /// The subscription's id.
        id: i64,
    },
    /// Deliver to a subscription again (also after it was disabled for 410 or failures); its
    /// pending deliveries are due at once.
    Enable {
        /// The subscription's id.
        id: i64,
    },
    /// Replace the signing secret; prints the new one once (stdout). The old one keeps signing
    /// too for fanout.secret_rotation_window.
    RotateSecret {
        /// The subscription's id.
        id: i64,
        /// The new secret (`whsec_…`); generated when not given.
        #[arg(long, env = "WAYBILL_SUBSCRIPTION_SECRET", hide_env_values = true)]
        secret: Option<String>,
    },
    /// Remove a subscription with all its deliveries, dead ones included.
    Remove {
        /// The subscription's id.
        id: i64,
    },
}

/// A new subscription, as `add` takes it (also its command-line arguments).
#[derive(Debug, Clone, Default, Args)]
pub struct AddSubscription {
    /// Where to POST the events (http or https).
    #[arg(long)]
    pub url: String,
    /// The tenant whose changes it receives.
    #[arg(long, default_value = TenantId::DEFAULT)]
    pub tenant: String,
    /// Only this carrier (repeat for several; default: all).
    #[arg(long = "carrier")]
    pub carriers: Vec<String>,
    /// Only changes to this status, e.g. Delivered or out_for_delivery (repeat for
    /// several; default: all).
    #[arg(long = "status")]
    pub statuses: Vec<String>,
    /// A label for people.
    #[arg(long, default_value = "")]
    pub description: String,
    /// The signing secret (`whsec_…`); generated when not given.
    #[arg(long, env = "WAYBILL_SUBSCRIPTION_SECRET", hide_env_values = true)]
    pub secret: Option<String>,
}

/// A subscription as `list --json` prints it: everything but the secrets.
#[derive(Debug, Clone, Serialize)]
pub struct ListedSubscription {
    /// Its id.
    pub id: i64,
    /// The tenant.
    pub tenant: String,
    /// The destination.
    pub url: String,
    /// The label.
    pub description: String,
    /// Carrier filter (empty: all).
    pub carriers: Vec<String>,
    /// Status filter (empty: all).
    pub statuses: Vec<Status>,
    /// Whether deliveries are attempted.
    pub enabled: bool,
    /// Why not.
    pub disabled_reason: Option<DisabledReason>,
    /// Since when not.
    pub disabled_at: Option<DateTime<Utc>>,
    /// The first failed attempt since the last success.
    pub failing_since: Option<DateTime<Utc>>,
    /// Until when the previous secret still signs (after a rotation).
    pub previous_secret_expires_at: Option<DateTime<Utc>>,
    /// When it was created.
    pub created_at: DateTime<Utc>,
}

impl From<&Subscription> for ListedSubscription {
    fn from(s: &Subscription) -> Self {
        ListedSubscription {
            id: s.id,
            tenant: s.tenant.to_string(),
            url: s.url.clone(),
            description: s.description.clone(),
            carriers: s.carriers.iter().map(ToString::to_string).collect(),
            statuses: s.statuses.clone(),
            enabled: s.enabled,
            disabled_reason: s.disabled_reason,
            disabled_at: s.disabled_at,
            failing_since: s.failing_since,
            previous_secret_expires_at: s.previous_secret_expires_at,
            created_at: s.created_at,
        }
    }
}

/// Runs a subscriptions command, printing for people.
pub async fn run(command: SubscriptionsCommand, settings: &Settings) -> anyhow::Result<()> {
    match command {
        SubscriptionsCommand::Add {
            subscription: request,
            json,
        } => {
            let (subscription, secret) = add(settings, &request).await?;
            if json {
                let mut value = serde_json::to_value(ListedSubscription::from(&subscription))?;
                value["secret"] = serde_json::Value::String(secret);
                println!("{}", serde_json::to_string_pretty(&value)?);
            } else {
                eprintln!(
                    "created subscription {} for tenant {} -> {}",
                    subscription.id, subscription.tenant, subscription.url
                );
                eprintln!("its signing secret (shown once; rotate-secret makes a new one):");
                println!("{secret}");
            }
        }
        SubscriptionsCommand::List { tenant, json } => {
            let tenant = crate::args::tenant_filter(tenant.as_deref())?;
            let listed = list(settings, tenant.as_ref()).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&listed)?);
            } else {
                print_table(&listed);
            }
        }
        SubscriptionsCommand::Disable { id } => {
            let subscription = disable(settings, id).await?;
            let reason = subscription
                .disabled_reason
                .map_or("", DisabledReason::as_str);
            eprintln!("subscription {id} is disabled ({reason})");
        }
        SubscriptionsCommand::Enable { id } => {
            enable(settings, id).await?;
            eprintln!("subscription {id} is enabled; its pending deliveries are sent now");
        }
        SubscriptionsCommand::RotateSecret { id, secret } => {
            let (subscription, secret) = rotate_secret(settings, id, secret.as_deref()).await?;
            let until = subscription
                .previous_secret_expires_at
                .map(|at| at.to_rfc3339())
                .unwrap_or_default();
            eprintln!("subscription {id} has a new secret; the old one also signs until {until}:");
            println!("{secret}");
        }
        SubscriptionsCommand::Remove { id } => {
            let deliveries = remove(settings, id).await?;
            eprintln!("subscription {id} removed with its {deliveries} deliveries");
        }
    }
    Ok(())
}

/// Validates and stores a subscription. Returns it with its secret (the only time the secret
/// leaves the database).
pub async fn add(
    settings: &Settings,
    request: &AddSubscription,
) -> anyhow::Result<(Subscription, String)> {
    let tenant = TenantId::parse(&request.tenant).context("--tenant")?;
    let url = destination(settings, &request.url)?;
    let carriers = request
        .carriers
        .iter()
        .map(|c| CarrierCode::parse(c).with_context(|| format!("--carrier {c}")))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let statuses = request
        .statuses
        .iter()
        .map(|s| s.parse::<Status>().with_context(|| "--status".to_owned()))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let secret = secret_or_generated(request.secret.as_deref())?;
    let store = Store::connect(settings.database.url.expose_secret(), 1).await?;
    let stored = {
        let mut connection = store.acquire().await?;
        fanout::insert_subscription(
            &mut connection,
            &NewSubscription {
                tenant: &tenant,
                url: url.as_str(),
                description: &request.description,
                carriers: &dedup(carriers),
                statuses: &dedup(statuses),
                secret: &SecretText::new(secret.clone()),
            },
        )
        .await
    };
    store.close().await;
    Ok((stored?, secret))
}

/// Subscriptions, by id; only `tenant`'s when given.
pub async fn list(
    settings: &Settings,
    tenant: Option<&TenantId>,
) -> anyhow::Result<Vec<ListedSubscription>> {
    let store = Store::connect(settings.database.url.expose_secret(), 1).await?;
    let listed = {
        let mut connection = store.acquire().await?;
        fanout::list_subscriptions(&mut connection, tenant).await
    };
    store.close().await;
    Ok(listed?.iter().map(ListedSubscription::from).collect())
}

/// Disables a subscription (`manual`); one already disabled keeps its reason.
pub async fn disable(settings: &Settings, id: i64) -> anyhow::Result<Subscription> {
    with_store(settings, |mut connection| async move {
        fanout::disable_subscription(&mut connection, id, DisabledReason::Manual, Utc::now()).await
    })
    .await?
    .with_context(|| format!("no subscription {id} exists"))
}

/// Enables a subscription and forgets its failures.
pub async fn enable(settings: &Settings, id: i64) -> anyhow::Result<Subscription> {
    with_store(settings, |mut connection| async move {
        fanout::enable_subscription(&mut connection, id, Utc::now()).await
    })
    .await?
    .with_context(|| format!("no subscription {id} exists"))
}

/// Replaces a subscription's secret (generated when `secret` is `None`); the old one keeps
/// signing for `fanout.secret_rotation_window`. Returns the new secret.
pub async fn rotate_secret(
    settings: &Settings,
    id: i64,
    secret: Option<&str>,
) -> anyhow::Result<(Subscription, String)> {
    let secret = secret_or_generated(secret)?;
    let window = chrono::Duration::from_std(settings.fanout.secret_rotation_window.duration())
        .context("fanout.secret_rotation_window is too long")?;
    let text = SecretText::new(secret.clone());
    let subscription = with_store(settings, |mut connection| async move {
        fanout::rotate_secret(&mut connection, id, &text, Utc::now() + window).await
    })
    .await?
    .with_context(|| format!("no subscription {id} exists"))?;
    Ok((subscription, secret))
}

/// Removes a subscription and its deliveries; returns how many deliveries went with it.
pub async fn remove(settings: &Settings, id: i64) -> anyhow::Result<u64> {
    with_store(settings, |mut connection| async move {
        fanout::delete_subscription(&mut connection, id).await
    })
    .await?
    .with_context(|| format!("no subscription {id} exists"))
}

/// Parses and checks a destination: http or https, a host, not an internal IP address unless
/// allowed (host names are checked again on every connection, by the worker).
fn destination(settings: &Settings, raw: &str) -> anyhow::Result<Url> {
    let url = Url::parse(raw.trim()).context("--url is not a URL")?;
    DestinationPolicy::new(&settings.fanout.allowed_hosts)
        .check_url(&url)
        .context("--url")?;
    Ok(url)
}

fn secret_or_generated(secret: Option<&str>) -> anyhow::Result<String> {
    match secret {
        Some(secret) => {
            WebhookSecret::parse(secret).context("--secret")?;
            Ok(secret.trim().to_owned())
        }
        None => Ok(WebhookSecret::generate()),
    }
}

fn dedup<T: Ord>(mut values: Vec<T>) -> Vec<T> {
    values.sort();
    values.dedup();
    values
}

async fn with_store<T, F, Fut>(settings: &Settings, work: F) -> anyhow::Result<T>
where
    F: FnOnce(waybill_store::PooledConnection) -> Fut,
    Fut: Future<Output = Result<T, waybill_store::StoreError>>,
{
    let store = Store::connect(settings.database.url.expose_secret(), 1).await?;
    let outcome = match store.acquire().await {
        Ok(connection) => work(connection).await,
        Err(error) => Err(error),
    };
    store.close().await;
    Ok(outcome?)
}

fn print_table(subscriptions: &[ListedSubscription]) {
    if subscriptions.is_empty() {
        eprintln!("no subscriptions");
    }
    println!(
        "{:>5}  {:<12} {:<18} {:<20} {:<24} URL",
        "ID", "TENANT", "STATE", "CARRIERS", "STATUSES"
    );
    for s in subscriptions {
        let state = match s.disabled_reason {
            None if s.failing_since.is_some() => "enabled, failing".to_owned(),
            None => "enabled".to_owned(),
            Some(reason) => format!("disabled ({})", reason.as_str()),
        };
        let carriers = if s.carriers.is_empty() {
            "all".to_owned()
        } else {
            s.carriers.join(",")
        };
        let statuses = if s.statuses.is_empty() {
            "all".to_owned()
        } else {
            s.statuses
                .iter()
                .map(|s| s.as_str())
                .collect::<Vec<_>>()
                .join(",")
        };
        println!(
            "{:>5}  {:<12} {:<18} {:<20} {:<24} {}",
            s.id,
            s.tenant,
            state,
            carriers,
            statuses,
            crate::output::cell(&s.url)
        );
    }
}
