//! The poll consumer: one job from `waybill.polls` at a time per permit (`polling.concurrency`
//! in flight), each on its own task so a panic becomes a requeue, not a dead consumer. A job is
//! acknowledged once its outcome is written; the schedule lives in Postgres, so a retry is a new
//! time in the row, never a message held back in the queue.

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;
use waybill_bus::envelope::{PollEnvelope, PollJobV1};
use waybill_bus::{Acker, BusConnection, Consumer, Delivery};
use waybill_carriers::PollRequest;
use waybill_config::ExposeSecret;
use waybill_store::polling::{self, PollState, PollTarget, SlotOutcome};
use waybill_store::{InboundBatch, InboundItem, StoreError};
use waybill_telemetry::trace;

use super::client::CourierAnswer;
use super::rate_limit::Refusal;
use super::rules::{backoff, chrono_duration, next_after_success};
use super::sources::PolledSource;
use super::{PollContext, SHUTDOWN_GRACE};
use crate::Worker;

/// What to do with a job's message.
#[derive(Debug)]
enum Verdict {
    /// Done (its outcome is in the schedule, or it was stale).
    Ack,
    /// Poison or unmappable: to `waybill.dead` with the reason, then acknowledged.
    DeadLetter(String),
    /// Not started (the database was unreachable): back to the queue.
    Requeue,
}

/// Consumes `waybill.polls` until shutdown, reconnecting with backoff.
pub(crate) async fn run(worker: Worker, context: Arc<PollContext>, shutdown: CancellationToken) {
    let mut delay = Duration::from_millis(200);
    while !shutdown.is_cancelled() {
        match connect(&worker, &context).await {
            Ok((connection, consumer)) => {
                delay = Duration::from_millis(200);
                consume(&worker, &context, consumer, &shutdown).await;
                let _ = connection.close().await;
            }
            Err(error) => tracing::warn!(error = %error, "cannot consume poll jobs; retrying"),
        }
        tokio::select! {
            () = shutdown.cancelled() => break,
            () = tokio::time::sleep(delay) => {}
        }
        delay = (delay * 2).min(Duration::from_secs(10));
    }
}

async fn connect(
    worker: &Worker,
    context: &PollContext,
) -> Result<(BusConnection, Consumer), waybill_bus::BusError> {
    let connection = BusConnection::connect(
        worker.inner.settings.bus.url.expose_secret(),
        "waybill-worker-poller",
    )
    .await?;
    worker.inner.topology.declare_or_reuse(&connection).await?;
    let prefetch =
        u16::try_from(context.settings.concurrency.saturating_mul(2)).unwrap_or(u16::MAX);
    let consumer = Consumer::start(
        &connection,
        &worker.inner.topology.polls_queue(),
        prefetch,
        "waybill-worker-poller",
    )
    .await?;
    Ok((connection, consumer))
}

async fn consume(
    worker: &Worker,
    context: &Arc<PollContext>,
    mut consumer: Consumer,
    shutdown: &CancellationToken,
) {
    let permits = Arc::new(Semaphore::new(context.settings.concurrency));
    let tasks = TaskTracker::new();
    let acker = consumer.acker();
    loop {
        let next = tokio::select! {
            () = shutdown.cancelled() => break,
            next = consumer.next() => next,
        };
        let Some(Ok(delivery)) = next else { break };
        let permit = tokio::select! {
            () = shutdown.cancelled() => break,
            permit = Arc::clone(&permits).acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_closed) => break,
            },
        };
        tasks.spawn(handle(
            worker.clone(),
            Arc::clone(context),
            acker.clone(),
            delivery,
            permit,
        ));
    }
    tasks.close();
    if tokio::time::timeout(SHUTDOWN_GRACE, tasks.wait())
        .await
        .is_err()
    {
        tracing::warn!("poll jobs still running at shutdown; the broker redelivers them");
    }
    consumer.cancel().await;
}

