//! The fair ceilings of `waybill-bench bench`: an ideal ingress and an ideal worker, each doing
//! only the irreducible work of Waybill's own process and nothing else, measured in the same run
//! with the same load (docs/performance.md).
//!
//! - The ideal ingress reads the body, parses it as JSON, verifies its HMAC-SHA256 signature
//!   (hex, the Starshipit profile's scheme) and publishes it, persistent, to a quorum queue,
//!   answering 200 once the broker confirmed. No mapping, no envelope, no limits, no telemetry.
//! - The ideal worker consumes the inbound queue with manual acknowledgements at the worker's
//!   prefetch, decodes each envelope, writes a batch with one `unnest` statement (shipment
//!   upsert and event insert) in one transaction, publishes one confirmed message per new event
//!   and acknowledges the batch after the commit. No locks, no history, no merge, no outbox.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderName, StatusCode};
use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use hmac::{KeyInit, Mac};
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions,
    ConfirmSelectOptions, QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::types::{AMQPValue, FieldTable, LongString};
use lapin::{BasicProperties, Channel, Confirmation, Connection, ConnectionProperties};
use tokio::sync::oneshot;
use waybill_bus::envelope::InboundEnvelope;
use waybill_store::Store;
use waybill_store::bench::EventColumns;

/// True when `signature` is the hex HMAC-SHA256 of `body` under `key`.
fn signature_matches(key: &[u8], signature: &[u8], body: &[u8]) -> bool {
    let Ok(signature) = hex::decode(signature) else {
        return false;
    };
    let Ok(mut mac) = <hmac::Hmac<sha2::Sha256> as KeyInit>::new_from_slice(key) else {
        return false;
    };
    mac.update(body);
    mac.verify_slice(&signature).is_ok()
}

/// Declares a durable quorum queue named `queue` on `channel`.
async fn declare_quorum_queue(channel: &Channel, queue: &str) -> anyhow::Result<()> {
    let mut arguments = FieldTable::default();
    arguments.insert(
        "x-queue-type".into(),
        AMQPValue::LongString(LongString::from("quorum".as_bytes())),
    );
    let options = QueueDeclareOptions {
        // Quorum queues are always durable.
        durable: true,
        ..QueueDeclareOptions::default()
    };
    channel
        .queue_declare(queue.into(), options, arguments)
        .await?;
    Ok(())
}

/// A plain lapin connection named `name` (as the raw floor's client connects).
async fn connect(url: &str, name: &str) -> anyhow::Result<Connection> {
    let properties = ConnectionProperties::default().with_connection_name(name.into());
    Ok(Connection::connect(url, properties).await?)
}

/// A channel in confirm mode.
async fn confirm_channel(connection: &Connection) -> anyhow::Result<Channel> {
    let channel = connection.create_channel().await?;
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await?;
    Ok(channel)
}

/// Publishes `body` persistently to `queue` through the default exchange; the confirmation is
/// awaited by the caller.
async fn publish(
    channel: &Channel,
    queue: &str,
    body: &[u8],
) -> Result<lapin::PublisherConfirm, lapin::Error> {
    let options = BasicPublishOptions {
        // As Waybill publishes: unroutable comes back.
        mandatory: true,
        // Not supported by RabbitMQ.
        immediate: false,
    };
    let properties = BasicProperties::default().with_delivery_mode(2);
    channel
        .basic_publish("".into(), queue.into(), options, body, properties)
        .await
}

struct IngressState {
    channels: Vec<Channel>,
    next: AtomicUsize,
    key: Vec<u8>,
    header: HeaderName,
    queue: String,
}

/// The ideal ingress: an HTTP server on `addr` until [`IdealIngress::stop`].
pub struct IdealIngress {
    /// Where it listens.
    pub addr: std::net::SocketAddr,
    connection: Connection,
    queue: String,
    setup: Channel,
    shutdown: oneshot::Sender<()>,
    server: tokio::task::JoinHandle<()>,
}

