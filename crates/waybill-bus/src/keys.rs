//! The API key set on the bus, so that the ingress can check keys without a database.
//!
//! * Publishing side (the worker every `auth.refresh_secs`, `waybill keys` after each change):
//!   the whole key set — ids, tenants, scopes, SHA-256 of the secrets, revoked flags; never a
//!   secret — as one [`KeySnapshotV1`] message to the fanout exchange `waybill.keys`
//!   ([`KeySnapshotV1::to_message`]).
//! * Receiving side (every ingress and worker): [`spawn_key_subscriber`] binds an exclusive,
//!   auto-delete queue of its own to that exchange, first reads the last snapshot kept in
//!   `waybill.keys.latest` so that it does not wait a whole interval after starting, and offers
//!   every snapshot to a [`KeyRing`], which keeps the newest and knows how old it is.
//!
//! Snapshots are ordered by `(epoch, revision)` from the database (see migration 0004): a ring
//! never goes back to an older key set, so a revocation cannot be undone by a late message.
//! A ring whose snapshot is older than its maximum age refuses to answer ([`KeysUnavailable`]),
//! which bounds how long a revoked key can keep working when publishing stops (fail closed).

use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use chrono::{DateTime, Utc};
use lapin::options::{BasicGetOptions, BasicNackOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use serde::{Deserialize, Serialize};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use waybill_core::TenantId;
use waybill_core::access::{KeyId, KeyRecord, KeySet, Scope, SecretHash};

use crate::connection::{BusConnection, OPERATION_TIMEOUT, close_channel, declaration};
use crate::consumer::Consumer;
use crate::error::{BusError, bounded, bounded_or, short_string};
use crate::message::OutboundMessage;
use crate::topology::Topology;

/// The key-set message, versioned like the queue envelopes: `{"type": "key_set.v1", …}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type")]
pub enum KeySnapshotMessage {
    /// Version 1.
    #[serde(rename = "key_set.v1")]
    V1(KeySnapshotV1),
}

/// The whole key set at one database revision.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeySnapshotV1 {
    /// Drawn once per database; a different epoch is another key set, not an older one.
    pub epoch: String,
    /// Bumped by every change to the keys: higher is newer.
    pub revision: i64,
    /// The database clock when the set was read (a starting process ignores a kept snapshot
    /// older than its maximum age).
    pub generated_at: DateTime<Utc>,
    /// Every key, revoked ones included.
    pub keys: Vec<KeyEntryV1>,
}

/// One key in a snapshot. No secret: only its SHA-256.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyEntryV1 {
    /// The key's public id.
    pub id: KeyId,
    /// Its tenant.
    pub tenant: TenantId,
    /// Its scopes by name. A name this build does not know grants nothing (a newer publisher
    /// may know more scopes).
    pub scopes: Vec<String>,
    /// SHA-256 of its secret, hex.
    pub secret_sha256: SecretHash,
    /// True once revoked.
    pub revoked: bool,
}

