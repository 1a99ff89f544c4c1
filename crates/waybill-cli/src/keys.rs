//! `waybill keys create|list|revoke|publish`: API keys for the platform endpoints.
//!
//! A key is `wbk_<id>_<secret>`; only the id and SHA-256 of the secret are stored. `create`
//! prints the whole key once, alone on stdout (so `key=$(waybill keys create …)` works), and
//! everything else on stderr; nothing can show it again. After a change the command publishes
//! the new key set to `waybill.keys` itself, so the ingresses and workers apply it at once; if
//! the broker cannot be reached, the workers' periodic publish applies it within
//! `auth.refresh_secs`.

use std::time::Duration;

use anyhow::Context;
use chrono::{DateTime, Utc};
use clap::Subcommand;
use serde::Serialize;
use tokio_util::sync::CancellationToken;
use waybill_bus::keys::KeySnapshotV1;
use waybill_bus::{Publisher, PublisherConfig};
use waybill_config::ExposeSecret;
use waybill_config::{AuthMode, Settings};
use waybill_core::TenantId;
use waybill_core::access::{ApiKey, KeyId, Scope};
use waybill_store::keys::{create_api_key, key_set_snapshot, list_api_keys, revoke_api_key};
use waybill_store::{Store, StoredApiKey};

/// How long publishing the key set may take before the command gives up on it (the change is
/// committed either way; the workers' periodic publish carries it).
const PUBLISH_TIMEOUT: Duration = Duration::from_secs(5);

/// Key commands.
#[derive(Debug, Clone, Subcommand)]
pub enum KeysCommand {
    /// Create a key and print it once (stdout); only its hash is stored.
    Create {
        /// The tenant the key acts for.
        #[arg(long, default_value = TenantId::DEFAULT)]
        tenant: String,
        /// A scope: shipments:write, shipments:read or admin (repeat for several).
        #[arg(long = "scope", required = true)]
        scopes: Vec<String>,
        /// A label for people, e.g. "order-service production".
        #[arg(long, default_value = "")]
        name: String,
    },
    /// List keys by their public prefix (wbk_<id>), never their secrets.
    List {
        /// Only this tenant's keys.
        #[arg(long)]
        tenant: Option<String>,
        /// Only keys whose prefix starts with this (e.g. wbk_ab12).
        #[arg(long)]
        prefix: Option<String>,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Revoke a key (by id or wbk_<id> prefix); it stops working everywhere within
    /// auth.refresh_secs at the latest.
    Revoke {
        /// The key's id or public prefix, as `list` shows it.
        id: String,
    },
    /// Publish the current key set now (the workers also do so every auth.refresh_secs).
    Publish,
}

/// A key just created: the only moment its secret exists outside its owner's hands.
#[derive(Debug)]
pub struct CreatedKey {
    /// The whole key (show it once, then drop it).
    pub key: ApiKey,
    /// What was stored.
    pub stored: StoredApiKey,
    /// Whether the new key set reached the broker (else it applies within `auth.refresh_secs`).
    pub published: bool,
}

/// A key as `list --json` prints it.
#[derive(Debug, Serialize)]
pub struct ListedKey {
    /// `wbk_<id>`.
    pub prefix: String,
    /// The tenant.
    pub tenant: String,
    /// The label.
    pub name: String,
    /// The scopes.
    pub scopes: Vec<Scope>,
    /// When it was created.
    pub created_at: DateTime<Utc>,
    /// When it was revoked.
    pub revoked_at: Option<DateTime<Utc>>,
}

/// Runs a keys command, printing for people.
pub async fn run(command: KeysCommand, settings: &Settings) -> anyhow::Result<()> {
    if settings.auth.mode == AuthMode::None {
        eprintln!("note: [auth] mode = \"none\": keys are not checked until mode = \"keys\"");
    }
    match command {
        KeysCommand::Create {
            tenant,
            scopes,
            name,
        } => {
            let tenant = TenantId::parse(&tenant).context("--tenant")?;
            let scopes = scopes
                .iter()
                .map(|scope| Scope::parse(scope))
                .collect::<Result<Vec<_>, _>>()?;
            let created = create(settings, &tenant, &scopes, &name).await?;
            eprintln!(
                "created {} for tenant {} with scope(s) {}",
                created.key.id().public_prefix(),
                tenant,
                join(&created.stored.scopes)
            );
            eprintln!("this is the only time the key is shown; store it now:");
            println!("{}", created.key.expose());
            report_publish(created.published, settings);
        }
        KeysCommand::List {
            tenant,
            prefix,
            json,
        } => {
            let tenant = crate::args::tenant_filter(tenant.as_deref())?;
            let keys = list(settings, tenant.as_ref(), prefix.as_deref()).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&keys)?);
            } else {
                print_table(&keys);
            }
        }
        KeysCommand::Revoke { id } => {
            let id = KeyId::parse(&id)?;
            let (key, published) = revoke(settings, &id).await?;
            let revoked_at = key.revoked_at.map(|at| at.to_rfc3339()).unwrap_or_default();
            eprintln!(
                "revoked {} (tenant {}) at {revoked_at}",
                id.public_prefix(),
                key.tenant
            );
            report_publish(published, settings);
        }
        KeysCommand::Publish => {
            anyhow::ensure!(
                publish(settings).await?,
                "could not publish the key set to the broker"
            );
            eprintln!("key set published");
        }
    }
    Ok(())
}

