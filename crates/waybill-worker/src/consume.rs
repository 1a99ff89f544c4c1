//! The consumer loop: gather a batch (up to `batch_size` messages or `batch_linger_ms`), apply it
//! in one transaction, acknowledge it with one `multiple` ack.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;
use tracing::Instrument;
use waybill_bus::envelope::InboundEnvelope;
use waybill_bus::{Acker, BusConnection, Consumer, Delivery};
use waybill_telemetry::trace;

use crate::Worker;
use crate::batch::BatchOutcome;

/// One decoded message waiting to be applied.
struct Pending {
    tag: u64,
    delivery_count: i64,
    envelope: InboundEnvelope,
    /// The delivery as received: dead-lettered as-is, with its origin, if it cannot be applied.
    delivery: Delivery,
}

/// Runs one consumer until shutdown, reconnecting with backoff whenever the broker goes away.
/// Unacknowledged messages of a lost connection are redelivered by the broker and merged
/// idempotently.
pub async fn run_consumer(worker: Worker, index: usize, shutdown: CancellationToken) {
    let mut backoff = Duration::from_millis(200);
    while !shutdown.is_cancelled() {
        match connect(&worker, index).await {
            Ok((connection, consumer)) => {
                backoff = Duration::from_millis(200);
                worker.inner.consumers_up.fetch_add(1, Ordering::Relaxed);
                consume(&worker, consumer, &shutdown).await;
                worker.inner.consumers_up.fetch_sub(1, Ordering::Relaxed);
                let _ = connection.close().await;
            }
            Err(error) => {
                tracing::warn!(consumer = index, error = %error, "cannot consume; retrying");
            }
        }
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(Duration::from_secs(10));
    }
}

async fn connect(
    worker: &Worker,
    index: usize,
) -> Result<(BusConnection, Consumer), waybill_bus::BusError> {
    let settings = &worker.inner.settings;
    let connection =
        BusConnection::connect(&settings.bus.url, &format!("waybill-worker-{index}")).await?;
    worker.inner.topology.declare_or_reuse(&connection).await?;
    let consumer = Consumer::start(
        &connection,
        &worker.inner.topology.webhooks_queue(),
        settings.worker.prefetch,
        &format!("waybill-worker-{index}"),
    )
    .await?;
    Ok((connection, consumer))
}

/// Consumes until the connection is lost or shutdown is requested.
async fn consume(worker: &Worker, mut consumer: Consumer, shutdown: &CancellationToken) {
    let settings = &worker.inner.settings.worker;
    let linger = Duration::from_millis(settings.batch_linger_ms);
    let acker = consumer.acker();
    loop {
        let first = tokio::select! {
            _ = shutdown.cancelled() => return,
            next = consumer.next() => next,
        };
        let Some(Ok(first)) = first else { return };
        let mut deliveries = vec![first];
        let deadline = Instant::now() + linger;
        while deliveries.len() < settings.batch_size {
            let remaining = deadline.saturating_duration_since(Instant::now());
            if remaining.is_zero() {
                break;
            }
            match tokio::time::timeout(remaining, consumer.next()).await {
                Ok(Some(Ok(delivery))) => deliveries.push(delivery),
                Ok(_) => {
                    // Connection lost: what we hold is unacked and will be redelivered.
                    return;
                }
                Err(_linger_over) => break,
            }
        }
        if !process(worker, &acker, deliveries, shutdown).await {
            return;
        }
    }
}