/// Why a body is not a key-set message. Permanent for that message.
#[derive(Debug, thiserror::Error)]
#[error("the message is not a key-set snapshot")]
pub struct KeySnapshotError(#[source] serde_json::Error);

impl KeySnapshotV1 {
    /// A snapshot of these keys.
    pub fn new(
        epoch: impl Into<String>,
        revision: i64,
        generated_at: DateTime<Utc>,
        records: impl IntoIterator<Item = KeyRecord>,
    ) -> KeySnapshotV1 {
        KeySnapshotV1 {
            epoch: epoch.into(),
            revision,
            generated_at,
            keys: records
                .into_iter()
                .map(|record| KeyEntryV1 {
                    id: record.id,
                    tenant: record.tenant,
                    scopes: record
                        .scopes
                        .iter()
                        .map(|scope| scope.as_str().to_owned())
                        .collect(),
                    secret_sha256: record.secret_sha256,
                    revoked: record.revoked,
                })
                .collect(),
        }
    }

    /// The in-memory key set.
    pub fn key_set(&self) -> KeySet {
        KeySet::new(self.keys.iter().map(|entry| {
            KeyRecord {
                id: entry.id.clone(),
                tenant: entry.tenant.clone(),
                scopes: entry
                    .scopes
                    .iter()
                    .filter_map(|scope| Scope::parse(scope).ok())
                    .collect(),
                secret_sha256: entry.secret_sha256,
                revoked: entry.revoked,
            }
        }))
    }

    /// The JSON body.
    pub fn encode(&self) -> Vec<u8> {
        // A struct of strings, numbers and booleans always serialises.
        serde_json::to_vec(&KeySnapshotMessage::V1(self.clone())).unwrap_or_default()
    }

    /// Reads a body written by [`KeySnapshotV1::encode`].
    pub fn decode(body: &[u8]) -> Result<KeySnapshotV1, KeySnapshotError> {
        match serde_json::from_slice(body).map_err(KeySnapshotError)? {
            KeySnapshotMessage::V1(snapshot) => Ok(snapshot),
        }
    }

    /// The message to publish: to the keys exchange, with the revision in its `message_id`.
    pub fn to_message(&self, topology: &Topology) -> OutboundMessage {
        OutboundMessage::new(topology.keys_exchange(), "", self.encode())
            .with_message_id(format!("key-set.{}.{}", self.epoch, self.revision))
    }
}

/// Why a ring cannot answer: callers answer 503 (retry later), never "let it through".
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum KeysUnavailable {
    /// No snapshot has arrived since the process started.
    #[error("the API key set has not been received yet")]
    NotYetReceived,
    /// The last snapshot is older than the ring's maximum age: publishing has stopped.
    #[error("the API key set is out of date (last received {age:?} ago)")]
    Expired {
        /// How long ago the last snapshot arrived.
        age: Duration,
    },
}

/// What [`KeyRing::offer`] did with a snapshot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Offered {
    /// It replaced the held key set (newer revision, or another epoch, or the first one).
    Installed,
    /// Same revision as held: the held set is confirmed current (its age restarts).
    Refreshed,
    /// Older than what is held: ignored.
    Outdated,
}

/// The newest key set a process has received, with its age. Shared by the subscriber task
/// (writes) and request handlers (read); reads take a short read lock and clone an `Arc`.
#[derive(Debug)]
pub struct KeyRing {
    max_age: Duration,
    held: RwLock<Option<Held>>,
}

#[derive(Debug)]
struct Held {
    epoch: String,
    revision: i64,
    keys: Arc<KeySet>,
    received: Instant,
}

impl KeyRing {
    /// An empty ring whose key set expires `max_age` after the last snapshot arrived.
    pub fn new(max_age: Duration) -> KeyRing {
        KeyRing {
            max_age,
            held: RwLock::new(None),
        }
    }

    /// How long a snapshot stays trusted without a newer one or a repeat.
    pub fn max_age(&self) -> Duration {
        self.max_age
    }

    /// Offers a snapshot; keeps it if it is not older than the held one.
    ///
    /// One exception: a lower revision is taken when the held one has not been repeated for half
    /// the maximum age. Publishers repeat the current revision every refresh (at most half the
    /// maximum age), so a held revision nobody repeats is no longer the database's — the
    /// database was restored from a backup — while a late message right after a change (the
    /// case the ordering guards against) still finds the held set fresh and is ignored.
    pub fn offer(&self, snapshot: &KeySnapshotV1) -> Offered {
        let mut held = self.held.write().unwrap_or_else(PoisonError::into_inner);
        let outcome = match held.as_ref() {
            None => Offered::Installed,
            Some(current) if current.epoch != snapshot.epoch => Offered::Installed,
            Some(current) if snapshot.revision > current.revision => Offered::Installed,
            Some(current) if snapshot.revision == current.revision => Offered::Refreshed,
            Some(current) if current.received.elapsed() > self.max_age / 2 => Offered::Installed,
            Some(_) => Offered::Outdated,
        };
        match (outcome, held.as_mut()) {
            (Offered::Installed, _) => {
                *held = Some(Held {
                    epoch: snapshot.epoch.clone(),
                    revision: snapshot.revision,
                    keys: Arc::new(snapshot.key_set()),
                    received: Instant::now(),
                });
            }
            (Offered::Refreshed, Some(current)) => current.received = Instant::now(),
            _ => {}
        }
        outcome
    }

