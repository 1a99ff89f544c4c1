//! The supervisor: connects, declares, opens the channel pool, watches it, and reconnects with
//! capped, jittered exponential backoff when anything fails — until the publisher stops.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::StreamExt;
use lapin::options::ConfirmSelectOptions;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use super::driver;
use super::state::{HEALTH_CHECK_INTERVAL, Link, PoolChannel, Shared};
use crate::connection::{BusConnection, OPERATION_TIMEOUT};
use crate::error::{BusError, bounded_or, chain};
use crate::topology::OnMismatch;

/// How a link's service ended.
enum LinkEnd {
    /// `close` was called or the last clone dropped.
    Stop,
    /// The connection or a channel failed.
    Broken(&'static str),
}

/// The supervisor: connect, serve, notice failure, reconnect with backoff — until stopped.
pub(super) async fn supervise(
    shared: Arc<Shared>,
    shutdown: CancellationToken,
    first_attempt: oneshot::Sender<()>,
) {
    let mut first_attempt = Some(first_attempt);
    let mut delay = shared.config.reconnect_delay;
    let mut generation = 0;
    loop {
        if shared.stop.is_cancelled() || shutdown.is_cancelled() {
            break;
        }
        generation += 1;
        let attempt = tokio::select! {
            attempt = shared.establish(generation) => attempt,
            () = shared.stop.cancelled() => break,
        };
        if let Some(first_attempt) = first_attempt.take() {
            let _ = first_attempt.send(());
        }
        match attempt {
            Ok(link) => {
                let link = Arc::new(link);
                shared.link.send_replace(Some(link.clone()));
                tracing::info!(generation, "publisher connected");
                delay = shared.config.reconnect_delay;
                let end = shared.watch(&link).await;
                shared.link.send_replace(None);
                match end {
                    LinkEnd::Stop => {
                        let _ = link.connection.close().await;
                        break;
                    }
                    LinkEnd::Broken(reason) => {
                        tracing::warn!(reason, "publisher lost its connection; reconnecting");
                        // Close what is left (a channel-only failure leaves the connection
                        // open) without holding up the reconnection.
                        shared.tasks.spawn(async move {
                            let _ = link.connection.close().await;
                        });
                    }
                }
            }
            Err(error) => tracing::warn!(
                error = %chain(&error),
                retry_in_ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX),
                "publisher could not connect"
            ),
        }
        let pause = jittered(delay);
        tokio::select! {
            () = tokio::time::sleep(pause) => {}
            () = shared.stop.cancelled() => break,
            () = shutdown.cancelled() => break,
        }
        delay = (delay * 2).min(shared.config.max_reconnect_delay);
    }
    shared.link.send_replace(None);
}

impl Link {
    /// What is broken, if anything.
    fn broken(&self) -> Option<&'static str> {
        if !self.connection.is_open() {
            return Some("the connection closed");
        }
        if !self
            .channels
            .iter()
            .all(|pool| pool.channel.status().connected())
        {
            return Some("a publishing channel closed");
        }
        None
    }
}

impl Shared {
    /// Connects, declares the topology and opens the channel pool with a confirm tracker each.
    async fn establish(&self, generation: u64) -> Result<Link, BusError> {
        let config = &self.config;
        let connection = BusConnection::connect_with_timeout(
            &config.url,
            &config.connection_name,
            config.connect_timeout,
        )
        .await?;
        config
            .topology
            .declare_with(&connection, OnMismatch::Tolerate)
            .await?;
        let mut channels = Vec::with_capacity(config.channels);
        for _ in 0..config.channels {
            let channel = connection.open_channel().await?;
            let options = ConfirmSelectOptions {
                // Wait for select-ok: a publish before it would not be confirmed.
                nowait: false,
            };
            bounded_or(
                "enabling publisher confirms",
                OPERATION_TIMEOUT,
                channel.confirm_select(options),
                |source| BusError::OpenChannel { source },
            )
            .await?;
            let (requests, incoming) = mpsc::unbounded_channel();
            let breaker = self.breaker.clone();
            let on_failure = move || breaker.trip(generation);
            self.tasks.spawn(driver::drive(
                channel.clone(),
                incoming,
                config.confirm_timeout,
                on_failure,
            ));
            channels.push(PoolChannel { channel, requests });
        }
        let known_exchanges = config.topology.exchange_names().into_iter().collect();
        Ok(Link {
            generation,
            connection,
            channels,
            known_exchanges: Mutex::new(known_exchanges),
        })
    }

    /// Waits until the link breaks or the publisher stops.
    async fn watch(&self, link: &Link) -> LinkEnd {
        let mut events = link.connection.events();
        let mut health = tokio::time::interval(HEALTH_CHECK_INTERVAL);
        health.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = self.stop.cancelled() => return LinkEnd::Stop,
                () = self.breaker.notify.notified() => {
                    if self.breaker.is_tripped(link.generation) {
                        return LinkEnd::Broken("a publish found its channel failed");
                    }
                }
                event = events.next() => match event {
                    // Reported for the connection and for any channel closed with an error,
                    // including throw-away ones (a 404 from an exchange check): look at what
                    // actually failed.
                    Some(lapin::Event::Error(error)) => {
                        if let Some(broken) = link.broken() {
                            tracing::warn!(error = %error, "publisher connection error");
                            return LinkEnd::Broken(broken);
                        }
                    }
                    Some(lapin::Event::ConnectionBlocked(reason)) => {
                        tracing::warn!(reason = %reason, "the broker blocked publishing");
                    }
                    Some(lapin::Event::ConnectionUnblocked) => tracing::info!("the broker unblocked publishing"),
                    Some(_) => {}
                    None => return LinkEnd::Broken("the connection's event stream ended"),
                },
                _ = health.tick() => {
                    if let Some(broken) = link.broken() {
                        return LinkEnd::Broken(broken);
                    }
                }
            }
        }
    }
}

/// `delay` scaled by a random factor in [0.5, 1.0), so that many replicas do not reconnect in
/// lock step.
fn jittered(delay: Duration) -> Duration {
    delay.mul_f64(0.5 + rand::random::<f64>() / 2.0)
}
