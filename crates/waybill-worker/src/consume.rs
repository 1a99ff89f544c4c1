//! The consumer loop. Each consumer (its own connection and channel) decodes what the broker
//! pushes and hands every message to a *lane* chosen by the message's shipment key. Each lane
//! gathers a batch (up to `batch_size` messages or `batch_linger_ms`), applies it in one
//! transaction, and then the batch's messages are acknowledged on their channels — with one
//! `multiple` ack per channel, up to the newest delivery before which everything is done.
//!
//! Why lanes: a shipment's scans arrive close together, so two batches taken from the queue at
//! the same time nearly always share shipments, and two transactions that share a shipment
//! cannot run at once (the second waits for the first's advisory lock until it commits). When
//! each consumer batched whatever it received, the consumers merely took turns at the database.
//! Routing by shipment key gives every lane its own shipments: `consumers` lanes write in
//! parallel. (A message about several shipments goes to the lane of its first one; the locks
//! keep that correct, it merely may wait.)
//!
//! **Acknowledgements.** A delivery is acknowledged only after the transaction that applied it
//! committed (or after it was dead-lettered). Lanes finish out of delivery order, so each
//! channel keeps its outstanding delivery tags in order and sends `ack(multiple)` only up to the
//! oldest one still in work; sends are serialised, so a smaller `multiple` ack never follows a
//! larger one. A lost channel's messages still waiting in a lane are skipped (the broker
//! redelivers them); on shutdown the lanes finish their current batch before the consumers
//! close their connections, so what committed is acknowledged.

use std::collections::VecDeque;
use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;
use waybill_bus::envelope::InboundEnvelope;
use waybill_bus::{Acker, BusConnection, BusError, Consumer, Delivery};
use waybill_config::ExposeSecret;
use waybill_telemetry::trace;

use crate::Worker;
use crate::batch::{BatchOutcome, rejected_of, to_store_batch};

/// One decoded message waiting to be applied.
struct Pending {
    tag: u64,
    delivery_count: i64,
    envelope: InboundEnvelope,
    /// The delivery as received: dead-lettered as-is, with its origin, if it cannot be applied.
    delivery: Delivery,
    /// The channel it came from, which acknowledges it.
    channel: Arc<ChannelAcks>,
}

/// Starts `worker.consumers` lanes and as many consumers on `tracker`.
pub fn spawn(worker: &Worker, shutdown: &CancellationToken, tracker: &TaskTracker) {
    let count = worker.inner.settings.worker.consumers.max(1);
    let lane_tasks = TaskTracker::new();
    let mut inboxes = Vec::with_capacity(count);
    for _ in 0..count {
        let (sender, inbox) = mpsc::unbounded_channel();
        inboxes.push(sender);
        lane_tasks.spawn(run_lane(worker.clone(), inbox, shutdown.clone()));
    }
    lane_tasks.close();
    let lanes = Arc::new(Lanes {
        inboxes,
        tasks: lane_tasks.clone(),
    });
    for index in 0..count {
        tracker.spawn(run_consumer(
            worker.clone(),
            index,
            shutdown.clone(),
            lanes.clone(),
        ));
    }
    tracker.spawn(async move { lane_tasks.wait().await });
}

/// The lanes' inboxes.
struct Lanes {
    inboxes: Vec<mpsc::UnboundedSender<Pending>>,
    tasks: TaskTracker,
}

impl Lanes {
    /// Hands a message to the lane of its (first) shipment. False if that lane stopped.
    fn route(&self, message: Pending) -> bool {
        let lane = lane_of(&message.envelope, self.inboxes.len());
        self.inboxes[lane].send(message).is_ok()
    }
}

/// The lane of a message: a hash of its first shipment key (the same in every consumer).
fn lane_of(envelope: &InboundEnvelope, lanes: usize) -> usize {
    if lanes <= 1 {
        return 0;
    }
    let key = match envelope {
        InboundEnvelope::WebhookV1(webhook) => webhook.events.first().map(|event| {
            (
                webhook.tenant.as_str(),
                event.carrier.as_str(),
                event.tracking_number.as_str(),
            )
        }),
        InboundEnvelope::RegisterV1(registration) => Some((
            registration.tenant.as_str(),
            registration.carrier.as_str(),
            registration.tracking_number.as_str(),
        )),
    };
    let mut hasher = std::hash::DefaultHasher::new();
    key.hash(&mut hasher);
    (hasher.finish() % lanes as u64) as usize
}