/// Runs one job on its own task (a panic is a requeue) and acknowledges it.
async fn handle(
    worker: Worker,
    context: Arc<PollContext>,
    acker: Acker,
    delivery: Delivery,
    _permit: OwnedSemaphorePermit,
) {
    let tag = delivery.delivery_tag;
    let body = delivery.body.clone();
    let job = tokio::spawn(process(worker.clone(), context, body)).await;
    let acknowledged = match job {
        Ok(Verdict::Ack) => acker.ack(tag).await,
        Ok(Verdict::DeadLetter(reason)) => {
            let topology = &worker.inner.topology;
            match waybill_bus::dead::publish_dead(
                &worker.inner.publisher,
                topology,
                &topology.polls_queue(),
                &delivery,
                &reason,
            )
            .await
            {
                Ok(()) => {
                    metrics::counter!("waybill_dead_lettered_total", "queue" => "polls")
                        .increment(1);
                    tracing::warn!(reason = %reason, "poll job dead-lettered");
                    acker.ack(tag).await
                }
                Err(error) => {
                    tracing::warn!(error = %error, "cannot dead-letter a poll job; it is requeued");
                    acker.nack(tag, true).await
                }
            }
        }
        Ok(Verdict::Requeue) => acker.nack(tag, true).await,
        Err(join_error) => {
            tracing::error!(error = %join_error, "a poll job panicked; it is requeued");
            acker.nack(tag, true).await
        }
    };
    if let Err(error) = acknowledged {
        tracing::debug!(error = %error, "cannot acknowledge a poll job; the broker redelivers it");
    }
}

/// Decodes, starts, rate-limits, fetches, maps, merges and reschedules one job.
async fn process(worker: Worker, context: Arc<PollContext>, body: Vec<u8>) -> Verdict {
    let job = match PollEnvelope::decode(&body) {
        Ok(PollEnvelope::PollJobV1(job)) => job,
        Err(error) => return Verdict::DeadLetter(format!("undecodable poll job: {error}")),
    };
    // Each poll is a trace of its own (or continues the job's, when it carries one): the
    // request to the courier and the changes it causes belong to it.
    let span = tracing::info_span!(
        parent: None,
        "waybill.poll",
        source = job.source.as_str(),
        carrier = job.carrier.as_str(),
    );
    if let Some(parent) = &job.traceparent {
        trace::set_parent(&span, parent);
    }
    poll(worker, context, job).instrument(span).await
}

/// Polls for one decoded job (see [`process`]): starts the slot, takes room in the source's
/// account, asks the courier, and records what the answer means for the slot.
async fn poll(worker: Worker, context: Arc<PollContext>, job: PollJobV1) -> Verdict {
    let target = match start(&worker, &context, &job).await {
        Ok(target) => target,
        Err(verdict) => return verdict,
    };
    let slot = Slot {
        worker: &worker,
        context: &context,
        job: &job,
        target: &target,
    };
    let Some(source) = slot.source() else {
        slot.switch_off().await;
        return Verdict::Ack;
    };
    let mut rng = StdRng::from_rng(&mut rand::rng());

    let max_wait = Duration::from_millis(context.settings.max_rate_wait_ms);
    if let Err(refusal) = source.account.acquire(max_wait).await {
        slot.defer(refusal, &mut rng).await;
        return Verdict::Ack;
    }

    let request = match source.profile.poll().map(|spec| {
        spec.build_request(
            source.settings.poll_base_url.as_deref(),
            &target.key.tracking_number,
            &waybill_config::expose_map(&source.settings.credentials),
        )
    }) {
        Some(Ok(request)) => request,
        // Polled sources have a [poll] section (checked at start); kept total all the same.
        None => {
            slot.switch_off().await;
            return Verdict::Ack;
        }
        Some(Err(error)) => {
            slot.switch_off().await;
            return Verdict::DeadLetter(format!("cannot build the poll request: {error}"));
        }
    };
    let answer = fetch(&context, source, &request).await;
    let now = context.clock.now();
    slot.record_answer(source, answer, now, &mut rng).await
}

