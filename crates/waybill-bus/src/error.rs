//! The errors of the bus, one enum per concern: [`BusError`] for connections, topology,
//! consuming and acknowledging; [`PublishError`] for confirmed publishing. Envelope decoding
//! has its own [`crate::envelope::EnvelopeError`].

use std::fmt;
use std::time::Duration;

/// An error reported by the AMQP client library, kept opaque so that no other crate has to
/// (or may) name the library. Its `Display` is the library's message; its source chain is kept.
#[derive(Clone)]
pub struct AmqpError(pub(crate) lapin::Error);

impl AmqpError {
    /// The AMQP reply code when the broker closed the channel or connection with an error
    /// (e.g. 404 not found, 406 precondition failed, 320 connection forced).
    pub fn reply_code(&self) -> Option<u16> {
        match self.0.kind() {
            lapin::ErrorKind::ProtocolError(error) => Some(error.get_id()),
            _ => None,
        }
    }

    /// True when the broker answered 404 NOT_FOUND (no such exchange or queue).
    pub fn is_not_found(&self) -> bool {
        self.reply_code() == Some(404)
    }

    /// True when the broker answered 406 PRECONDITION_FAILED (e.g. a queue exists with other
    /// arguments, or an unknown delivery tag was acknowledged).
    pub fn is_precondition_failed(&self) -> bool {
        self.reply_code() == Some(406)
    }
}

impl fmt::Debug for AmqpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

impl fmt::Display for AmqpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

impl std::error::Error for AmqpError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        std::error::Error::source(&self.0)
    }
}

impl From<lapin::Error> for AmqpError {
    fn from(error: lapin::Error) -> Self {
        AmqpError(error)
    }
}

/// Why a connection, a declaration, a consumer or an acknowledgement failed.
///
/// Every variant is transient from the broker's point of view except [`BusError::InvalidUrl`],
/// [`BusError::InvalidName`] and [`BusError::InvalidDeliveryTag`], which are configuration or
/// programming errors. After [`BusError::ConnectionLost`] the caller builds a new connection and
/// consumer; the broker redelivers whatever was not acknowledged.
#[derive(Debug, thiserror::Error)]
pub enum BusError {
    /// The AMQP URL does not parse. (The URL itself is not repeated: it may hold a password.)
    #[error("the AMQP URL is invalid: {reason}")]
    InvalidUrl {
        /// What is wrong with it.
        reason: String,
    },
    /// The TCP connection or the AMQP handshake failed (refused, unreachable, bad credentials,
    /// unknown vhost).
    #[error("could not connect to the broker")]
    Connect {
        /// The client's error.
        #[source]
        source: AmqpError,
    },
    /// A name or header is not acceptable to AMQP (short strings are at most 255 bytes).
    #[error("invalid {what}: {reason}")]
    InvalidName {
        /// Which name.
        what: &'static str,
        /// Why.
        reason: String,
    },
    /// A channel could not be opened on the connection.
    #[error("could not open a channel")]
    OpenChannel {
        /// The client's error.
        #[source]
        source: AmqpError,
    },
    /// Declaring (or binding, or checking) an exchange or queue failed. A 406 here usually means
    /// the entity exists with other arguments (e.g. another delivery limit): change it with a
    /// policy, or delete the entity.
    #[error("could not declare {entity}")]
    Declare {
        /// The exchange, queue or binding, e.g. `queue waybill.webhooks`.
        entity: String,
        /// The client's error.
        #[source]
        source: AmqpError,
    },
    /// Deleting an exchange or queue failed.
    #[error("could not delete {entity}")]
    Delete {
        /// The exchange or queue.
        entity: String,
        /// The client's error.
        #[source]
        source: AmqpError,
    },
    /// Setting the prefetch or starting the consumer failed (e.g. the queue does not exist).
    #[error("could not start consuming from `{queue}`")]
    Consume {
        /// The queue.
        queue: String,
        /// The client's error.
        #[source]
        source: AmqpError,
    },
    /// The connection or the channel went away. Unacknowledged deliveries go back to the queue;
    /// build a new connection and consumer.
    #[error("the connection or channel to the broker was lost")]
    ConnectionLost {
        /// The client's error.
        #[source]
        source: AmqpError,
    },
    /// The broker cancelled the consumer (the queue was deleted, or the node hosting it went
    /// away). Build a new consumer.
    #[error("the broker cancelled the consumer on `{queue}`")]
    ConsumerCancelled {
        /// The queue.
        queue: String,
    },
    /// Delivery tags start at 1; tag 0 with `multiple` would mean "everything".
    #[error("delivery tag 0 is not a delivery")]
    InvalidDeliveryTag,
    /// An ack, nack or reject could not be sent. The channel is gone: the broker requeues
    /// everything unacknowledged on it.
    #[error("could not {operation} delivery {delivery_tag}")]
    Acknowledge {
        /// `ack`, `nack` or `reject`.
        operation: &'static str,
        /// The delivery tag.
        delivery_tag: u64,
        /// The client's error.
        #[source]
        source: AmqpError,
    },
    /// Fetching a message with `basic.get` failed.
    #[error("could not get a message from `{queue}`")]
    Get {
        /// The queue.
        queue: String,
        /// The client's error.
        #[source]
        source: AmqpError,
    },
    /// A broker operation did not complete within its bound.
    #[error("{operation} did not complete within {after:?}")]
    Timeout {
        /// What was attempted.
        operation: &'static str,
        /// The bound.
        after: Duration,
    },
}

