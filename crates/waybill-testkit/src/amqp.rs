//! A queue bound to one of Waybill's exchanges, read with `basic.get`: a downstream consumer as
//! the tests see it.

use std::collections::BTreeMap;

use anyhow::Context;
use lapin::options::{BasicGetOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable};

/// An exclusive, auto-deleted queue bound to an exchange, read with `basic.get`: a downstream
/// consumer as the tests see it. Deleted by the broker when it is dropped or closed.
pub struct Tap {
    connection: lapin::Connection,
    channel: lapin::Channel,
    queue: String,
}

/// A message taken from a [`Tap`].
#[derive(Debug, Clone)]
pub struct TappedMessage {
    pub routing_key: String,
    /// The `message_id` property (empty when absent).
    pub message_id: String,
    pub persistent: bool,
    /// The string headers (`traceparent`, `x-waybill-tenant`, …).
    pub headers: BTreeMap<String, String>,
    pub body: Vec<u8>,
}

impl TappedMessage {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).expect("a JSON body")
    }
}

impl Tap {
    /// Declares `queue` (exclusive) on the broker at `amqp_url` and binds it to `exchange`
    /// with `binding`.
    pub async fn bind(
        amqp_url: &str,
        exchange: &str,
        queue: &str,
        binding: &str,
    ) -> anyhow::Result<Tap> {
        let connection =
            lapin::Connection::connect(amqp_url, lapin::ConnectionProperties::default())
                .await
                .context("connecting the tap")?;
        let channel = connection.create_channel().await?;
        channel
            .queue_declare(
                queue.into(),
                QueueDeclareOptions {
                    exclusive: true,
                    auto_delete: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await
            .context("declaring the tap queue")?;
        channel
            .queue_bind(
                queue.into(),
                exchange.into(),
                binding.into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await
            .context("binding the tap queue")?;
        Ok(Tap {
            connection,
            channel,
            queue: queue.to_owned(),
        })
    }

    /// Takes every message waiting (acknowledged).
    pub async fn drain(&self) -> anyhow::Result<Vec<TappedMessage>> {
        let mut messages = Vec::new();
        while let Some(got) = self
            .channel
            .basic_get(self.queue.as_str().into(), BasicGetOptions { no_ack: true })
            .await
            .context("basic.get from the tap")?
        {
            let delivery = got.delivery;
            let properties = &delivery.properties;
            let headers = properties
                .headers()
                .as_ref()
                .map(|table| {
                    table
                        .inner()
                        .iter()
                        .filter_map(|(name, value)| match value {
                            AMQPValue::LongString(text) => Some((
                                name.to_string(),
                                String::from_utf8_lossy(text.as_bytes()).into_owned(),
                            )),
                            _ => None,
                        })
                        .collect()
                })
                .unwrap_or_default();
            messages.push(TappedMessage {
                routing_key: delivery.routing_key.to_string(),
                message_id: properties
                    .message_id()
                    .as_ref()
                    .map(|id| id.to_string())
                    .unwrap_or_default(),
                persistent: *properties.delivery_mode() == Some(2),
                headers,
                body: delivery.data,
            });
        }
        Ok(messages)
    }

    /// Takes messages until at least `count` arrived (within `within`), then waits a little
    /// longer to catch any extra one, and returns them all.
    pub async fn collect(&self, count: usize, within: std::time::Duration) -> Vec<TappedMessage> {
        let mut messages = Vec::new();
        crate::eventually_or(within, async || {
            messages.extend(self.drain().await.expect("basic.get from the tap"));
            messages.len() >= count
        })
        .await;
        // Time must pass to see that nothing more arrives.
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        messages.extend(self.drain().await.expect("basic.get from the tap"));
        messages
    }

    pub async fn close(self) {
        let _ = self.connection.close(200, "bye".into()).await;
    }
}