/// Starts the job's slot in the schedule: its target, or the verdict when the job is stale
/// (acknowledged) or the database cannot be reached (requeued).
async fn start(
    worker: &Worker,
    context: &PollContext,
    job: &PollJobV1,
) -> Result<PollTarget, Verdict> {
    let now = context.clock.now();
    let started = match worker.inner.store.acquire().await {
        Ok(mut conn) => {
            polling::begin_poll(&mut conn, job.shipment_id, job.slot, job.attempt, now).await
        }
        Err(error) => Err(error),
    };
    match started {
        Ok(Some(target)) => Ok(target),
        Ok(None) => {
            metrics::counter!("waybill_poll_jobs_skipped_total").increment(1);
            Err(Verdict::Ack)
        }
        Err(error) => {
            tracing::warn!(error = %error, "cannot start a poll; the job is requeued");
            tokio::time::sleep(Duration::from_secs(1)).await;
            Err(Verdict::Requeue)
        }
    }
}

/// Asks the courier, counting the request's duration and outcome per source.
async fn fetch(
    context: &PollContext,
    source: &PolledSource,
    request: &PollRequest,
) -> CourierAnswer {
    let started = Instant::now();
    let answer = context.client.fetch(request).await;
    let source_label = source.settings.id.as_str().to_owned();
    metrics::histogram!("waybill_poll_request_seconds", "source" => source_label.clone())
        .record(started.elapsed().as_secs_f64());
    metrics::counter!("waybill_polls_total", "source" => source_label, "outcome" => answer.label())
        .increment(1);
    answer
}

/// A started poll: the job, its slot's target, and what recording its outcome needs.
struct Slot<'a> {
    worker: &'a Worker,
    context: &'a PollContext,
    job: &'a PollJobV1,
    target: &'a PollTarget,
}