/// Decodes, applies and acknowledges one batch. Returns false when the consumer should stop
/// (shutdown during a database outage: the broker redelivers what was not acknowledged).
async fn process(
    worker: &Worker,
    acker: &Acker,
    deliveries: Vec<Delivery>,
    shutdown: &CancellationToken,
) -> bool {
    let mut pending = Vec::with_capacity(deliveries.len());
    for delivery in deliveries {
        match InboundEnvelope::decode(&delivery.body) {
            Ok(envelope) => pending.push(Pending {
                tag: delivery.delivery_tag,
                delivery_count: delivery.delivery_count.unwrap_or(0),
                envelope,
                delivery,
            }),
            Err(error) => {
                // Poison: it will never decode. Keep it, with the reason, in the dead letters.
                let reason = format!("undecodable envelope: {error}");
                if !dead_letter(worker, &delivery, &reason).await {
                    return false;
                }
                if acker.ack(delivery.delivery_tag).await.is_err() {
                    return false;
                }
            }
        }
    }
    // Acknowledged with one `multiple` ack after the commit; poison was acknowledged alone above.
    let Some(last_tag) = pending.last().map(|message| message.tag) else {
        return true;
    };
    metrics::histogram!("waybill_worker_batch_size").record(pending.len() as f64);
    let envelopes: Vec<InboundEnvelope> = pending.iter().map(|p| p.envelope.clone()).collect();
    // The batch has a trace of its own that links to each message's publish span; each traced
    // message also gets a `waybill.merge` span in its own trace, ended when the batch commits.
    let batch_span = tracing::info_span!(
        "waybill.merge_batch",
        messaging.batch.message_count = pending.len()
    );
    let mut merge_spans = Vec::new();
    for envelope in &envelopes {
        if let Some(parent) = envelope.traceparent() {
            trace::add_link(&batch_span, parent);
            let span = tracing::info_span!(parent: None, "waybill.merge");
            trace::set_parent(&span, parent);
            merge_spans.push(span);
        }
    }
    let batcher = worker.batcher();
    let mut backoff = Duration::from_millis(100);
    loop {
        let started = Instant::now();
        match batcher
            .apply(&envelopes)
            .instrument(batch_span.clone())
            .await
        {
            BatchOutcome::Applied(report) => {
                record(&report, started);
                record_age(&envelopes);
                drop(merge_spans);
                return acker.ack_multiple(last_tag).await.is_ok();
            }
            BatchOutcome::Transient(error) => {
                metrics::counter!("waybill_worker_batch_retries_total").increment(1);
                tracing::warn!(error = %error, retry_in_ms = backoff.as_millis() as u64, "database unavailable; batch kept unacknowledged");
                tokio::select! {
                    _ = shutdown.cancelled() => return false,
                    _ = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
            BatchOutcome::Failed(reason) => {
                tracing::warn!(reason = %reason, messages = pending.len(), "batch failed; applying its messages one by one");
                return one_by_one(worker, acker, &pending).await;
            }
        }
    }
}

/// Applies each message alone; a message that still fails is requeued until the delivery limit
/// and then dead-lettered with its reason.
async fn one_by_one(worker: &Worker, acker: &Acker, pending: &[Pending]) -> bool {
    let batcher = worker.batcher();
    let limit = i64::from(worker.inner.settings.bus.delivery_limit);
    for message in pending {
        let started = Instant::now();
        let single = std::slice::from_ref(&message.envelope);
        let acked = match batcher.apply(single).await {
            BatchOutcome::Applied(report) => {
                record(&report, started);
                acker.ack(message.tag).await
            }
            BatchOutcome::Transient(_) => acker.nack(message.tag, true).await,
            BatchOutcome::Failed(reason) if message.delivery_count + 1 >= limit => {
                if !dead_letter(worker, &message.delivery, &reason).await {
                    return false;
                }
                acker.ack(message.tag).await
            }
            BatchOutcome::Failed(_) => acker.nack(message.tag, true).await,
        };
        if acked.is_err() {
            return false;
        }
    }
    true
}

/// Publishes `delivery` to the dead-letter queue with `reason` and its origin (exchange, routing
/// key, queue, message id), so that `waybill deadletters replay` can send it back the normal way.
async fn dead_letter(worker: &Worker, delivery: &Delivery, reason: &str) -> bool {
    let topology = &worker.inner.topology;
    let published = waybill_bus::dead::publish_dead(
        &worker.inner.publisher,
        topology,
        &topology.webhooks_queue(),
        delivery,
        reason,
    )
    .await;
    match published {
        Ok(()) => {
            metrics::counter!("waybill_dead_lettered_total", "queue" => "webhooks").increment(1);
            tracing::warn!(reason = %reason, "message dead-lettered");
            true
        }
        Err(error) => {
            tracing::warn!(error = %error, "cannot dead-letter; the message stays unacknowledged");
            false
        }
    }
}

/// Queue lag: from the ingress receiving a message to its merge committing.
fn record_age(envelopes: &[InboundEnvelope]) {
    let now = chrono::Utc::now();
    for envelope in envelopes {
        let received_at = match envelope {
            InboundEnvelope::WebhookV1(webhook) => webhook.received_at,
            InboundEnvelope::RegisterV1(registration) => registration.received_at,
        };
        let age = (now - received_at).num_microseconds().unwrap_or(0).max(0) as f64 / 1e6;
        metrics::histogram!("waybill_message_age_seconds").record(age);
    }
}

fn record(report: &waybill_store::BatchReport, started: Instant) {
    metrics::histogram!("waybill_worker_batch_seconds").record(started.elapsed().as_secs_f64());
    for (outcome, count) in [
        ("new_current", report.new_current),
        ("history_only", report.history_only),
        ("outdated", report.outdated),
        ("duplicate", report.duplicates),
        ("unmatched", report.unmatched),
    ] {
        metrics::counter!("waybill_merge_events_total", "outcome" => outcome)
            .increment(count as u64);
    }
}