/// Why a publish was not confirmed. The message may or may not be on the broker after
/// [`PublishError::Timeout`] and [`PublishError::Unavailable`]; publish again (consumers are
/// idempotent), or answer `503` and let the sender retry.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    /// The broker refused the message with `basic.nack`: typically a queue at its length limit
    /// with `x-overflow: reject-publish`, or a queue without a quorum. Retry later.
    #[error("the broker refused the message (nack): a queue is full or unavailable")]
    Nacked,
    /// The exchange has no binding for the routing key, so the `mandatory` message was returned.
    /// A configuration error, not a transient one.
    #[error(
        "no queue is bound to `{exchange}` for routing key `{routing_key}` ({reply_code} {reply_text})"
    )]
    Unroutable {
        /// The exchange published to.
        exchange: String,
        /// The routing key published with.
        routing_key: String,
        /// The broker's reply code (312 NO_ROUTE).
        reply_code: u16,
        /// The broker's reply text.
        reply_text: String,
    },
    /// The exchange does not exist (checked before publishing, so that a bad name does not
    /// close a shared channel). A configuration error.
    #[error("the exchange `{exchange}` does not exist")]
    ExchangeNotFound {
        /// The exchange.
        exchange: String,
    },
    /// The confirm did not arrive within the bound (broker overloaded, blocked, or partitioned).
    #[error("the broker did not confirm the message within {after:?}")]
    Timeout {
        /// The bound.
        after: Duration,
    },
    /// Not connected (broker down, reconnecting, connection blocked by a resource alarm, or the
    /// publisher is closing). Fails fast; retry later.
    #[error("the broker is unavailable: {reason}")]
    Unavailable {
        /// Why, in a few words.
        reason: &'static str,
        /// The client's error, when there is one.
        #[source]
        source: Option<AmqpError>,
    },
    /// The message cannot be sent as given (a routing key, message id or header name longer
    /// than 255 bytes). A programming error.
    #[error("the message is invalid: {reason}")]
    Invalid {
        /// Why.
        reason: String,
    },
}

impl PublishError {
    /// A short, closed label for metrics: `nacked`, `unroutable`, `exchange_not_found`,
    /// `timeout`, `unavailable`, `invalid`.
    pub fn kind(&self) -> &'static str {
        match self {
            PublishError::Nacked => "nacked",
            PublishError::Unroutable { .. } => "unroutable",
            PublishError::ExchangeNotFound { .. } => "exchange_not_found",
            PublishError::Timeout { .. } => "timeout",
            PublishError::Unavailable { .. } => "unavailable",
            PublishError::Invalid { .. } => "invalid",
        }
    }

    /// True when publishing the same message again later may succeed (nack, timeout,
    /// unavailable); false for configuration and programming errors.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            PublishError::Nacked | PublishError::Timeout { .. } | PublishError::Unavailable { .. }
        )
    }

    pub(crate) fn unavailable(reason: &'static str) -> Self {
        PublishError::Unavailable {
            reason,
            source: None,
        }
    }

    pub(crate) fn lost(reason: &'static str, error: lapin::Error) -> Self {
        PublishError::Unavailable {
            reason,
            source: Some(AmqpError(error)),
        }
    }
}

/// Runs one broker operation under a time bound, so that no await on the broker can hang.
pub(crate) async fn bounded<T>(
    operation: &'static str,
    after: Duration,
    future: impl Future<Output = Result<T, lapin::Error>>,
) -> Result<Result<T, lapin::Error>, BusError> {
    tokio::time::timeout(after, future)
        .await
        .map_err(|_elapsed| BusError::Timeout { operation, after })
}

/// [`bounded`], with lapin's error made a [`BusError`] by `error`.
pub(crate) async fn bounded_or<T>(
    operation: &'static str,
    after: Duration,
    future: impl Future<Output = Result<T, lapin::Error>>,
    error: impl FnOnce(AmqpError) -> BusError,
) -> Result<T, BusError> {
    bounded(operation, after, future)
        .await?
        .map_err(|source| error(AmqpError(source)))
}

/// A short string for AMQP (exchange, queue, routing key, header name, message id), or why not.
pub(crate) fn short_string(
    what: &'static str,
    value: &str,
) -> Result<lapin::types::ShortString, BusError> {
    lapin::types::ShortString::try_new(value).map_err(|error| BusError::InvalidName {
        what,
        reason: error.to_string(),
    })
}

/// An error and its sources, `: `-separated, for one log field.
pub(crate) fn chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