/// Where a delivery of a channel stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Done {
    /// Still in work.
    No,
    /// Done; to be acknowledged.
    Ack,
    /// Done and already settled on its own (nacked).
    Settled,
}

/// The acknowledgements of one consumer's channel.
struct ChannelAcks {
    acker: Acker,
    /// Deliveries not yet acknowledged, in delivery-tag order.
    outstanding: std::sync::Mutex<VecDeque<(u64, Done)>>,
    /// Held while computing and sending an ack, so acks leave in tag order.
    sending: tokio::sync::Mutex<()>,
    /// Cancelled when a delivery of this channel can be neither acknowledged nor settled: the
    /// consumer then closes the channel, so the broker redelivers everything outstanding on it
    /// instead of it waiting forever.
    broken: CancellationToken,
}

impl ChannelAcks {
    fn new(acker: Acker) -> ChannelAcks {
        ChannelAcks {
            acker,
            outstanding: std::sync::Mutex::new(VecDeque::new()),
            sending: tokio::sync::Mutex::new(()),
            broken: CancellationToken::new(),
        }
    }

    /// Records a delivery (in the order the channel delivers them).
    fn received(&self, tag: u64) {
        self.outstanding
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .push_back((tag, Done::No));
    }

    /// Marks deliveries done and acknowledges, with one `multiple` ack, every delivery up to the
    /// oldest one still in work.
    async fn finish(&self, done: impl IntoIterator<Item = (u64, Done)>) -> Result<(), BusError> {
        let _sending = self.sending.lock().await;
        let up_to = {
            let mut outstanding = self
                .outstanding
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            for (tag, state) in done {
                if let Ok(at) = outstanding.binary_search_by_key(&tag, |(t, _)| *t) {
                    outstanding[at].1 = state;
                }
            }
            let mut up_to = None;
            while let Some(&(tag, state)) = outstanding.front() {
                match state {
                    Done::No => break,
                    Done::Ack => up_to = Some(tag),
                    Done::Settled => {}
                }
                outstanding.pop_front();
            }
            up_to
        };
        let Some(tag) = up_to else { return Ok(()) };
        let acked = self.acker.ack_multiple(tag).await;
        if acked.is_err() {
            self.broken.cancel();
        }
        acked
    }
}

/// Delivery tags grouped by the channel that delivered them.
type ByChannel<'a> = Vec<(&'a Arc<ChannelAcks>, Vec<(u64, Done)>)>;

/// Marks every message of a batch done (`state`) on its channel.
async fn finish_all(messages: &[Pending], state: Done) {
    let mut by_channel: ByChannel<'_> = Vec::new();
    for message in messages {
        match by_channel
            .iter_mut()
            .find(|(channel, _)| Arc::ptr_eq(channel, &message.channel))
        {
            Some((_, tags)) => tags.push((message.tag, state)),
            None => by_channel.push((&message.channel, vec![(message.tag, state)])),
        }
    }
    for (channel, tags) in by_channel {
        if let Err(error) = channel.finish(tags).await {
            // The channel is gone: the broker redelivers, the merge is idempotent.
            tracing::debug!(error = %error, "cannot acknowledge; the messages will be redelivered");
        }
    }
}

