//! The confirmed, pipelined, self-reconnecting publisher shared by every request handler.
//!
//! * **Confirmed.** `publish` returns `Ok` only after the broker's `basic.ack`; a nack, a
//!   `basic.return` (unroutable), a missing confirm or a lost connection is an error.
//! * **Pipelined.** A small pool of channels in confirm mode, used round-robin; any number of
//!   publishes are in flight on each, and each caller awaits only its own confirm (paired by a
//!   per-channel task, see [`driver`], which also pairs each `basic.return` with the right
//!   publish). Nothing serialises the process on a round trip.
//! * **Self-healing.** A supervisor task owns the connection. When it or a channel dies, it is
//!   dropped at once (publishes then fail fast with [`PublishError::Unavailable`]), and a new
//!   connection is made with capped exponential backoff, the topology re-declared and the pool
//!   reopened.
//! * **Bounded.** Every await has a bound: a publish never takes longer than the confirm timeout.

mod driver;
mod state;
mod supervisor;

use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use lapin::options::ExchangeDeclareOptions;
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, ExchangeKind};
use tokio::sync::{Notify, Semaphore, oneshot, watch};
use tokio::time::{Instant, timeout_at};
use tokio_util::sync::{CancellationToken, DropGuard};
use tokio_util::task::TaskTracker;

use crate::connection::{OPERATION_TIMEOUT, close_channel};
use crate::error::{AmqpError, BusError, PublishError, short_string};
use crate::headers::{PUBLISH_ID_HEADER, to_field_table};
use crate::message::OutboundMessage;
use driver::Request;
pub use state::PublisherConfig;
use state::{Breaker, HEALTH_CHECK_INTERVAL, Link, Shared};

/// Extra time a caller waits for the tracker's answer beyond its deadline (the tracker answers
/// `Timeout` at the deadline itself; this only absorbs scheduling delay).
const ANSWER_MARGIN: Duration = Duration::from_millis(250);

/// The shared publisher. Cheap to clone; every clone publishes through the same connection and
/// channel pool. The connection is closed by [`Publisher::close`] or when the last clone is
/// dropped.
#[derive(Clone)]
pub struct Publisher {
    shared: Arc<Shared>,
    /// Cancels the supervisor when the last clone goes.
    _last_clone: Arc<DropGuard>,
}

impl Publisher {
    /// Starts the publisher: spawns its supervisor and waits for the first connection attempt
    /// (within the connect timeout). When the broker is down the publisher is returned anyway,
    /// not ready, and keeps reconnecting in the background: publishes fail fast with
    /// [`PublishError::Unavailable`] until it is back.
    ///
    /// `shutdown` stops reconnecting (a live connection keeps serving until [`Publisher::close`]
    /// or the last clone is dropped, so requests still in flight at shutdown can finish).
    /// Fails only on invalid configuration.
    #[tracing::instrument(skip_all, fields(connection.name = %config.connection_name))]
    pub async fn start(
        config: PublisherConfig,
        shutdown: CancellationToken,
    ) -> Result<Publisher, BusError> {
        crate::connection::validate_urls(&config.url)?;
        if config.channels == 0 {
            return Err(BusError::InvalidName {
                what: "publisher configuration",
                reason: "channels must be at least 1".into(),
            });
        }
        let permits = config
            .max_in_flight
            .clamp(1, Semaphore::MAX_PERMITS.min(u32::MAX as usize));
        let stop = CancellationToken::new();
        let (link, _) = watch::channel(None);
        let shared = Arc::new(Shared {
            config,
            link,
            next_channel: AtomicUsize::new(0),
            next_publish_id: AtomicI64::new(1),
            in_flight: Arc::new(Semaphore::new(permits)),
            breaker: Breaker {
                notify: Arc::new(Notify::new()),
                broken_generation: Arc::new(AtomicU64::new(0)),
            },
            closing: AtomicBool::new(false),
            stop: stop.clone(),
            tasks: TaskTracker::new(),
        });
        let (first_attempt, first_attempt_done) = oneshot::channel();
        shared.tasks.spawn(supervisor::supervise(
            shared.clone(),
            shutdown,
            first_attempt,
        ));
        let wait = shared.config.connect_timeout + OPERATION_TIMEOUT;
        let _ = tokio::time::timeout(wait, first_attempt_done).await;
        Ok(Publisher {
            shared,
            _last_clone: Arc::new(stop.drop_guard()),
        })
    }