/// Creates a key with a fresh random id and secret, stores its hash, and publishes the new key
/// set (best effort).
pub async fn create(
    settings: &Settings,
    tenant: &TenantId,
    scopes: &[Scope],
    name: &str,
) -> anyhow::Result<CreatedKey> {
    let store = Store::connect(settings.database.url.expose_secret(), 1).await?;
    let created = async {
        let mut connection = store.acquire().await?;
        create_api_key(&mut connection, tenant, scopes, name).await
    }
    .await;
    let (key, stored) = match created {
        Ok(created) => created,
        Err(error) => {
            store.close().await;
            return Err(error.into());
        }
    };
    let published = publish_from(&store, settings).await;
    store.close().await;
    Ok(CreatedKey {
        key,
        stored,
        published,
    })
}

/// Keys by tenant and id prefix (bare or `wbk_…`), oldest first.
pub async fn list(
    settings: &Settings,
    tenant: Option<&TenantId>,
    prefix: Option<&str>,
) -> anyhow::Result<Vec<ListedKey>> {
    let prefix = prefix.map(|raw| {
        let raw = raw.trim();
        raw.strip_prefix(waybill_core::access::KEY_PREFIX)
            .unwrap_or(raw)
            .to_owned()
    });
    let store = Store::connect(settings.database.url.expose_secret(), 1).await?;
    let keys = {
        let mut connection = store.acquire().await?;
        list_api_keys(&mut connection, tenant, prefix.as_deref()).await?
    };
    store.close().await;
    Ok(keys
        .into_iter()
        .map(|key| ListedKey {
            prefix: key.id.public_prefix(),
            tenant: key.tenant.to_string(),
            name: key.name,
            scopes: key.scopes,
            created_at: key.created_at,
            revoked_at: key.revoked_at,
        })
        .collect())
}

/// Revokes a key and publishes the new key set (best effort). Returns the key and whether the
/// publish reached the broker.
pub async fn revoke(settings: &Settings, id: &KeyId) -> anyhow::Result<(StoredApiKey, bool)> {
    let store = Store::connect(settings.database.url.expose_secret(), 1).await?;
    let revoked = {
        let mut connection = store.acquire().await?;
        revoke_api_key(&mut connection, id).await?
    };
    let Some(key) = revoked else {
        store.close().await;
        anyhow::bail!("no key {} exists", id.public_prefix());
    };
    let published = publish_from(&store, settings).await;
    store.close().await;
    Ok((key, published))
}

/// Publishes the current key set. `false` when it could not reach the broker.
pub async fn publish(settings: &Settings) -> anyhow::Result<bool> {
    let store = Store::connect(settings.database.url.expose_secret(), 1).await?;
    let published = publish_from(&store, settings).await;
    store.close().await;
    Ok(published)
}

async fn publish_from(store: &Store, settings: &Settings) -> bool {
    match tokio::time::timeout(PUBLISH_TIMEOUT, try_publish(store, settings)).await {
        Ok(Ok(())) => true,
        Ok(Err(error)) => {
            tracing::warn!(error = %format!("{error:#}"), "could not publish the key set");
            false
        }
        Err(_elapsed) => false,
    }
}

async fn try_publish(store: &Store, settings: &Settings) -> anyhow::Result<()> {
    let snapshot = {
        let mut connection = store.acquire().await?;
        key_set_snapshot(&mut connection).await?
    };
    let message = KeySnapshotV1::new(
        snapshot.epoch,
        snapshot.revision,
        snapshot.generated_at,
        snapshot.keys.iter().map(StoredApiKey::to_record),
    );
    let topology = crate::broker::topology(settings);
    let stop = CancellationToken::new();
    let mut config = PublisherConfig::new(
        settings.bus.url.expose_secret(),
        "waybill-cli-keys",
        topology.clone(),
    );
    config.channels = 1;
    let publisher = Publisher::start(config, stop.clone()).await?;
    let result = if publisher.wait_ready(PUBLISH_TIMEOUT).await {
        publisher
            .publish(message.to_message(&topology))
            .await
            .map_err(anyhow::Error::from)
    } else {
        Err(anyhow::anyhow!("the broker is not reachable"))
    };
    stop.cancel();
    publisher.close().await;
    result
}

fn report_publish(published: bool, settings: &Settings) {
    if published {
        eprintln!("the new key set was published; ingresses and workers apply it now");
    } else {
        eprintln!(
            "warning: could not publish the new key set; the workers publish it within auth.refresh_secs ({} s)",
            settings.auth.refresh_secs
        );
    }
}

fn join(scopes: &[Scope]) -> String {
    scopes
        .iter()
        .map(|scope| scope.as_str())
        .collect::<Vec<_>>()
        .join(",")
}

fn print_table(keys: &[ListedKey]) {
    println!(
        "{:<18} {:<20} {:<34} {:<26} {:<10} name",
        "prefix", "tenant", "scopes", "created", "state"
    );
    for key in keys {
        let state = if key.revoked_at.is_some() {
            "revoked"
        } else {
            "active"
        };
        println!(
            "{:<18} {:<20} {:<34} {:<26} {:<10} {}",
            key.prefix,
            key.tenant,
            join(&key.scopes),
            key.created_at.format("%Y-%m-%dT%H:%M:%SZ"),
            state,
            crate::output::cell(&key.name)
        );
    }
}