impl IdealIngress {
    /// Starts the ideal ingress on a free local port: it accepts `POST /v1/webhooks/{source}`
    /// signed with `secret` in `header`, and publishes to the quorum queue `queue` (created
    /// here, deleted by [`IdealIngress::stop`]) over `channels` confirm channels.
    pub async fn start(
        amqp_url: &str,
        queue: &str,
        (header, secret): (&str, &str),
        channels: usize,
    ) -> anyhow::Result<IdealIngress> {
        let connection = connect(amqp_url, "waybill-bench-ideal-ingress").await?;
        let setup = connection.create_channel().await?;
        declare_quorum_queue(&setup, queue).await?;
        let mut publishers = Vec::new();
        for _ in 0..channels.max(1) {
            publishers.push(confirm_channel(&connection).await?);
        }
        let state = Arc::new(IngressState {
            channels: publishers,
            next: AtomicUsize::new(0),
            key: secret.as_bytes().to_vec(),
            header: HeaderName::try_from(header)?,
            queue: queue.to_owned(),
        });
        let router = axum::Router::new()
            .route("/v1/webhooks/{source}", axum::routing::post(accept))
            .with_state(state);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let (shutdown, stopped) = oneshot::channel::<()>();
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, router)
                .with_graceful_shutdown(async {
                    let _ = stopped.await;
                })
                .await;
        });
        Ok(IdealIngress {
            addr,
            connection,
            queue: queue.to_owned(),
            setup,
            shutdown,
            server,
        })
    }

    /// Stops the server, deletes its queue and closes its connection.
    pub async fn stop(self) {
        let _ = self.shutdown.send(());
        let _ = self.server.await;
        let _ = self
            .setup
            .queue_delete(self.queue.as_str().into(), QueueDeleteOptions::default())
            .await;
        let _ = self.setup.close(200, "done".into()).await;
        let _ = self.connection.close(200, "done".into()).await;
    }
}

async fn accept(
    State(state): State<Arc<IngressState>>,
    headers: HeaderMap,
    body: Bytes,
) -> StatusCode {
    if serde_json::from_slice::<serde_json::Value>(&body).is_err() {
        return StatusCode::BAD_REQUEST;
    }
    let signed = headers
        .get(&state.header)
        .is_some_and(|value| signature_matches(&state.key, value.as_bytes(), &body));
    if !signed {
        return StatusCode::UNAUTHORIZED;
    }
    let channel =
        &state.channels[state.next.fetch_add(1, Ordering::Relaxed) % state.channels.len()];
    match publish(channel, &state.queue, &body).await {
        Ok(confirm) => match confirm.await {
            Ok(Confirmation::Ack(None)) => StatusCode::OK,
            _ => StatusCode::SERVICE_UNAVAILABLE,
        },
        Err(_) => StatusCode::SERVICE_UNAVAILABLE,
    }
}

/// What the ideal worker did.
#[derive(Debug, Clone, Copy, Default)]
pub struct IdealDrain {
    /// Envelopes consumed and acknowledged.
    pub messages: usize,
    /// Events written.
    pub events: usize,
    /// Events per second, from the first delivery to the last acknowledgement.
    pub events_per_sec: f64,
}

/// How the ideal worker consumes.
#[derive(Debug, Clone)]
pub struct IdealWorkerPlan {
    /// The queue to drain (Waybill's inbound webhooks queue, holding a backlog).
    pub queue: String,
    /// Where it publishes one message per new event (created here, deleted afterwards).
    pub changes_queue: String,
    /// The tenant its rows are written under (apart from Waybill's own rows).
    pub tenant: String,
    /// Unacknowledged deliveries per consumer.
    pub prefetch: u16,
    /// Concurrent consumers, each with its own connection.
    pub consumers: usize,
    /// Events per transaction.
    pub batch_size: usize,
    /// Stop after this many messages.
    pub messages: usize,
}

/// Drains `plan.messages` messages of `plan.queue` as the ideal worker (see the module
/// documentation) into `store`.
pub async fn ideal_worker(
    amqp_url: &str,
    store: &Store,
    plan: &IdealWorkerPlan,
) -> anyhow::Result<IdealDrain> {
    let setup = connect(amqp_url, "waybill-bench-ideal-worker").await?;
    let setup_channel = setup.create_channel().await?;
    declare_quorum_queue(&setup_channel, &plan.changes_queue).await?;
    let taken = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for index in 0..plan.consumers.max(1) {
        let connection = connect(amqp_url, &format!("waybill-bench-ideal-worker-{index}")).await?;
        let (store, plan, taken) = (store.clone(), plan.clone(), taken.clone());
        tasks.push(tokio::spawn(async move {
            let outcome = consume(&connection, &store, &plan, &taken).await;
            let _ = connection.close(200, "done".into()).await;
            outcome
        }));
    }
    let mut drain = IdealDrain::default();
    for task in tasks {
        let (messages, events) = task.await??;
        drain.messages += messages;
        drain.events += events;
    }
    drain.events_per_sec = drain.events as f64 / started.elapsed().as_secs_f64().max(1e-6);
    let _ = setup_channel
        .queue_delete(
            plan.changes_queue.as_str().into(),
            QueueDeleteOptions::default(),
        )
        .await;
    let _ = setup.close(200, "done".into()).await;
    Ok(drain)
}