    /// Publishes one message and waits for the broker's confirm, within the confirm timeout.
    #[tracing::instrument(level = "debug", skip_all, fields(exchange = %message.exchange, routing_key = %message.routing_key))]
    pub async fn publish(&self, message: OutboundMessage) -> Result<(), PublishError> {
        let timeout = self.shared.config.confirm_timeout;
        let deadline = Instant::now() + timeout;
        match timeout_at(
            deadline + ANSWER_MARGIN,
            self.shared.publish_until(message, deadline),
        )
        .await
        {
            Ok(outcome) => outcome,
            Err(_elapsed) => Err(PublishError::Timeout { after: timeout }),
        }
    }

    /// Publishes a batch with all of it in flight at once and waits for every confirm. The
    /// results are in the order of `messages`.
    pub async fn publish_many(
        &self,
        messages: Vec<OutboundMessage>,
    ) -> Vec<Result<(), PublishError>> {
        futures_util::future::join_all(messages.into_iter().map(|message| self.publish(message)))
            .await
    }

    /// True when a publish would be attempted now: connected, every channel open, not blocked by
    /// a broker resource alarm, not closing. For `/readyz`.
    pub fn is_ready(&self) -> bool {
        self.shared.ready_link().is_ok()
    }

    /// Waits until the publisher is ready, at most `timeout`. Returns whether it is.
    pub async fn wait_ready(&self, timeout: Duration) -> bool {
        let mut link = self.shared.link.subscribe();
        let deadline = Instant::now() + timeout;
        loop {
            if self.is_ready() {
                return true;
            }
            // Wake on a new link, or re-check periodically (blocked/unblocked has no event here).
            let changed = timeout_at(
                deadline.min(Instant::now() + HEALTH_CHECK_INTERVAL),
                link.changed(),
            )
            .await;
            if Instant::now() >= deadline {
                return self.is_ready();
            }
            if matches!(changed, Ok(Err(_))) {
                return false;
            }
        }
    }

    /// Stops accepting publishes, lets the ones in flight finish (within the confirm timeout),
    /// then closes the channels and the connection. Idempotent.
    #[tracing::instrument(skip_all, fields(connection.name = %self.shared.config.connection_name))]
    pub async fn close(&self) {
        let shared = &self.shared;
        shared.closing.store(true, Ordering::SeqCst);
        let all = u32::try_from(shared.config.max_in_flight.clamp(1, Semaphore::MAX_PERMITS))
            .unwrap_or(u32::MAX);
        let drained = tokio::time::timeout(
            shared.config.confirm_timeout + ANSWER_MARGIN,
            shared.in_flight.acquire_many(all),
        )
        .await;
        if drained.is_err() {
            tracing::warn!("closing the publisher with confirms still outstanding");
        }
        shared.stop.cancel();
        shared.tasks.close();
        if tokio::time::timeout(OPERATION_TIMEOUT, shared.tasks.wait())
            .await
            .is_err()
        {
            tracing::warn!("the publisher's background tasks did not finish in time");
        }
    }
}

impl fmt::Debug for Publisher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        debug_fields!(f, self, "Publisher" {
            connection_name = self.shared.config.connection_name,
            ready = self.is_ready(),
        })
    }
}

impl Shared {
    /// The link to publish on, or why there is none.
    fn ready_link(&self) -> Result<Arc<Link>, PublishError> {
        if self.closing.load(Ordering::SeqCst) {
            return Err(PublishError::unavailable("the publisher is closing"));
        }
        let Some(link) = self.link.borrow().clone() else {
            return Err(PublishError::unavailable(
                "not connected to the broker (reconnecting)",
            ));
        };
        if !link.connection.is_open() {
            return Err(PublishError::unavailable(
                "the connection to the broker was lost",
            ));
        }
        if link.connection.is_blocked() {
            return Err(PublishError::unavailable(
                "the broker blocked publishing (memory or disk alarm)",
            ));
        }
        if !link
            .channels
            .iter()
            .all(|pool| pool.channel.status().connected())
        {
            return Err(PublishError::unavailable("a publishing channel was closed"));
        }
        Ok(link)
    }

