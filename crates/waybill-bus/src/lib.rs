//! Everything Waybill says to RabbitMQ.
//!
//! * [`Topology`]: every exchange, queue, binding and queue argument, declared idempotently.
//! * [`BusConnection`]: one named connection.
//! * [`Publisher`]: confirmed, pipelined, self-reconnecting publishing shared by all handlers;
//!   a nack, an unroutable return, a missing confirm or a lost connection is an error, never
//!   success.
//! * [`Consumer`] and [`Acker`]: manual-ack consuming with prefetch; acks go on the channel the
//!   delivery came from.
//! * [`envelope`]: the versioned wire format of queued messages.
//! * [`dead`]: dead-lettering poison messages, and reading and replaying the dead-letter queue.
//!
//! **Invariant:** this is the only crate of the workspace that names `lapin`. Its public API uses
//! its own types only (lapin errors travel as the opaque [`AmqpError`]), so the compiler keeps
//! AMQP details out of the ingress and the worker.
//!
//! **Invariant:** every await on the broker is bounded by a timeout; nothing here panics on
//! input, network or configuration; bodies are never logged.

pub mod dead;
pub mod envelope;

mod connection;
mod consumer;
mod error;
mod headers;
mod message;
mod publisher;
mod topology;

pub use connection::{
    BusConnection, DEFAULT_CONNECT_TIMEOUT, DEFAULT_HEARTBEAT_SECONDS, QueueStats,
};
pub use consumer::{Acker, Consumer, Delivery};
pub use error::{AmqpError, BusError, PublishError};
pub use headers::{
    ORIGINAL_EXCHANGE_HEADER, ORIGINAL_QUEUE_HEADER, ORIGINAL_ROUTING_KEY_HEADER, REASON_HEADER,
};
pub use message::OutboundMessage;
pub use publisher::{Publisher, PublisherConfig};
pub use topology::Topology;