/// One consumer's loop: batches of up to `batch_size` events, each decoded, written, published
/// and acknowledged; until `plan.messages` have been taken by all consumers together.
async fn consume(
    connection: &Connection,
    store: &Store,
    plan: &IdealWorkerPlan,
    taken: &AtomicUsize,
) -> anyhow::Result<(usize, usize)> {
    let channel = connection.create_channel().await?;
    channel
        .basic_qos(plan.prefetch, BasicQosOptions { global: false })
        .await?;
    let mut deliveries = channel
        .basic_consume(
            plan.queue.as_str().into(),
            "".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await?;
    let publisher = confirm_channel(connection).await?;
    let (mut messages, mut events, mut idle_waits) = (0, 0, 0);
    // Until every message is taken, or nothing has arrived for 5 s (fewer than expected).
    while taken.load(Ordering::Relaxed) < plan.messages && idle_waits < 25 {
        let mut batch = EventColumns::default();
        let mut last_tag = None;
        // Take what has arrived, up to a batch; wait briefly for the first delivery only.
        while batch.len() < plan.batch_size {
            let wait = if last_tag.is_some() {
                Duration::ZERO
            } else {
                Duration::from_millis(200)
            };
            let next = tokio::time::timeout(wait, deliveries.next()).await;
            let Ok(Some(delivery)) = next else { break };
            let delivery = delivery?;
            last_tag = Some(delivery.delivery_tag);
            taken.fetch_add(1, Ordering::Relaxed);
            messages += 1;
            if let Ok(InboundEnvelope::WebhookV1(envelope)) =
                InboundEnvelope::decode(&delivery.data)
            {
                for event in &envelope.events {
                    batch.tenants.push(plan.tenant.clone());
                    batch.carriers.push(event.carrier.as_str().to_owned());
                    batch
                        .tracking_numbers
                        .push(event.tracking_number.as_str().to_owned());
                    batch.statuses.push(event.status.as_str().to_owned());
                    batch.occurred_at.push(event.occurred_at);
                    batch.event_ids.push(event.id.as_str().to_owned());
                }
            }
        }
        let Some(last_tag) = last_tag else {
            idle_waits += 1;
            continue;
        };
        idle_waits = 0;
        let mut tx = store.begin().await?;
        let changes = waybill_store::bench::ideal_merge(&mut tx, &batch).await?;
        tx.commit().await?;
        let mut confirms = FuturesUnordered::new();
        for change in &changes {
            confirms.push(publish(&publisher, &plan.changes_queue, change.as_bytes()).await?);
        }
        while let Some(confirmed) = confirms.next().await {
            confirmed?;
        }
        channel
            .basic_ack(last_tag, BasicAckOptions { multiple: true })
            .await?;
        events += batch.len();
    }
    let _ = channel.close(200, "done".into()).await;
    let _ = publisher.close(200, "done".into()).await;
    Ok((messages, events))
}

#[cfg(test)]
mod tests {
    use super::signature_matches;

    /// The ideal ingress verifies exactly what the load generator signs with the Starshipit
    /// profile, and nothing else.
    #[test]
    fn verifies_the_starshipit_profiles_signatures() {
        let profiles = waybill_carriers::ProfileRegistry::builtin();
        let profile = profiles.get("starshipit").expect("starshipit profile");
        let body = br#"{"tracking_number":"LG1"}"#;
        let (_, signature) = profile
            .sign(body, "secret", chrono::Utc::now())
            .expect("the profile signs");
        assert!(signature_matches(b"secret", signature.as_bytes(), body));
        assert!(!signature_matches(b"other", signature.as_bytes(), body));
        assert!(!signature_matches(b"secret", signature.as_bytes(), b"{}"));
        assert!(!signature_matches(b"secret", b"not hex", body));
    }
}