    /// The key set to check a request against, or why there is none to trust.
    pub fn current(&self) -> Result<Arc<KeySet>, KeysUnavailable> {
        let held = self.held.read().unwrap_or_else(PoisonError::into_inner);
        let held = held.as_ref().ok_or(KeysUnavailable::NotYetReceived)?;
        let age = held.received.elapsed();
        if age > self.max_age {
            return Err(KeysUnavailable::Expired { age });
        }
        Ok(Arc::clone(&held.keys))
    }

    /// The held revision, if any (for logs and readiness).
    pub fn revision(&self) -> Option<i64> {
        let held = self.held.read().unwrap_or_else(PoisonError::into_inner);
        held.as_ref().map(|held| held.revision)
    }
}

/// How [`spawn_key_subscriber`] connects.
#[derive(Clone)]
pub struct KeySubscriberConfig {
    /// The AMQP URL (may hold credentials; never logged).
    pub url: String,
    /// The connection name shown by `rabbitmqctl list_connections`.
    pub connection_name: String,
    /// The topology (declared, tolerating drift, on every connection).
    pub topology: Topology,
    /// Delay before the first reconnection; doubled after each failure up to the cap.
    pub reconnect_delay: Duration,
    /// Cap of the reconnection delay.
    pub max_reconnect_delay: Duration,
}

impl KeySubscriberConfig {
    /// The defaults for a URL, a connection name and a topology.
    pub fn new(
        url: impl Into<String>,
        connection_name: impl Into<String>,
        topology: Topology,
    ) -> KeySubscriberConfig {
        KeySubscriberConfig {
            url: url.into(),
            connection_name: connection_name.into(),
            topology,
            reconnect_delay: Duration::from_millis(100),
            max_reconnect_delay: Duration::from_secs(5),
        }
    }
}

impl std::fmt::Debug for KeySubscriberConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        debug_fields!(f, self, "KeySubscriberConfig" {
            url = "<redacted>",
            connection_name, topology,
        })
    }
}

/// Starts a task that keeps `ring` fed with the snapshots published to `waybill.keys`, on its
/// own connection, reconnecting with capped backoff, until `shutdown` is cancelled.
pub fn spawn_key_subscriber(
    config: KeySubscriberConfig,
    ring: Arc<KeyRing>,
    shutdown: CancellationToken,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut delay = config.reconnect_delay;
        let mut failures = 0u32;
        while !shutdown.is_cancelled() {
            match subscribe(&config, &ring, &shutdown, &mut delay).await {
                Ok(()) => break,
                Err(error) => {
                    failures += 1;
                    // Loud once, then quiet while it stays down.
                    if failures == 1 {
                        tracing::warn!(error = %error, "key-set subscription lost; reconnecting");
                    } else {
                        tracing::debug!(error = %error, failures, "key-set subscription still down");
                    }
                }
            }
            tokio::select! {
                () = shutdown.cancelled() => break,
                () = tokio::time::sleep(delay) => {}
            }
            delay = (delay * 2).min(config.max_reconnect_delay);
        }
    })
}

/// One connection's life: subscribe, bootstrap from the kept snapshot, consume until shutdown
/// (`Ok`) or failure (`Err`).
async fn subscribe(
    config: &KeySubscriberConfig,
    ring: &KeyRing,
    shutdown: &CancellationToken,
    delay: &mut Duration,
) -> Result<(), BusError> {
    let connection = BusConnection::connect(&config.url, &config.connection_name).await?;
    config.topology.declare_or_reuse(&connection).await?;
    let queue = declare_own_queue(&connection, &config.topology).await?;
    // The kept snapshot only spares a wait; while its queue's node is down, go on without it.
    if let Err(error) = read_kept_snapshot(&connection, &config.topology, ring).await {
        tracing::warn!(error = %error, "cannot read the kept key set; waiting for the next one");
    }
    let mut consumer = Consumer::start(&connection, &queue, 16, "").await?;
    let acker = consumer.acker();
    *delay = config.reconnect_delay;
    tracing::debug!(queue = %queue, "subscribed to the key set");
    loop {
        tokio::select! {
            () = shutdown.cancelled() => {
                consumer.cancel().await;
                let _ = connection.close().await;
                return Ok(());
            }
            next = consumer.next() => match next {
                Some(Ok(delivery)) => {
                    accept(ring, &delivery.body, None);
                    acker.ack(delivery.delivery_tag).await?;
                }
                Some(Err(error)) => return Err(error),
                None => return Err(BusError::ConsumerCancelled { queue }),
            },
        }
    }
}

