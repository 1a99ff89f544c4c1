//! Consuming a queue with manual acknowledgements on the delivery's own channel.
//!
//! # Reconnection contract
//!
//! A [`Consumer`] lives on one channel of one connection and never reconnects by itself:
//! acknowledgements carry delivery tags that only mean something on the channel that delivered
//! them, so a transparently replaced channel would ack the wrong messages. When the connection
//! or channel goes, [`Consumer::next`] yields `Err(BusError::ConnectionLost)` once and then
//! `None`; the broker puts every unacknowledged delivery back in the queue (marked
//! `redelivered`, with `x-delivery-count` raised on quorum queues). The caller drops the consumer
//! and its [`Acker`]s, waits (with backoff), connects again and starts a new consumer.
//! Acknowledging a tag of the old channel fails with [`BusError::Acknowledge`] and does no harm.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use futures_util::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicNackOptions, BasicQosOptions, BasicRejectOptions,
};
use lapin::types::FieldTable;

use crate::connection::{BusConnection, OPERATION_TIMEOUT, close_channel};
use crate::error::{BusError, bounded_or, short_string};
use crate::headers::{integer_header, string_headers};

/// One message received from a queue. Acknowledge it through the consumer's [`Acker`].
#[derive(Clone, PartialEq, Eq)]
pub struct Delivery {
    /// The body (never logged).
    pub body: Vec<u8>,
    /// The tag to acknowledge it with, on this consumer's channel only.
    pub delivery_tag: u64,
    /// True when the broker delivered it before (to this or another consumer) without an ack.
    pub redelivered: bool,
    /// The exchange it was published to (`""` for the default exchange).
    pub exchange: String,
    /// The routing key it was published with.
    pub routing_key: String,
    /// Its string-valued headers (e.g. `traceparent`).
    pub headers: BTreeMap<String, String>,
    /// Its `message_id` property.
    pub message_id: Option<String>,
    /// The quorum queue's `x-delivery-count`: how many times it was delivered and returned
    /// before (absent on a first delivery).
    pub delivery_count: Option<i64>,
}

impl Delivery {
    /// True when returning this delivery to the queue (nack with requeue, or losing the
    /// channel) makes the broker dead-letter it: with `x-delivery-limit: N` a message is
    /// delivered N + 1 times in all (measured on RabbitMQ 3.10), the last one carrying
    /// `x-delivery-count: N`. A worker that knows why it keeps failing can dead-letter it itself
    /// on this attempt, with a reason, instead of leaving the broker's bare `delivery_limit`.
    pub fn is_final_attempt(&self, delivery_limit: u32) -> bool {
        self.delivery_count.unwrap_or(0) >= i64::from(delivery_limit)
    }
}

impl fmt::Debug for Delivery {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        debug_fields!(f, self, "Delivery" {
            body_len = self.body.len(),
            delivery_tag, redelivered, exchange, routing_key, headers, message_id, delivery_count,
        })
    }
}

impl From<lapin::message::Delivery> for Delivery {
    fn from(delivery: lapin::message::Delivery) -> Self {
        let headers = delivery.properties.headers().as_ref();
        Delivery {
            delivery_tag: delivery.delivery_tag,
            redelivered: delivery.redelivered,
            exchange: delivery.exchange.to_string(),
            routing_key: delivery.routing_key.to_string(),
            headers: string_headers(headers),
            message_id: delivery
                .properties
                .message_id()
                .as_ref()
                .map(ToString::to_string),
            delivery_count: integer_header(headers, "x-delivery-count"),
            body: delivery.data,
        }
    }
}

/// A consumer on one queue, with its own channel and prefetch. See the module documentation
/// for what happens when the connection goes.
pub struct Consumer {
    channel: lapin::Channel,
    stream: lapin::Consumer,
    queue: String,
    acker: Acker,
    finished: bool,
    cancelled_by_us: bool,
}

impl Consumer {
    /// Opens a channel on `conn`, sets its prefetch (unacknowledged deliveries outstanding at
    /// once; make it at least the worker's batch size, or batches never fill; 0 means unlimited)
    /// and starts consuming `queue` with manual acknowledgements. An empty `consumer_tag` lets the
    /// broker pick one.
    #[tracing::instrument(skip_all, fields(queue = %queue, prefetch = prefetch))]
    pub async fn start(
        conn: &BusConnection,
        queue: &str,
        prefetch: u16,
        consumer_tag: &str,
    ) -> Result<Consumer, BusError> {
        let channel = conn.open_channel().await?;
        let consume_error = |source| BusError::Consume {
            queue: queue.to_owned(),
            source,
        };
        let qos = BasicQosOptions {
            // Per consumer, not shared by the channel (quorum queues ignore global QoS anyway).
            global: false,
        };
        bounded_or(
            "setting the prefetch",
            OPERATION_TIMEOUT,
            channel.basic_qos(prefetch, qos),
            consume_error,
        )
        .await?;
        let options = BasicConsumeOptions {
            // Irrelevant to RabbitMQ (it does not implement no-local for queues).
            no_local: false,
            // Manual acknowledgements: a message is done only after its effects committed.
            no_ack: false,
            // Several worker replicas consume the same queue.
            exclusive: false,
            // Wait for consume-ok so that a missing queue fails here.
            nowait: false,
        };
        let stream = bounded_or(
            "starting a consumer",
            OPERATION_TIMEOUT,
            channel.basic_consume(
                short_string("queue name", queue)?,
                short_string("consumer tag", consumer_tag)?,
                options,
                FieldTable::default(),
            ),
            consume_error,
        )
        .await?;
        let acker = Acker {
            channel: channel.clone(),
            timeout: OPERATION_TIMEOUT,
        };
        Ok(Consumer {
            channel,
            stream,
            queue: queue.to_owned(),
            acker,
            finished: false,
            cancelled_by_us: false,
        })
    }