impl<'a> Slot<'a> {
    /// The slot's source, while it is configured and belongs to the shipment's tenant.
    fn source(&self) -> Option<&'a PolledSource> {
        self.target
            .source
            .as_ref()
            .and_then(|id| self.context.sources.get(id.as_str()))
            .filter(|source| source.settings.tenant == self.target.key.tenant)
    }

    /// Writes the slot's outcome (no events).
    async fn record(
        &self,
        state: PollState,
        next_poll_at: Option<DateTime<Utc>>,
        poll_failures: u32,
        polled: bool,
    ) {
        let outcome = slot_outcome(self.job, state, next_poll_at, poll_failures, polled);
        write(self.worker, self.context, outcome, None).await;
    }

    /// Stops polling the slot: its source is gone or cannot poll.
    async fn switch_off(&self) {
        self.record(PollState::Off, None, self.target.poll_failures, false)
            .await;
    }

    /// Not a failure: the account has no room now, so the slot moves to when it has,
    /// spread a little.
    async fn defer(&self, refusal: Refusal, rng: &mut StdRng) {
        let wait = match refusal {
            Refusal::Paused(wait) | Refusal::OverBudget(wait) => wait,
        };
        metrics::counter!("waybill_poll_deferred_total", "reason" => refusal_label(refusal))
            .increment(1);
        let spread = Duration::from_millis(rng.random_range(0..=1_000));
        let next = self.context.clock.now() + chrono_duration(wait + spread);
        self.record(
            PollState::Active,
            Some(next),
            self.target.poll_failures,
            false,
        )
        .await;
    }

    /// One more failure in a row: the next poll after the backoff for that many.
    async fn back_off(&self, now: DateTime<Utc>, rng: &mut StdRng) {
        let failures = self.target.poll_failures + 1;
        let next = now + chrono_duration(backoff(failures, &self.context.rules, rng));
        self.record(PollState::Active, Some(next), failures, true)
            .await;
    }

    /// Records what the courier's answer means for the slot.
    async fn record_answer(
        &self,
        source: &PolledSource,
        answer: CourierAnswer,
        now: DateTime<Utc>,
        rng: &mut StdRng,
    ) -> Verdict {
        match answer {
            CourierAnswer::Body(body) => self.record_body(source, &body, now, rng).await,
            CourierAnswer::NotFound => {
                healthy(source);
                succeed(self, source, Vec::new(), now).await;
                Verdict::Ack
            }
            CourierAnswer::RateLimited { retry_after } => {
                let wait = retry_after.unwrap_or(self.context.rules.default_retry_after);
                source.account.pause(wait);
                let next = now + chrono_duration(wait);
                self.record(
                    PollState::Active,
                    Some(next),
                    self.target.poll_failures,
                    true,
                )
                .await;
                Verdict::Ack
            }
            CourierAnswer::Unauthorized { status } => {
                self.unauthorized(source, status, now).await;
                Verdict::Ack
            }
            CourierAnswer::TooLarge => {
                self.back_off(now, rng).await;
                Verdict::DeadLetter(format!(
                    "the poll response of source `{}` is larger than polling.max_response_bytes",
                    source.settings.id
                ))
            }
            CourierAnswer::ServerError { .. }
            | CourierAnswer::ClientError { .. }
            | CourierAnswer::Timeout
            | CourierAnswer::Unreachable => {
                self.back_off(now, rng).await;
                Verdict::Ack
            }
        }
    }

    /// A courier's answer with a body: its events for this shipment are merged, or the slot
    /// backs off and the job is dead-lettered when the body cannot be mapped.
    async fn record_body(
        &self,
        source: &PolledSource,
        body: &[u8],
        now: DateTime<Utc>,
        rng: &mut StdRng,
    ) -> Verdict {
        let key = &self.target.key;
        match source
            .profile
            .map_poll_response(body, &key.tracking_number, now)
        {
            Ok(mapped) => {
                healthy(source);
                if !mapped.unmapped_statuses.is_empty() {
                    metrics::counter!("waybill_unmapped_status_total", "profile" => source.profile.name.clone())
                        .increment(mapped.unmapped_statuses.len() as u64);
                }
                let events: Vec<_> = mapped
                    .events
                    .into_iter()
                    .filter(|event| {
                        event.carrier == key.carrier && event.tracking_number == key.tracking_number
                    })
                    .collect();
                succeed(self, source, events, now).await;
                Verdict::Ack
            }
            Err(error) => {
                self.back_off(now, rng).await;
                Verdict::DeadLetter(format!(
                    "the poll response of source `{}` could not be mapped: {error}",
                    source.settings.id
                ))
            }
        }
    }

    /// The courier refused the source's credentials: the account pauses, and the slot counts
    /// a failure and waits out the pause.
    async fn unauthorized(&self, source: &PolledSource, status: u16, now: DateTime<Utc>) {
        let pause = self.context.rules.unauthorized_backoff;
        source.account.pause(pause);
        if source.account.mark_unhealthy() {
            metrics::gauge!("waybill_poll_source_unhealthy", "source" => source.settings.id.as_str().to_owned())
                .set(1.0);
            tracing::warn!(
                source = %source.settings.id,
                http.status = status,
                pause_secs = pause.as_secs(),
                "the courier refused the source's credentials; polling through this account is paused"
            );
        }
        let next = now + chrono_duration(pause);
        self.record(
            PollState::Active,
            Some(next),
            self.target.poll_failures + 1,
            true,
        )
        .await;
    }
}

/// A successful poll: merges `events` (if any) and writes the next regular slot, in one
/// transaction.
async fn succeed(
    slot: &Slot<'_>,
    source: &PolledSource,
    events: Vec<waybill_core::TrackingEvent>,
    now: DateTime<Utc>,
) {
    let Slot {
        worker,
        context,
        job,
        target,
    } = *slot;
    let events = storable_poll_events(events, &source.settings.id);
    // The status after the merge decides the interval: the newest event's status is a good
    // forecast (the merge may keep an older current event, e.g. after a terminal one).
    let newest = events
        .iter()
        .max_by_key(|event| event.key())
        .filter(|event| {
            target
                .current_event_at
                .is_none_or(|at| event.occurred_at >= at)
        })
        .map(|event| event.status);
    let status = newest.unwrap_or(target.status);
    let has_scan = target.current_event_at.is_some() || !events.is_empty();
    let next = next_after_success(
        &source.intervals,
        status,
        has_scan,
        &context.rules,
        now,
        &mut rand::rng(),
    );
    let outcome = slot_outcome(job, PollState::Active, Some(next), 0, true);
    if events.is_empty() {
        write(worker, context, outcome, None).await;
        return;
    }
    // As for a webhook: the merge is a span of the poll's trace, and the changes it writes
    // continue from it (their topic publish and deliveries).
    let merge = tracing::info_span!("waybill.merge", batch.events = events.len());
    let batch = InboundBatch {
        items: vec![InboundItem {
            tenant: target.key.tenant.clone(),
            source: source.settings.id.clone(),
            require_registration: false,
            events,
            received_at: now,
            traceparent: trace::traceparent_of(&merge),
        }],
        registrations: Vec::new(),
    };
    write(worker, context, outcome, Some(batch))
        .instrument(merge)
        .await;
}