/// Declares this process's exclusive, auto-delete, server-named queue and binds it to the keys
/// exchange. Returns its name.
async fn declare_own_queue(
    connection: &BusConnection,
    topology: &Topology,
) -> Result<String, BusError> {
    let channel = connection.open_channel().await?;
    let options = QueueDeclareOptions {
        // Create it.
        passive: false,
        // Gone with the broker: it only ever holds snapshots that are repeated anyway.
        durable: false,
        // This connection's alone; deleted when the connection goes.
        exclusive: true,
        // Also deleted when its consumer goes.
        auto_delete: true,
        // Wait for declare-ok: it carries the generated name.
        nowait: false,
    };
    let declared = declaration(
        "declaring the key-set queue",
        // An empty name asks the broker for a unique one (`amq.gen-…`).
        channel.queue_declare(
            short_string("queue name", "")?,
            options,
            FieldTable::default(),
        ),
        || "the key-set queue".to_owned(),
    )
    .await?;
    let queue = declared.name().to_string();
    let exchange = topology.keys_exchange();
    let options = QueueBindOptions {
        // Wait for bind-ok so that errors surface here.
        nowait: false,
    };
    declaration(
        "binding the key-set queue",
        channel.queue_bind(
            short_string("queue name", &queue)?,
            short_string("exchange name", &exchange)?,
            short_string("routing key", "")?,
            options,
            FieldTable::default(),
        ),
        || format!("binding {exchange} -> {queue}"),
    )
    .await?;
    close_channel(&channel).await;
    Ok(queue)
}

/// Offers the snapshot kept in `waybill.keys.latest`, if any and not too old, and leaves it
/// there for the next process.
async fn read_kept_snapshot(
    connection: &BusConnection,
    topology: &Topology,
    ring: &KeyRing,
) -> Result<(), BusError> {
    let queue = topology.keys_latest_queue();
    let channel = connection.open_channel().await?;
    let options = BasicGetOptions {
        // Read, then put it back: other processes start from it too.
        no_ack: false,
    };
    let got = bounded_or(
        "reading the kept key set",
        OPERATION_TIMEOUT,
        channel.basic_get(short_string("queue name", &queue)?, options),
        |source| BusError::Get {
            queue: queue.clone(),
            source,
        },
    )
    .await?;
    if let Some(message) = got {
        accept(ring, &message.delivery.data, Some(ring.max_age()));
        let options = BasicNackOptions {
            // Only this message.
            multiple: false,
            // Back onto the queue, at its head.
            requeue: true,
        };
        let tag = message.delivery.delivery_tag;
        // Closing the channel would requeue it too; failing here is harmless.
        let _ = bounded(
            "returning the kept key set",
            OPERATION_TIMEOUT,
            channel.basic_nack(tag, options),
        )
        .await;
    }
    close_channel(&channel).await;
    Ok(())
}

/// Decodes and offers one body; `max_age` refuses a snapshot generated longer ago (by the
/// database clock) — for the kept one, which may be from before an outage.
fn accept(ring: &KeyRing, body: &[u8], max_age: Option<Duration>) {
    let snapshot = match KeySnapshotV1::decode(body) {
        Ok(snapshot) => snapshot,
        Err(error) => {
            tracing::warn!(error = %error, "ignored a message on the key-set exchange");
            return;
        }
    };
    if let Some(max_age) = max_age {
        let age = (Utc::now() - snapshot.generated_at)
            .to_std()
            .unwrap_or_default();
        if age > max_age {
            tracing::debug!(
                ?age,
                "the kept key set is too old to trust; waiting for a fresh one"
            );
            return;
        }
    }
    match ring.offer(&snapshot) {
        Offered::Installed => tracing::info!(
            keys.revision = snapshot.revision,
            keys.count = snapshot.keys.len(),
            "API key set installed"
        ),
        Offered::Refreshed => {}
        Offered::Outdated => tracing::debug!(
            keys.revision = snapshot.revision,
            "ignored an outdated API key set"
        ),
    }
}
