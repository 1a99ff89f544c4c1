//! The broker ceiling for `waybill bench`: plain lapin publishing with confirms, pipelined, to a
//! quorum queue like `waybill.webhooks` — no HTTP, no envelope building, no Waybill publisher.

use std::time::Instant;

use futures_util::stream::{FuturesUnordered, StreamExt};
use lapin::options::{
    BasicPublishOptions, ConfirmSelectOptions, QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Confirmation};

use crate::{BusConnection, BusError};

/// Publishes `count` persistent messages of `body_len` bytes to a fresh quorum queue named
/// `queue`, keeping up to `window` confirms outstanding on each of `channels` channels; returns
/// confirmed messages per second. The queue is deleted afterwards.
pub async fn raw_confirmed_publish(
    conn: &BusConnection,
    queue: &str,
    body_len: usize,
    count: usize,
    channels: usize,
    window: usize,
) -> Result<f64, BusError> {
    let setup = conn.open_channel().await?;
    let mut arguments = FieldTable::default();
    // The same queue type as the inbound queue.
    arguments.insert(
        "x-queue-type".into(),
        AMQPValue::LongString(lapin::types::LongString::from("quorum".as_bytes())),
    );
    let declare = QueueDeclareOptions {
        // Must be false for quorum queues.
        passive: false,
        // Quorum queues are always durable.
        durable: true,
        // Quorum queues cannot be exclusive.
        exclusive: false,
        // Deleted explicitly below.
        auto_delete: false,
        // Wait for declare-ok.
        nowait: false,
    };
    setup
        .queue_declare(queue.into(), declare, arguments)
        .await
        .map_err(|source| BusError::Declare {
            entity: format!("queue {queue}"),
            source: source.into(),
        })?;

    let started = Instant::now();
    let per_channel = count.div_ceil(channels.max(1));
    let mut tasks = Vec::new();
    for _ in 0..channels.max(1) {
        let channel = conn.open_channel().await?;
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await
            .map_err(|source| BusError::OpenChannel {
                source: source.into(),
            })?;
        let queue = queue.to_owned();
        let body = vec![b'x'; body_len];
        tasks.push(tokio::spawn(async move {
            let mut pending = FuturesUnordered::new();
            let mut confirmed = 0usize;
            for _ in 0..per_channel {
                while pending.len() >= window.max(1) {
                    if let Some(Ok(Confirmation::Ack(_))) = pending.next().await {
                        confirmed += 1;
                    }
                }
                let options = BasicPublishOptions {
                    // As the ingress publishes: unroutable comes back.
                    mandatory: true,
                    // Not supported by RabbitMQ.
                    immediate: false,
                };
                let properties = BasicProperties::default().with_delivery_mode(2);
                match channel
                    .basic_publish("".into(), queue.as_str().into(), options, &body, properties)
                    .await
                {
                    Ok(confirm) => pending.push(confirm),
                    Err(_) => break,
                }
            }
            while let Some(outcome) = pending.next().await {
                if let Ok(Confirmation::Ack(_)) = outcome {
                    confirmed += 1;
                }
            }
            let _ = channel.close(200, "done".into()).await;
            confirmed
        }));
    }
    let mut confirmed = 0;
    for task in tasks {
        confirmed += task.await.unwrap_or(0);
    }
    let rate = confirmed as f64 / started.elapsed().as_secs_f64().max(1e-6);
    let _ = setup
        .queue_delete(queue.into(), QueueDeleteOptions::default())
        .await;
    let _ = setup.close(200, "done".into()).await;
    Ok(rate)
}