/// Runs one consumer until shutdown, reconnecting with backoff whenever the broker goes away.
/// Unacknowledged messages of a lost connection are redelivered by the broker and merged
/// idempotently.
async fn run_consumer(
    worker: Worker,
    index: usize,
    shutdown: CancellationToken,
    lanes: Arc<Lanes>,
) {
    let mut backoff = Duration::from_millis(200);
    while !shutdown.is_cancelled() {
        match connect(&worker, index).await {
            Ok((connection, consumer)) => {
                backoff = Duration::from_millis(200);
                worker.inner.consumers_up.fetch_add(1, Ordering::Relaxed);
                consume(&worker, consumer, &shutdown, &lanes).await;
                worker.inner.consumers_up.fetch_sub(1, Ordering::Relaxed);
                if shutdown.is_cancelled() {
                    // Let the lanes commit and acknowledge their current batches first.
                    lanes.tasks.wait().await;
                }
                let _ = connection.close().await;
            }
            Err(error) => {
                tracing::warn!(consumer = index, error = %error, "cannot consume; retrying");
            }
        }
        tokio::select! {
            () = shutdown.cancelled() => break,
            () = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(Duration::from_secs(10));
    }
}

async fn connect(worker: &Worker, index: usize) -> Result<(BusConnection, Consumer), BusError> {
    let settings = &worker.inner.settings;
    let connection = BusConnection::connect(
        settings.bus.url.expose_secret(),
        &format!("waybill-worker-{index}"),
    )
    .await?;
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

/// Decodes and routes deliveries until the connection is lost or shutdown is requested.
async fn consume(
    worker: &Worker,
    mut consumer: Consumer,
    shutdown: &CancellationToken,
    lanes: &Lanes,
) {
    let channel = Arc::new(ChannelAcks::new(consumer.acker()));
    loop {
        let next = tokio::select! {
            () = shutdown.cancelled() => return,
            () = channel.broken.cancelled() => return,
            next = consumer.next() => next,
        };
        // `Err`: the connection is lost; what we hold is unacked and will be redelivered.
        let Some(Ok(delivery)) = next else { return };
        channel.received(delivery.delivery_tag);
        match InboundEnvelope::decode(&delivery.body) {
            Ok(envelope) => {
                let routed = lanes.route(Pending {
                    tag: delivery.delivery_tag,
                    delivery_count: delivery.delivery_count.unwrap_or(0),
                    envelope,
                    delivery,
                    channel: channel.clone(),
                });
                if !routed {
                    // The lane stopped (shutdown): leave the rest to the broker.
                    return;
                }
            }
            Err(error) => {
                // Poison: it will never decode. Keep it, with the reason, in the dead letters.
                let reason = format!("undecodable envelope: {error}");
                if !dead_letter(worker, &delivery, &reason).await {
                    return;
                }
                if channel
                    .finish([(delivery.delivery_tag, Done::Ack)])
                    .await
                    .is_err()
                {
                    return;
                }
            }
        }
    }
}

/// Gathers batches from a lane's inbox and applies them, until shutdown.
async fn run_lane(
    worker: Worker,
    mut inbox: mpsc::UnboundedReceiver<Pending>,
    shutdown: CancellationToken,
) {
    let settings = &worker.inner.settings.worker;
    let linger = Duration::from_millis(settings.batch_linger_ms);
    let batch_size = settings.batch_size.max(1);
    loop {
        let first = tokio::select! {
            biased;
            () = shutdown.cancelled() => return,
            next = inbox.recv() => next,
        };
        let Some(first) = first else { return };
        let mut batch = vec![first];
        let deadline = Instant::now() + linger;
        while batch.len() < batch_size {
            match inbox.try_recv() {
                Ok(message) => {
                    batch.push(message);
                    continue;
                }
                Err(mpsc::error::TryRecvError::Disconnected) => break,
                Err(mpsc::error::TryRecvError::Empty) => {}
            }
            let remaining = deadline.saturating_duration_since(Instant::now());
            if remaining.is_zero() {
                break;
            }
            match tokio::time::timeout(remaining, inbox.recv()).await {
                Ok(Some(message)) => batch.push(message),
                Ok(None) | Err(_) => break,
            }
        }
        // Messages of a channel that is gone are redelivered on another one: skip them here.
        batch.retain(|message| message.channel.acker.is_usable());
        if batch.is_empty() {
            continue;
        }
        if !process(&worker, batch, &shutdown).await {
            return;
        }
    }
}

/// Applies and acknowledges one batch. Returns false when the lane should stop (shutdown during
/// a database outage: the broker redelivers what was not acknowledged).
async fn process(worker: &Worker, pending: Vec<Pending>, shutdown: &CancellationToken) -> bool {
    metrics::histogram!("waybill_worker_batch_size").record(pending.len() as f64);
    let mut batch = to_store_batch(pending.iter().map(|p| &p.envelope));
    let rejected = Arc::new(rejected_of(pending.iter().map(|p| &p.envelope)));
    // The batch has a trace of its own that links to each message's publish span; each traced
    // message also gets a `waybill.merge` span in its own trace, ended when the batch commits.
    let batch_span = tracing::info_span!(
        "waybill.merge_batch",
        messaging.batch.message_count = pending.len()
    );
    // A change's topic publish and HTTP deliveries continue its message's trace from the merge
    // span: the batch's items (one per webhook envelope, in order) carry that span's context.
    let mut merge_spans = Vec::new();
    let mut items = batch.items.iter_mut();
    for envelope in pending.iter().map(|p| &p.envelope) {
        let item = match envelope {
            InboundEnvelope::WebhookV1(_) => items.next(),
            InboundEnvelope::RegisterV1(_) => None,
        };
        if let Some(parent) = envelope.traceparent() {
            trace::add_link(&batch_span, parent);
            let span = tracing::info_span!(parent: None, "waybill.merge");
            trace::set_parent(&span, parent);
            if let (Some(item), Some(merge)) = (item, trace::traceparent_of(&span)) {
                item.traceparent = Some(merge);
            }
            merge_spans.push(span);
        }
    }
    let batch = Arc::new(batch);
    let batcher = worker.batcher();
    let mut backoff = Duration::from_millis(100);
    loop {
        let started = Instant::now();
        match batcher
            .apply_with_rejected(batch.clone(), rejected.clone())
            .instrument(batch_span.clone())
            .await
        {
            BatchOutcome::Applied(report) => {
                record(&report, started);
                record_age(pending.iter().map(|p| &p.envelope));
                drop(merge_spans);
                finish_all(&pending, Done::Ack).await;
                return true;
            }
            BatchOutcome::Transient(error) => {
                metrics::counter!("waybill_worker_batch_retries_total").increment(1);
                tracing::warn!(error = %error, retry_in_ms = backoff.as_millis() as u64, "database unavailable; batch kept unacknowledged");
                tokio::select! {
                    () = shutdown.cancelled() => return false,
                    () = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
            BatchOutcome::Failed(reason) => {
                tracing::warn!(reason = %reason, messages = pending.len(), "batch failed; applying its messages one by one");
                one_by_one(worker, &pending).await;
                return true;
            }
        }
    }
}

/// Applies each message alone; a message that still fails is requeued until the delivery limit
/// and then dead-lettered with its reason.
async fn one_by_one(worker: &Worker, pending: &[Pending]) {
    let batcher = worker.batcher();
    let limit = i64::from(worker.inner.settings.bus.delivery_limit);
    for message in pending {
        let started = Instant::now();
        let single = std::slice::from_ref(&message.envelope);
        let state = match batcher.apply(single).await {
            BatchOutcome::Applied(report) => {
                record(&report, started);
                Done::Ack
            }
            BatchOutcome::Failed(reason) if message.delivery_count + 1 >= limit => {
                if !dead_letter(worker, &message.delivery, &reason).await {
                    // Neither applied nor dead-lettered: the channel must give it back.
                    message.channel.broken.cancel();
                    continue;
                }
                Done::Ack
            }
            BatchOutcome::Transient(_) | BatchOutcome::Failed(_) => {
                if message.channel.acker.nack(message.tag, true).await.is_err() {
                    message.channel.broken.cancel();
                    continue;
                }
                Done::Settled
            }
        };
        finish_all(std::slice::from_ref(message), state).await;
    }
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
fn record_age<'a>(envelopes: impl Iterator<Item = &'a InboundEnvelope>) {
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
        metrics::counter!("waybill_merge_events_total", "outcome" => outcome).increment(count);
    }
}
