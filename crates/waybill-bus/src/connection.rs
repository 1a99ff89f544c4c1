//! One AMQP connection, named so that operators can tell Waybill's connections apart in
//! `rabbitmqctl list_connections name client_properties`.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use lapin::options::QueueDeclareOptions;
use lapin::types::FieldTable;
use lapin::uri::AMQPUri;
use lapin::{Connection, ConnectionProperties};

use crate::error::{BusError, bounded_or, short_string};

/// How long connecting (TCP, TLS, AMQP handshake) may take before it is abandoned.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// How long one broker round trip (open a channel, declare, ack) may take.
pub(crate) const OPERATION_TIMEOUT: Duration = Duration::from_secs(10);

/// The heartbeat asked for when the URL does not set one (`?heartbeat=N`). The broker's
/// default (60 s) takes two minutes to notice a half-open TCP connection; 10 s takes 20.
pub const DEFAULT_HEARTBEAT_SECONDS: u16 = 10;

/// A connection to RabbitMQ. Cheap to clone (all clones share the one connection); closed when
/// the last clone, channel and consumer made from it are dropped, or by [`BusConnection::close`].
///
/// There is no automatic recovery at this level (lapin's opt-in recovery is not used): when the
/// connection is lost, operations fail with [`BusError::ConnectionLost`] and the owner connects
/// again. The [`crate::Publisher`] does that by itself; consumers are rebuilt by their caller.
#[derive(Clone)]
pub struct BusConnection {
    inner: Arc<Connection>,
    name: Arc<str>,
}

/// The number of messages ready in a queue and of consumers on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueStats {
    /// Messages ready for delivery (not counting delivered-but-unacknowledged ones).
    pub messages: u32,
    /// Consumers attached.
    pub consumers: u32,
}

impl BusConnection {
    /// Connects to `url` (e.g. `amqp://guest:guest@127.0.0.1:5672/%2f`) under the connection
    /// name `name`, within [`DEFAULT_CONNECT_TIMEOUT`]. `url` may list several nodes of a
    /// cluster separated by commas (see [`split_urls`]): the first that answers is used.
    pub async fn connect(url: &str, name: &str) -> Result<BusConnection, BusError> {
        Self::connect_with_timeout(url, name, DEFAULT_CONNECT_TIMEOUT).await
    }

    /// Like [`BusConnection::connect`] with an explicit bound on connecting (to each node).
    ///
    /// With several URLs, each call starts one further along the list than the last call of
    /// this process did, so a reconnection after a node went away tries another node first and
    /// a process's connections spread over the cluster; a node that refuses or times out is
    /// skipped, and only when none answers is the last node's error returned.
    #[tracing::instrument(skip_all, fields(connection.name = %name))]
    pub async fn connect_with_timeout(
        url: &str,
        name: &str,
        timeout: Duration,
    ) -> Result<BusConnection, BusError> {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let urls = split_urls(url);
        let start = if urls.len() > 1 {
            NEXT.fetch_add(1, Ordering::Relaxed)
        } else {
            0
        };
        let mut last_error = None;
        for offset in 0..urls.len() {
            let url = urls[(start + offset) % urls.len()];
            match Self::connect_one(url, name, timeout).await {
                Ok(connection) => return Ok(connection),
                Err(error @ BusError::InvalidUrl { .. }) => return Err(error),
                Err(error) => {
                    if urls.len() > 1 {
                        tracing::warn!(node = %node_of(url), %error, "broker node did not answer; trying the next");
                    }
                    last_error = Some(error);
                }
            }
        }
        Err(last_error.unwrap_or(BusError::InvalidUrl {
            reason: "no AMQP URL given".into(),
        }))
    }

    async fn connect_one(
        url: &str,
        name: &str,
        timeout: Duration,
    ) -> Result<BusConnection, BusError> {
        let mut uri: AMQPUri = url
            .parse()
            .map_err(|reason| BusError::InvalidUrl { reason })?;
        if uri.query.heartbeat.is_none() {
            uri.query.heartbeat = Some(DEFAULT_HEARTBEAT_SECONDS);
        }
        // The name is shown by rabbitmqctl and the management UI (lapin adds product/version).
        let properties = ConnectionProperties::default().with_connection_name(name.into());
        // Recovery stays off (the default): lapin 4's recovery has hung in past versions and
        // replays delivery tags onto new channels; Waybill reconnects explicitly instead.
        let connection = bounded_or(
            "connecting to the broker",
            timeout,
            Connection::connect_uri(uri, properties),
            |source| BusError::Connect { source },
        )
        .await?;
        tracing::debug!(node = %node_of(url), "connected to the broker");
        Ok(BusConnection {
            inner: Arc::new(connection),
            name: name.into(),
        })
    }

    /// The connection name given at connect time.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// True while the connection is established (false once closed or lost).
    pub fn is_open(&self) -> bool {
        self.inner.status().connected()
    }

    /// True while the broker blocks publishing on this connection (`connection.blocked`, sent
    /// when a memory or disk alarm is raised).
    pub fn is_blocked(&self) -> bool {
        self.inner.status().blocked()
    }