    /// The next delivery. `None` after [`Consumer::cancel`], or after one error (connection lost,
    /// consumer cancelled by the broker) has been returned. Cancel-safe: usable in `select!`.
    pub async fn next(&mut self) -> Option<Result<Delivery, BusError>> {
        if self.finished {
            return None;
        }
        match self.stream.next().await {
            Some(Ok(delivery)) => Some(Ok(Delivery::from(delivery))),
            Some(Err(source)) => {
                self.finished = true;
                Some(Err(BusError::ConnectionLost {
                    source: source.into(),
                }))
            }
            None => {
                self.finished = true;
                if self.cancelled_by_us {
                    None
                } else {
                    Some(Err(BusError::ConsumerCancelled {
                        queue: self.queue.clone(),
                    }))
                }
            }
        }
    }

    /// The handle that acknowledges this consumer's deliveries (cloneable; same channel).
    pub fn acker(&self) -> Acker {
        self.acker.clone()
    }

    /// The queue consumed.
    pub fn queue(&self) -> &str {
        &self.queue
    }

    /// Stops deliveries and closes the channel: every delivery not yet acknowledged goes back to
    /// the queue. Acknowledge what was processed *before* calling this.
    #[tracing::instrument(skip_all, fields(queue = %self.queue))]
    pub async fn cancel(&mut self) {
        self.cancelled_by_us = true;
        self.finished = true;
        close_channel(&self.channel).await;
    }
}

impl fmt::Debug for Consumer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        debug_fields!(f, self, "Consumer" { queue, finished })
    }
}

/// Acknowledges deliveries on the channel they came from. Cloneable. Keeping a clone keeps the
/// channel (and its unacknowledged deliveries) open; drop it with the consumer.
///
/// Never acknowledge a tag twice: the broker answers an unknown tag by closing the channel,
/// which returns every other unacknowledged delivery on it to the queue.
#[derive(Clone)]
pub struct Acker {
    channel: lapin::Channel,
    timeout: Duration,
}

impl Acker {
    /// Acknowledges one delivery: it is done and leaves the queue.
    pub async fn ack(&self, delivery_tag: u64) -> Result<(), BusError> {
        self.ack_with(delivery_tag, false).await
    }

    /// Acknowledges every outstanding delivery up to and including `up_to` in one frame (after
    /// a batch committed).
    pub async fn ack_multiple(&self, up_to: u64) -> Result<(), BusError> {
        self.ack_with(up_to, true).await
    }

    /// Negatively acknowledges one delivery: `requeue` puts it back (its delivery count rises
    /// and it is dead-lettered past the limit); otherwise it is dead-lettered now.
    pub async fn nack(&self, delivery_tag: u64, requeue: bool) -> Result<(), BusError> {
        self.nack_with(delivery_tag, false, requeue).await
    }

    /// Negatively acknowledges every outstanding delivery up to and including `up_to`.
    pub async fn nack_multiple(&self, up_to: u64, requeue: bool) -> Result<(), BusError> {
        self.nack_with(up_to, true, requeue).await
    }

    /// `basic.ack` of `delivery_tag`, and with `multiple` of every outstanding delivery with a
    /// tag below it.
    async fn ack_with(&self, delivery_tag: u64, multiple: bool) -> Result<(), BusError> {
        let options = BasicAckOptions { multiple };
        self.run(
            "ack",
            delivery_tag,
            self.channel.basic_ack(delivery_tag, options),
        )
        .await
    }

    /// `basic.nack` of `delivery_tag` (and with `multiple` of every outstanding delivery with a
    /// tag below it): back to the queue with `requeue`, or to the dead-letter exchange.
    async fn nack_with(
        &self,
        delivery_tag: u64,
        multiple: bool,
        requeue: bool,
    ) -> Result<(), BusError> {
        let options = BasicNackOptions { multiple, requeue };
        self.run(
            "nack",
            delivery_tag,
            self.channel.basic_nack(delivery_tag, options),
        )
        .await
    }

    /// Rejects one delivery without requeueing: the broker dead-letters it at once.
    pub async fn reject(&self, delivery_tag: u64) -> Result<(), BusError> {
        let options = BasicRejectOptions {
            // Dead-letter rather than redeliver.
            requeue: false,
        };
        self.run(
            "reject",
            delivery_tag,
            self.channel.basic_reject(delivery_tag, options),
        )
        .await
    }

    /// True while the channel is open (acknowledgements can still be sent).
    pub fn is_usable(&self) -> bool {
        self.channel.status().connected()
    }

    async fn run(
        &self,
        operation: &'static str,
        delivery_tag: u64,
        acknowledgement: impl Future<Output = Result<(), lapin::Error>>,
    ) -> Result<(), BusError> {
        if delivery_tag == 0 {
            return Err(BusError::InvalidDeliveryTag);
        }
        bounded_or("acknowledging", self.timeout, acknowledgement, |source| {
            BusError::Acknowledge {
                operation,
                delivery_tag,
                source,
            }
        })
        .await
    }
}

impl fmt::Debug for Acker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        debug_fields!(f, self, "Acker" {
            channel = self.channel.id(),
            usable = self.is_usable(),
        })
    }
}
