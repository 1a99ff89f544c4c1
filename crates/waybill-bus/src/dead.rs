//! The dead-letter queue: putting poison messages there, and reading, replaying or discarding
//! them one at a time.
//!
//! Messages arrive in `waybill.dead` two ways:
//! * **by the broker**, when a message was delivered `delivery_limit` times without an ack (or was
//!   rejected): it carries `x-death` / `x-first-death-*` headers naming the queue and reason;
//! * **by the worker**, through [`publish_dead`], for a message it knows will never succeed (it
//!   does not decode, a profile rejects it): it carries [`REASON_HEADER`] and the original
//!   exchange, routing key and queue, and the worker acks the original afterwards.

pub mod admin;

use std::collections::BTreeMap;
use std::fmt;

use lapin::options::{BasicAckOptions, BasicGetOptions, BasicNackOptions};

use crate::connection::{BusConnection, OPERATION_TIMEOUT, close_channel};
use crate::consumer::Delivery;
use crate::error::{BusError, PublishError, bounded_or, short_string};
use crate::headers::{
    ORIGINAL_EXCHANGE_HEADER, ORIGINAL_QUEUE_HEADER, ORIGINAL_ROUTING_KEY_HEADER, REASON_HEADER,
    death_routing_key, first_death, integer_header, string_headers,
};
use crate::message::OutboundMessage;
use crate::publisher::Publisher;
use crate::topology::Topology;

/// A message read from the dead-letter queue. It stays on the queue, unacknowledged on the
/// [`DeadLetters`] handle's channel, until [`DeadLetters::remove`], [`DeadLetters::replay`],
/// [`DeadLetters::release`] or [`DeadLetters::close`].
#[derive(Clone)]
pub struct DeadMessage {
    /// The tag on the reading channel.
    pub delivery_tag: u64,
    /// The body (never logged).
    pub body: Vec<u8>,
    /// The string headers (including `x-first-death-*` and `x-waybill-*`).
    pub headers: BTreeMap<String, String>,
    /// The `message_id` property (kept through dead-lettering and replay).
    pub message_id: Option<String>,
    /// Why it died: the worker's reason, or the broker's (`delivery_limit`, `rejected`,
    /// `expired`, `maxlen`).
    pub reason: Option<String>,
    /// The exchange it was first published to, when known.
    pub original_exchange: Option<String>,
    /// The routing key it was first published with, when known.
    pub original_routing_key: Option<String>,
    /// The queue it died in, when known.
    pub original_queue: Option<String>,
    /// How many times the broker dead-lettered it from that queue (from `x-death`).
    pub death_count: Option<i64>,
    /// Messages left in the dead-letter queue after this one.
    pub remaining: u32,
}

impl fmt::Debug for DeadMessage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        debug_fields!(f, self, "DeadMessage" {
            delivery_tag,
            body_len = self.body.len(),
            message_id, reason, original_exchange, original_routing_key, original_queue,
            death_count, remaining,
        })
    }
}

