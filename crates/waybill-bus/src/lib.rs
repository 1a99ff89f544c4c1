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
//! * [`keys`]: the API key set, published as snapshots and kept by every ingress and worker.
//!
//! **Invariant:** this is the only crate of the workspace that names `lapin`. Its public API uses
//! its own types only (lapin errors travel as the opaque [`AmqpError`]), so the compiler keeps
//! AMQP details out of the ingress and the worker.
//!
//! **Invariant:** every await on the broker is bounded by a timeout; nothing here panics on
//! input, network or configuration; bodies are never logged.
//!
//! # lapin 4 notes (what this crate works around)
//!
//! * **Returns are mis-paired under pipelining.** lapin attaches a `basic.return` to the first
//!   confirm it resolves after the return, which with coalesced (`multiple`) acks is often another
//!   publish's. The publisher pairs returns itself by a publish id header (`publisher::driver`).
//! * **A confirm can resolve before `basic_publish` returns** its confirm future; the driver
//!   accounts for that too.
//! * **Recovery is off.** `enable_auto_recover` has had hangs, and recovered channels keep old
//!   delivery tags meaningful only to the old channel (fixed for acks only in 4.12.3). Publishers
//!   reconnect by themselves; consumers are rebuilt by their owner (see [`Consumer`]).
//! * **`ShortString::from` panics** over 255 bytes; names, keys, ids and header names from input
//!   go through a checked conversion and fail as errors instead.
//! * **lapin logs returned messages at WARN with their body** (`Server returned us a message`,
//!   `Debug` of the whole message). The telemetry filter must keep `lapin=error` (or at least
//!   `lapin::returned_messages=error`) so that bodies never reach the logs.
//! * **A channel closed by the broker is reported as a connection event error** even though the
//!   connection is fine; the publisher checks what actually failed before reconnecting.

/// A hand-written `Debug` by `debug_struct`, for types whose derived `Debug` would log what must
/// not be logged (bodies, URLs with credentials) or what says nothing (lapin's internals). Lists
/// the fields shown, in order: a bare name shows the field of that name, `name = value` shows a
/// summary in its place.
macro_rules! debug_fields {
    ($f:expr, $self:ident, $name:literal { $($field:ident $(= $value:expr)?),* $(,)? }) => {
        $f.debug_struct($name)
            $(.field(stringify!($field), &debug_fields!(@value $self, $field $(, $value)?)))*
            .finish()
    };
    (@value $self:ident, $field:ident) => {
        $self.$field
    };
    (@value $self:ident, $field:ident, $value:expr) => {
        $value
    };
}

pub mod bench;
pub mod dead;
pub mod envelope;
pub mod keys;

mod connection;
mod consumer;
mod error;
mod headers;
mod message;
mod publisher;
mod topology;

pub use connection::{
    BusConnection, DEFAULT_CONNECT_TIMEOUT, DEFAULT_HEARTBEAT_SECONDS, QueueStats, split_urls,
    validate_urls,
};
pub use consumer::{Acker, Consumer, Delivery};
pub use error::{AmqpError, BusError, PublishError};
pub use headers::{
    ORIGINAL_EXCHANGE_HEADER, ORIGINAL_QUEUE_HEADER, ORIGINAL_ROUTING_KEY_HEADER, REASON_HEADER,
};
pub use message::OutboundMessage;
pub use publisher::{Publisher, PublisherConfig};
pub use topology::Topology;