    /// The ready-message and consumer counts of a queue (a passive declare on a short-lived
    /// channel). Fails with [`BusError::Declare`] (404) when the queue does not exist.
    #[tracing::instrument(skip_all, fields(queue = %queue))]
    pub async fn queue_stats(&self, queue: &str) -> Result<QueueStats, BusError> {
        let channel = self.open_channel().await?;
        let options = QueueDeclareOptions {
            // Only look: fail with 404 instead of creating the queue.
            passive: true,
            // Wait for declare-ok: it carries the counts.
            nowait: false,
            // The rest (durable, exclusive, auto-delete) is ignored for a passive declare.
            ..QueueDeclareOptions::default()
        };
        let declared = declaration(
            "checking a queue",
            channel.queue_declare(
                short_string("queue name", queue)?,
                options,
                FieldTable::default(),
            ),
            || format!("queue {queue} (passive)"),
        )
        .await?;
        close_channel(&channel).await;
        Ok(QueueStats {
            messages: declared.message_count(),
            consumers: declared.consumer_count(),
        })
    }

    /// Closes the connection gracefully (unacknowledged deliveries go back to their queues).
    /// Does nothing when it is already closed.
    #[tracing::instrument(skip_all, fields(connection.name = %self.name))]
    pub async fn close(&self) -> Result<(), BusError> {
        if !self.is_open() {
            return Ok(());
        }
        bounded_or(
            "closing the connection",
            OPERATION_TIMEOUT,
            self.inner.close(200, "bye".into()),
            |source| BusError::ConnectionLost { source },
        )
        .await
    }

    /// Opens a channel, within [`OPERATION_TIMEOUT`].
    pub(crate) async fn open_channel(&self) -> Result<lapin::Channel, BusError> {
        bounded_or(
            "opening a channel",
            OPERATION_TIMEOUT,
            self.inner.create_channel(),
            |source| BusError::OpenChannel { source },
        )
        .await
    }

    /// The connection's event stream (errors, blocked/unblocked).
    pub(crate) fn events(&self) -> impl futures_util::Stream<Item = lapin::Event> + Send + 'static {
        self.inner.events_listener()
    }
}

impl fmt::Debug for BusConnection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Not lapin's Debug: it would print the connection's configuration.
        debug_fields!(f, self, "BusConnection" { name, open = self.is_open() })
    }
}

/// Waits, within [`OPERATION_TIMEOUT`], for a declaration (or binding) that is not part of the
/// topology; a failure is a [`BusError::Declare`] naming `entity`.
pub(crate) async fn declaration<T>(
    operation: &'static str,
    declaration: impl Future<Output = Result<T, lapin::Error>>,
    entity: impl FnOnce() -> String,
) -> Result<T, BusError> {
    bounded_or(operation, OPERATION_TIMEOUT, declaration, |source| {
        BusError::Declare {
            entity: entity(),
            source,
        }
    })
    .await
}

/// Closes a short-lived channel, ignoring failure (the broker may have closed it already) and
/// never waiting longer than [`OPERATION_TIMEOUT`].
pub(crate) async fn close_channel(channel: &lapin::Channel) {
    if channel.status().connected() {
        let _ = tokio::time::timeout(OPERATION_TIMEOUT, channel.close(200, "done".into())).await;
    }
}

/// The URLs of a comma-separated list of broker nodes (`amqp://a:5672/%2f,amqp://b:5672/%2f`).
/// A comma starts a new URL only when `amqp://` or `amqps://` follows it (spaces allowed), so a
/// comma inside a password or query stays part of its URL. Never empty: a value without such a
/// comma is one URL.
pub fn split_urls(list: &str) -> Vec<&str> {
    let mut urls = Vec::new();
    let mut start = 0;
    for (index, _) in list.match_indices(',') {
        let rest = list[index + 1..].trim_start();
        if rest.starts_with("amqp://") || rest.starts_with("amqps://") {
            urls.push(list[start..index].trim());
            start = index + 1;
        }
    }
    urls.push(list[start..].trim());
    urls
}

/// Checks that every URL of a list (see [`split_urls`]) is a valid AMQP URI.
pub fn validate_urls(list: &str) -> Result<(), BusError> {
    for url in split_urls(list) {
        url.parse::<AMQPUri>()
            .map_err(|reason| BusError::InvalidUrl { reason })?;
    }
    Ok(())
}

/// `host:port` of a URL, for logs (never the credentials).
fn node_of(url: &str) -> String {
    match url.parse::<AMQPUri>() {
        Ok(uri) => format!("{}:{}", uri.authority.host, uri.authority.port),
        Err(_) => "an unparseable URL".to_owned(),
    }
}

#[cfg(test)]
mod url_list_tests {
    use super::*;

    #[test]
    fn split_urls_splits_only_before_another_url() {
        assert_eq!(
            split_urls("amqp://u:p@a:5672/%2f, amqps://u:p@b:5671/%2f,amqp://c/%2f"),
            [
                "amqp://u:p@a:5672/%2f",
                "amqps://u:p@b:5671/%2f",
                "amqp://c/%2f"
            ]
        );
        // A comma in a password or a query does not start a URL.
        assert_eq!(
            split_urls("amqp://u:p,w@a/%2f?heartbeat=5,amqp://b/%2f"),
            ["amqp://u:p,w@a/%2f?heartbeat=5", "amqp://b/%2f"]
        );
        assert_eq!(split_urls(" amqp://a/%2f "), ["amqp://a/%2f"]);
    }

    #[test]
    fn node_of_never_shows_credentials() {
        assert_eq!(
            node_of("amqp://guest:secret@10.0.0.7:5681/%2f"),
            "10.0.0.7:5681"
        );
        assert!(!node_of("amqp://guest:secret@h/%2f").contains("secret"));
    }
}