/// Writes a slot's outcome, after merging `batch` in the same transaction when there is one. On
/// its own task (never dropped half-way), retried a few times; if the database stays away, the
/// slot comes back when its lease runs out.
async fn write(
    worker: &Worker,
    context: &PollContext,
    outcome: SlotOutcome,
    batch: Option<InboundBatch>,
) {
    let mut delay = Duration::from_millis(200);
    for attempt in 1..=4 {
        let store = worker.inner.store.clone();
        let (outcome, batch) = (outcome.clone(), batch.clone());
        let now = context.clock.now();
        let written = tokio::spawn(
            async move {
                let mut tx = store.begin().await?;
                if let Some(batch) = &batch {
                    waybill_store::apply_batch(&mut tx, batch).await?;
                }
                polling::record_outcomes(&mut tx, now, &[outcome], false).await?;
                tx.commit().await?;
                Ok::<_, StoreError>(())
            }
            .instrument(tracing::Span::current()),
        )
        .await;
        match written {
            Ok(Ok(())) => return,
            Ok(Err(error)) if error.is_transient() && attempt < 4 => {
                tracing::debug!(error = %error, "cannot record a poll; retrying");
            }
            Ok(Err(error)) => {
                tracing::warn!(error = %error, "cannot record a poll; the slot returns after its lease");
                return;
            }
            Err(join_error) => {
                tracing::error!(error = %join_error, "recording a poll panicked; the slot returns after its lease");
                return;
            }
        }
        tokio::time::sleep(delay).await;
        delay *= 2;
    }
}

fn healthy(source: &PolledSource) {
    if source.account.mark_healthy() {
        metrics::gauge!("waybill_poll_source_unhealthy", "source" => source.settings.id.as_str().to_owned())
            .set(0.0);
        tracing::info!(source = %source.settings.id, "the courier accepts the source's credentials again");
    }
}

fn slot_outcome(
    job: &PollJobV1,
    state: PollState,
    next_poll_at: Option<DateTime<Utc>>,
    poll_failures: u32,
    polled: bool,
) -> SlotOutcome {
    SlotOutcome {
        shipment_id: job.shipment_id,
        slot: job.slot,
        state,
        next_poll_at,
        poll_failures,
        polled,
    }
}

fn refusal_label(refusal: Refusal) -> &'static str {
    match refusal {
        Refusal::Paused(_) => "paused",
        Refusal::OverBudget(_) => "over_budget",
    }
}

/// A poll answer's events as they can be stored: U+0000 replaced, and an event PostgreSQL
/// cannot hold at all (a time before 4714 BC, an order number over the limit) left out with a
/// warning — it would fail the slot's merge on every poll.
fn storable_poll_events(
    events: Vec<waybill_core::TrackingEvent>,
    source: &waybill_core::SourceId,
) -> Vec<waybill_core::TrackingEvent> {
    let kept = events.into_iter().filter(|event| match event.check_storable() {
        Ok(()) => true,
        Err(error) => {
            tracing::warn!(source = %source, error = %error, "a polled event cannot be stored; left out");
            false
        }
    });
    crate::batch::with_nul_replaced(kept, "poll")
}