/// Why a replay failed.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    /// The message does not say where it came from, so it cannot be replayed automatically.
    #[error("the dead message does not name its original exchange and routing key")]
    UnknownOrigin,
    /// Publishing it back failed; it is still in the dead-letter queue.
    #[error("could not publish the message back")]
    Publish(#[source] PublishError),
    /// It was published back but could not be removed from the dead-letter queue: it is now in
    /// both (harmless: consumers are idempotent).
    #[error("replayed, but could not remove it from the dead-letter queue")]
    Remove(#[source] BusError),
}

/// A reading handle on the dead-letter queue, with its own channel. Messages read and not yet
/// removed go back to the queue when the handle is closed or dropped, so listing the queue is
/// reading until `None` and closing.
pub struct DeadLetters {
    channel: lapin::Channel,
    queue: String,
}

impl DeadLetters {
    /// Opens a handle on the topology's dead-letter queue.
    pub async fn open(conn: &BusConnection, topology: &Topology) -> Result<DeadLetters, BusError> {
        Ok(DeadLetters {
            channel: conn.open_channel().await?,
            queue: topology.dead_queue(),
        })
    }

    /// The next dead message not yet read through this handle, or `None` when there is none.
    #[tracing::instrument(skip_all, fields(queue = %self.queue))]
    pub async fn get(&self) -> Result<Option<DeadMessage>, BusError> {
        let options = BasicGetOptions {
            // Keep it on the queue until it is explicitly removed or replayed.
            no_ack: false,
        };
        let got = bounded_or(
            "reading a dead letter",
            OPERATION_TIMEOUT,
            self.channel
                .basic_get(short_string("queue name", &self.queue)?, options),
            |source| BusError::Get {
                queue: self.queue.clone(),
                source,
            },
        )
        .await?;
        Ok(got.map(|message| dead_message(message.delivery, message.message_count)))
    }

    /// Removes a dead message for good (after it was replayed by hand, or judged worthless).
    pub async fn remove(&self, delivery_tag: u64) -> Result<(), BusError> {
        let options = BasicAckOptions {
            // Only this message.
            multiple: false,
        };
        let ack = self.channel.basic_ack(delivery_tag, options);
        acknowledge("removing a dead letter", "ack", delivery_tag, ack).await
    }

    /// Puts a dead message back on the dead-letter queue now (instead of at close).
    pub async fn release(&self, delivery_tag: u64) -> Result<(), BusError> {
        let options = BasicNackOptions {
            // Only this message.
            multiple: false,
            // Back onto the dead-letter queue (it has no dead-letter exchange of its own).
            requeue: true,
        };
        let nack = self.channel.basic_nack(delivery_tag, options);
        acknowledge("releasing a dead letter", "nack", delivery_tag, nack).await
    }

    /// Publishes a dead message back to where it was first published (same body, `message_id`
    /// and string headers, minus the death bookkeeping), with a confirm, and then removes it
    /// from the dead-letter queue. Consumers are idempotent, so replaying twice is harmless.
    #[tracing::instrument(skip_all, fields(queue = %self.queue, delivery_tag = message.delivery_tag))]
    pub async fn replay(
        &self,
        publisher: &Publisher,
        message: &DeadMessage,
    ) -> Result<(), ReplayError> {
        let (Some(exchange), Some(routing_key)) =
            (&message.original_exchange, &message.original_routing_key)
        else {
            return Err(ReplayError::UnknownOrigin);
        };
        let headers = message
            .headers
            .iter()
            .filter(|(name, _)| !is_death_bookkeeping(name))
            .map(|(name, value)| (name.clone(), value.clone()))
            .collect();
        let outbound = OutboundMessage {
            exchange: exchange.clone(),
            routing_key: routing_key.clone(),
            body: message.body.clone(),
            message_id: message.message_id.clone(),
            headers,
            mandatory: true,
        };
        publisher
            .publish(outbound)
            .await
            .map_err(ReplayError::Publish)?;
        self.remove(message.delivery_tag)
            .await
            .map_err(ReplayError::Remove)
    }

    /// Closes the handle: every message read and not removed goes back to the queue.
    pub async fn close(self) {
        close_channel(&self.channel).await;
    }
}

impl fmt::Debug for DeadLetters {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        debug_fields!(f, self, "DeadLetters" { queue })
    }
}