    async fn publish_until(
        &self,
        message: OutboundMessage,
        deadline: Instant,
    ) -> Result<(), PublishError> {
        let link = self.ready_link()?;
        let publish_id = self.next_publish_id.fetch_add(1, Ordering::Relaxed);
        let properties = properties(&message, publish_id)?;
        let exchange = short_string("exchange name", &message.exchange).map_err(invalid)?;
        let routing_key = short_string("routing key", &message.routing_key).map_err(invalid)?;
        self.ensure_exchange(&link, &message.exchange, deadline)
            .await?;

        let permit = match timeout_at(deadline, self.in_flight.clone().acquire_owned()).await {
            Ok(Ok(permit)) => permit,
            Ok(Err(_closed)) => return Err(PublishError::unavailable("the publisher is closed")),
            Err(_elapsed) => {
                return Err(PublishError::Timeout {
                    after: self.config.confirm_timeout,
                });
            }
        };
        let index = self.next_channel.fetch_add(1, Ordering::Relaxed) % link.channels.len();
        let (responder, answer) = oneshot::channel();
        let request = Request {
            publish_id,
            exchange,
            routing_key,
            body: message.body,
            properties,
            mandatory: message.mandatory,
            deadline,
            responder,
            permit,
        };
        // From here the publish belongs to the channel's driver: dropping this future (a
        // cancelled request) cannot interrupt it half-sent.
        if link.channels[index].requests.send(request).is_err() {
            return Err(PublishError::unavailable(
                "the publishing channel is shutting down",
            ));
        }
        match timeout_at(deadline + ANSWER_MARGIN, answer).await {
            Ok(Ok(outcome)) => outcome,
            Ok(Err(_dropped)) => Err(PublishError::unavailable(
                "the publishing channel is shutting down",
            )),
            Err(_elapsed) => Err(PublishError::Timeout {
                after: self.config.confirm_timeout,
            }),
        }
    }

    /// Checks once per connection that an exchange outside the topology exists, on a throw-away
    /// channel: publishing to a missing exchange would close a pooled channel and fail every
    /// publish in flight on it.
    async fn ensure_exchange(
        &self,
        link: &Link,
        exchange: &str,
        deadline: Instant,
    ) -> Result<(), PublishError> {
        if exchange.is_empty() || lock(&link.known_exchanges).contains(exchange) {
            return Ok(());
        }
        let timed_out = || PublishError::Timeout {
            after: self.config.confirm_timeout,
        };
        let channel = match timeout_at(deadline, link.connection.open_channel()).await {
            Ok(Ok(channel)) => channel,
            Ok(Err(error)) => {
                return Err(PublishError::Unavailable {
                    reason: "could not open a channel to check the exchange",
                    source: channel_source(error),
                });
            }
            Err(_elapsed) => return Err(timed_out()),
        };
        let options = ExchangeDeclareOptions {
            // Only check that it exists; never create it from the publish path.
            passive: true,
            // Ignored for a passive declare.
            durable: false,
            // Ignored for a passive declare.
            auto_delete: false,
            // Ignored for a passive declare.
            internal: false,
            // Wait for the answer: it is the point.
            nowait: false,
        };
        let name = short_string("exchange name", exchange).map_err(invalid)?;
        let checked = timeout_at(
            deadline,
            channel.exchange_declare(name, ExchangeKind::Direct, options, FieldTable::default()),
        )
        .await;
        match checked {
            Ok(Ok(())) => {
                lock(&link.known_exchanges).insert(exchange.to_owned());
                close_channel(&channel).await;
                Ok(())
            }
            // The broker closed the throw-away channel with the 404; nothing else is affected.
            Ok(Err(error)) if AmqpError(error.clone()).is_not_found() => {
                Err(PublishError::ExchangeNotFound {
                    exchange: exchange.to_owned(),
                })
            }
            Ok(Err(error)) => Err(PublishError::lost("could not check the exchange", error)),
            Err(_elapsed) => Err(timed_out()),
        }
    }
}

/// The message's AMQP properties: persistent JSON with its id, headers and the publish id.
fn properties(message: &OutboundMessage, publish_id: i64) -> Result<BasicProperties, PublishError> {
    let mut headers = to_field_table(&message.headers).map_err(invalid)?;
    headers.insert(PUBLISH_ID_HEADER.into(), AMQPValue::LongLongInt(publish_id));
    let timestamp = u64::try_from(chrono::Utc::now().timestamp()).unwrap_or_default();
    let mut properties = BasicProperties::default()
        // 2 = persistent: written to disk (quorum queues persist everything anyway).
        .with_delivery_mode(2)
        .with_content_type("application/json".into())
        .with_timestamp(timestamp)
        .with_headers(headers);
    if let Some(message_id) = &message.message_id {
        properties =
            properties.with_message_id(short_string("message id", message_id).map_err(invalid)?);
    }
    Ok(properties)
}

fn invalid(error: BusError) -> PublishError {
    PublishError::Invalid {
        reason: error.to_string(),
    }
}

fn channel_source(error: BusError) -> Option<AmqpError> {
    match error {
        BusError::OpenChannel { source } => Some(source),
        _ => None,
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}