/// The message that puts `delivery` (consumed from `queue`) on the dead-letter exchange with
/// `reason`: same body, `message_id` and string headers, plus [`REASON_HEADER`] and the original
/// exchange, routing key and queue so that it can be replayed.
pub fn dead_letter_message(
    topology: &Topology,
    queue: &str,
    delivery: &Delivery,
    reason: &str,
) -> OutboundMessage {
    let mut headers = delivery.headers.clone();
    // Header values are long strings, but keep reasons readable (and bounded).
    headers.insert(
        REASON_HEADER.to_owned(),
        reason.chars().take(1000).collect(),
    );
    headers.insert(
        ORIGINAL_EXCHANGE_HEADER.to_owned(),
        delivery.exchange.clone(),
    );
    headers.insert(
        ORIGINAL_ROUTING_KEY_HEADER.to_owned(),
        delivery.routing_key.clone(),
    );
    headers.insert(ORIGINAL_QUEUE_HEADER.to_owned(), queue.to_owned());
    OutboundMessage {
        exchange: topology.dead_exchange(),
        routing_key: Topology::DEAD_ROUTING_KEY.to_owned(),
        body: delivery.body.clone(),
        message_id: delivery.message_id.clone(),
        headers,
        mandatory: true,
    }
}

/// Dead-letters a message the caller knows is poison: publishes it (confirmed) to the dead-letter
/// exchange with `reason`. On `Ok`, ack the original delivery; on `Err`, leave it unacknowledged
/// (or nack it with requeue) so that it is not lost.
#[tracing::instrument(skip_all, fields(queue = %queue, delivery_tag = delivery.delivery_tag))]
pub async fn publish_dead(
    publisher: &Publisher,
    topology: &Topology,
    queue: &str,
    delivery: &Delivery,
    reason: &str,
) -> Result<(), PublishError> {
    publisher
        .publish(dead_letter_message(topology, queue, delivery, reason))
        .await
}

/// An acknowledgement of a dead letter, bounded by [`OPERATION_TIMEOUT`].
async fn acknowledge(
    what: &'static str,
    operation: &'static str,
    delivery_tag: u64,
    acknowledgement: impl Future<Output = Result<(), lapin::Error>>,
) -> Result<(), BusError> {
    bounded_or(what, OPERATION_TIMEOUT, acknowledgement, |source| {
        BusError::Acknowledge {
            operation,
            delivery_tag,
            source,
        }
    })
    .await
}

fn dead_message(delivery: lapin::message::Delivery, remaining: u32) -> DeadMessage {
    let table = delivery.properties.headers().as_ref();
    let headers = string_headers(table);
    let death = first_death(table);
    let from_death = |key: &str| {
        death
            .and_then(|death| death.inner().get(key))
            .and_then(crate::headers::as_string)
    };
    let reason = headers
        .get(REASON_HEADER)
        .or_else(|| headers.get("x-first-death-reason"))
        .cloned()
        .or_else(|| from_death("reason"));
    let original_exchange = headers
        .get(ORIGINAL_EXCHANGE_HEADER)
        .or_else(|| headers.get("x-first-death-exchange"))
        .cloned()
        .or_else(|| from_death("exchange"));
    let original_routing_key = headers
        .get(ORIGINAL_ROUTING_KEY_HEADER)
        .cloned()
        .or_else(|| death.and_then(death_routing_key))
        // The broker dead-letters with the original routing key (no x-dead-letter-routing-key).
        .or_else(|| Some(delivery.routing_key.to_string()));
    let original_queue = headers
        .get(ORIGINAL_QUEUE_HEADER)
        .or_else(|| headers.get("x-first-death-queue"))
        .cloned()
        .or_else(|| from_death("queue"));
    let death_count = death.and_then(|death| integer_header(Some(death), "count"));
    DeadMessage {
        delivery_tag: delivery.delivery_tag,
        message_id: delivery
            .properties
            .message_id()
            .as_ref()
            .map(ToString::to_string),
        body: delivery.data,
        headers,
        reason,
        original_exchange,
        original_routing_key,
        original_queue,
        death_count,
        remaining,
    }
}

/// Headers that describe a death rather than the message; not carried into a replay.
fn is_death_bookkeeping(name: &str) -> bool {
    name.starts_with("x-first-death-")
        || name.starts_with("x-last-death-")
        || name.starts_with("x-waybill-")
        || name == "x-delivery-count"
}
