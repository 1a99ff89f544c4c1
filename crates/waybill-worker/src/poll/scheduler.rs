//! The poll scheduler: each tick adopts new shipments, claims due slots, decides each one and
//! publishes the polls. Safe with any number of replicas: the claim is the only coordination
//! (see `waybill_store::polling`).

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use rand::SeedableRng;
use rand::rngs::StdRng;
use tokio_util::sync::CancellationToken;
use tracing::Instrument as _;
use waybill_bus::BusConnection;
use waybill_bus::envelope::{PollEnvelope, PollJobV1};
use waybill_config::ExposeSecret;
use waybill_core::{Origin, RawStatus, Status, TimeProvenance, TrackingEventDraft};
use waybill_store::polling::{self, ClaimedShipment, PollState, SlotOutcome};
use waybill_store::{InboundBatch, InboundItem, StoreError};
use waybill_telemetry::trace;

use super::rules::{Decision, decide};
use super::{Clock, PollContext};
use crate::Worker;

/// The raw status code of the `Expired` events Waybill makes itself.
pub const EXPIRED_RAW_STATUS: &str = "waybill.expired";

/// How soon a slot whose job could not be published is due again.
const REPUBLISH_DELAY: chrono::Duration = chrono::Duration::seconds(10);

/// What one tick did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TickReport {
    /// New shipments given a first poll time.
    pub adopted: u64,
    /// New shipments whose source is not polled.
    pub adopted_off: u64,
    /// The most slots this tick could claim (per-source budgets, capped by the queue's room).
    pub budget: u64,
    /// Slots claimed.
    pub claimed: usize,
    /// Poll jobs published (confirmed).
    pub published: usize,
    /// Jobs that could not be published (their slots are due again shortly).
    pub publish_failures: usize,
    /// Slots skipped because a webhook arrived within the interval.
    pub after_webhook: usize,
    /// Shipments whose polling stopped (terminal past grace).
    pub stopped: usize,
    /// Shipments marked Expired.
    pub expired: usize,
    /// Shipments whose source is not polled any more.
    pub off: usize,
    /// Where the tick's time went.
    pub timings: TickTimings,
}

/// How long each step of a tick took (for benchmarks: where a claim's time goes).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TickTimings {
    /// Adopting new shipments.
    pub adopt: Duration,
    /// Reading the depth of `waybill.polls` for the budget.
    pub queue_depth: Duration,
    /// The claim statement (due scan, row locks, lease update, returned rows).
    pub claim: Duration,
    /// Deciding each claim and building its job.
    pub decide: Duration,
    /// Publishing the jobs and waiting for the broker's confirms.
    pub publish: Duration,
    /// Marking expired shipments and writing the other claims' outcomes.
    pub record: Duration,
}

impl TickTimings {
    /// Each step, named, in the order a tick takes them.
    pub fn steps(&self) -> [(&'static str, Duration); 6] {
        [
            ("adopt", self.adopt),
            ("queue depth", self.queue_depth),
            ("claim", self.claim),
            ("decide", self.decide),
            ("publish + confirms", self.publish),
            ("record", self.record),
        ]
    }
}

/// The scheduler of one worker process. Public so that tests and benchmarks can drive it tick
/// by tick with their own clock.
pub struct Scheduler {
    worker: Worker,
    context: Arc<PollContext>,
    queue: Option<BusConnection>,
    rng: StdRng,
    /// Slots the last tick claimed for the next one while it published its own.
    ahead: Option<Ahead>,
}

/// Slots claimed ahead (during a backlog, while the previous tick published), and what that
/// claim's look did: they are the next tick's.
struct Ahead {
    claims: Vec<ClaimedShipment>,
    report: TickReport,
}

impl Scheduler {
    /// A scheduler for `worker`'s configuration reading time from `clock` (tests move a
    /// [`super::ManualClock`]).
    pub fn new(worker: &Worker, clock: Arc<dyn Clock>) -> anyhow::Result<Scheduler> {
        let context = PollContext::new(&worker.inner.settings, clock)?;
        Ok(Scheduler::with_context(worker.clone(), Arc::new(context)))
    }

    pub(crate) fn with_context(worker: Worker, context: Arc<PollContext>) -> Scheduler {
        Scheduler {
            worker,
            context,
            queue: None,
            rng: StdRng::from_os_rng(),
            ahead: None,
        }
    }

    /// Switches polling off for shipments of sources no longer polled. Run once at start.
    pub async fn prepare(&self) -> Result<u64, StoreError> {
        let mut conn = self.worker.inner.store.acquire().await?;
        polling::stop_unpolled_sources(&mut conn, self.context.sources.ids()).await
    }

    /// One round: adopt, claim, decide, publish, record. During a backlog (the claim filled
    /// the budget) the next tick's slots are claimed while this tick's jobs are published, so
    /// Postgres and the broker work at the same time; the next tick starts with them. A tick
    /// that adopted or claimed something is a `waybill.poll_schedule` span; each poll it
    /// schedules starts a trace of its own (`waybill.poll_job`, open until the job's publish is
    /// confirmed), which the tick links to and the poll continues. An idle tick traces nothing.
    pub async fn tick(&mut self) -> Result<TickReport, StoreError> {
        let started = Instant::now();
        let now = self.context.clock.now();
        let pass = trace::Pass::open(tracing::info_span!(
            parent: None,
            "waybill.poll_schedule",
            waybill.poll.adopted = tracing::field::Empty,
            waybill.poll.claimed = tracing::field::Empty,
        ));
        let (claims, mut report) = match self.ahead.take() {
            Some(ahead) if !ahead.claims.is_empty() => (ahead.claims, ahead.report),
            earlier => {
                let mut report = TickReport::default();
                let budgets = trace::untraced(self.budgets(&mut report)).await;
                let claims = trace::untraced(self.look(now, &budgets, &mut report)).await?;
                // A look ahead that claimed nothing may still have adopted shipments.
                if let Some(earlier) = earlier {
                    report.adopted += earlier.report.adopted;
                    report.adopted_off += earlier.report.adopted_off;
                }
                (claims, report)
            }
        };
        if report.adopted + report.adopted_off == 0 && claims.is_empty() {
            return Ok(report);
        }
        let deciding = Instant::now();
        let decided = self.decide_all(claims, now, &mut report);
        report.timings.decide = deciding.elapsed();
        let span = pass.found(
            decided
                .jobs
                .iter()
                .filter_map(|job| job.traceparent.as_deref()),
        );
        span.record("waybill.poll.adopted", report.adopted);
        span.record("waybill.poll.claimed", report.claimed);
        let backlog = report.budget > 0 && report.claimed as u64 >= report.budget;
        if backlog {
            let mut next = TickReport::default();
            let budgets = trace::untraced(self.budgets(&mut next)).await;
            let (carried, ahead) = tokio::join!(
                self.carry_out(decided, now, &mut report).instrument(span),
                trace::untraced(self.look(now, &budgets, &mut next)),
            );
            match ahead {
                Ok(claims) => {
                    self.ahead = Some(Ahead {
                        claims,
                        report: next,
                    });
                }
                // Nothing was claimed: the next tick claims again.
                Err(error) => tracing::warn!(error = %error, "cannot claim the next due slots"),
            }
            carried?;
        } else {
            self.carry_out(decided, now, &mut report)
                .instrument(span)
                .await?;
        }
        if report.claimed > 0 {
            self.finish(&report, started);
        }
        Ok(report)
    }

    /// Gives back the slots claimed ahead for a tick that will not run (the scheduler stops):
    /// they are due again at once, for another scheduler.
    pub async fn release_ahead(&mut self) -> Result<usize, StoreError> {
        let Some(ahead) = self.ahead.take() else {
            return Ok(0);
        };
        if ahead.claims.is_empty() {
            return Ok(0);
        }
        let slots: Vec<(i64, DateTime<Utc>)> = ahead
            .claims
            .iter()
            .map(|claim| (claim.id, claim.slot))
            .collect();
        let mut conn = self.worker.inner.store.acquire().await?;
        polling::release_claims(&mut conn, &slots, self.context.clock.now()).await?;
        Ok(slots.len())
    }

    /// Adopts new shipments and claims the slots due within `budgets`.
    async fn look(
        &self,
        now: DateTime<Utc>,
        budgets: &[(waybill_core::SourceId, u32)],
        report: &mut TickReport,
    ) -> Result<Vec<ClaimedShipment>, StoreError> {
        let context = Arc::clone(&self.context);
        let settings = &context.settings;
        let store = self.worker.inner.store.clone();
        let step = Instant::now();
        let adopted = {
            let mut conn = store.acquire().await?;
            polling::adopt_new_shipments(
                &mut conn,
                now,
                context.sources.ids(),
                context.sources.defaults(),
                settings.first_poll_jitter_secs,
                settings.claim_batch,
            )
            .await?
        };
        report.adopted = adopted.scheduled;
        report.adopted_off = adopted.off;
        report.timings.adopt = step.elapsed();
        if report.budget == 0 {
            return Ok(Vec::new());
        }
        let step = Instant::now();
        let claims = {
            let mut conn = store.acquire().await?;
            polling::claim_due(&mut conn, now, settings.lease_secs, budgets).await?
        };
        report.timings.claim = step.elapsed();
        report.claimed = claims.len();
        Ok(claims)
    }

    /// Decides each claimed slot; every poll to make gets its job and its trace.
    fn decide_all(
        &mut self,
        claims: Vec<ClaimedShipment>,
        now: DateTime<Utc>,
        report: &mut TickReport,
    ) -> Decided {
        let context = Arc::clone(&self.context);
        let mut decided = Decided::default();
        for claim in claims {
            let intervals = context
                .sources
                .get(claim.source.as_str())
                .filter(|source| source.settings.tenant == claim.key.tenant)
                .map(|source| &source.intervals);
            let decision = decide(&claim, intervals, &context.rules, now, &mut self.rng);
            metrics::counter!("waybill_poll_decisions_total", "decision" => decision_label(&decision))
                .increment(1);
            match decision {
                Decision::Poll => {
                    let span = job_span(&claim);
                    decided
                        .jobs
                        .push(job_of(&claim, trace::traceparent_of(&span)));
                    decided.job_spans.push(span);
                    decided.polled.push(claim);
                }
                Decision::AfterWebhook { next_poll_at } => {
                    report.after_webhook += 1;
                    let outcome = outcome(&claim, PollState::Active, Some(next_poll_at));
                    decided.outcomes.push(outcome);
                }
                Decision::Stop => {
                    report.stopped += 1;
                    decided
                        .outcomes
                        .push(outcome(&claim, PollState::Done, None));
                }
                Decision::Off => {
                    report.off += 1;
                    decided.outcomes.push(outcome(&claim, PollState::Off, None));
                }
                Decision::Expire { at } => decided.expiries.push((claim, at)),
            }
        }
        decided
    }

    /// Marks the expired, publishes the jobs and records the other slots' outcomes.
    async fn carry_out(
        &self,
        mut decided: Decided,
        now: DateTime<Utc>,
        report: &mut TickReport,
    ) -> Result<(), StoreError> {
        let store = self.worker.inner.store.clone();
        let step = Instant::now();
        if !decided.expiries.is_empty() {
            let expired = self.expire(&decided.expiries, now).await;
            if expired {
                report.expired = decided.expiries.len();
                decided.outcomes.extend(
                    decided
                        .expiries
                        .iter()
                        .map(|(claim, _)| outcome(claim, PollState::Done, None)),
                );
            }
        }
        report.timings.record = step.elapsed();
        if !decided.jobs.is_empty() {
            let step = Instant::now();
            let failed = self.publish(&decided, report).await;
            report.timings.publish = step.elapsed();
            // The jobs are on the queue (or not): their spans end.
            decided.job_spans.clear();
            if !failed.is_empty() {
                let mut conn = store.acquire().await?;
                polling::release_claims(&mut conn, &failed, now + REPUBLISH_DELAY).await?;
            }
        }
        if !decided.outcomes.is_empty() {
            let step = Instant::now();
            let mut conn = store.acquire().await?;
            polling::record_outcomes(&mut conn, now, &decided.outcomes, true).await?;
            report.timings.record += step.elapsed();
        }
        Ok(())
    }

    /// Merges the System `Expired` events of `expiries`; false when that failed (the claims
    /// keep their lease and are decided again later).
    async fn expire(
        &self,
        expiries: &[(ClaimedShipment, DateTime<Utc>)],
        now: DateTime<Utc>,
    ) -> bool {
        // The changes are this tick's doing: they continue its trace.
        let traceparent = trace::current_traceparent();
        let items = expiries
            .iter()
            .map(|(claim, at)| expired_item(claim, *at, now, &self.context, traceparent.clone()))
            .collect();
        let batch = InboundBatch {
            items,
            registrations: Vec::new(),
        };
        match self.worker.inner.store.apply_batch(batch).await {
            Ok(_) => true,
            Err(error) => {
                tracing::warn!(error = %error, "cannot mark shipments expired; retried after the lease");
                false
            }
        }
    }

    /// Publishes the decided jobs with confirms; returns the slots whose job was not confirmed.
    async fn publish(
        &self,
        decided: &Decided,
        report: &mut TickReport,
    ) -> Vec<(i64, DateTime<Utc>)> {
        let topology = &self.worker.inner.topology;
        let messages = decided
            .jobs
            .iter()
            .map(|job| PollEnvelope::PollJobV1(job.clone()).to_message(topology))
            .collect();
        let results = self.worker.inner.publisher.publish_many(messages).await;
        let mut failed = Vec::new();
        for ((claim, span), result) in decided.polled.iter().zip(&decided.job_spans).zip(results) {
            match result {
                Ok(()) => report.published += 1,
                Err(_) => {
                    span.record("error.type", "not_confirmed");
                    failed.push((claim.id, claim.slot));
                }
            }
        }
        report.publish_failures = failed.len();
        if !failed.is_empty() {
            tracing::warn!(
                jobs = failed.len(),
                "poll jobs not confirmed by the broker; their slots are due again shortly"
            );
        }
        failed
    }

    /// Counts what a tick that claimed slots did.
    fn finish(&self, report: &TickReport, started: Instant) {
        metrics::counter!("waybill_poll_jobs_published_total").increment(report.published as u64);
        metrics::histogram!("waybill_poll_schedule_seconds")
            .record(started.elapsed().as_secs_f64());
    }

    /// Slots to claim per polled source this tick: about two ticks' worth of the source's rate
    /// (the consumers' token buckets do the exact limiting), all together at most
    /// `claim_batch` and the room left under `max_queued_jobs` in `waybill.polls` (read
    /// before the previous tick's jobs are confirmed when claiming ahead, so the queue may pass
    /// the cap by one tick's worth). Their sum is the report's `budget`.
    async fn budgets(&mut self, report: &mut TickReport) -> Vec<(waybill_core::SourceId, u32)> {
        let step = Instant::now();
        let queue_room = self.queue_room().await;
        report.timings.queue_depth = step.elapsed();
        let settings = &self.context.settings;
        let mut room = settings.claim_batch.min(queue_room);
        let tick_secs = Duration::from_millis(settings.tick_ms).as_secs_f64();
        let mut budgets = Vec::new();
        for source in self.context.sources.iter() {
            if room == 0 {
                break;
            }
            let wanted = (source.account.rate * tick_secs * 2.0).ceil().max(1.0);
            let budget = (wanted.min(f64::from(u32::MAX)) as u32).min(room);
            room -= budget;
            budgets.push((source.settings.id.clone(), budget));
        }
        report.budget = budgets.iter().map(|(_, n)| u64::from(*n)).sum();
        budgets
    }

    /// How many more jobs `waybill.polls` may take before the backlog cap. Without a broker
    /// answer, no cap (publishing fails on its own if the broker is gone).
    async fn queue_room(&mut self) -> u32 {
        let max = self.context.settings.max_queued_jobs;
        if self.queue.as_ref().is_none_or(|conn| !conn.is_open()) {
            self.queue = BusConnection::connect_with_timeout(
                self.worker.inner.settings.bus.url.expose_secret(),
                "waybill-poll-scheduler",
                Duration::from_secs(2),
            )
            .await
            .ok();
        }
        let Some(conn) = &self.queue else {
            return max;
        };
        match conn
            .queue_stats(&self.worker.inner.topology.polls_queue())
            .await
        {
            Ok(stats) => {
                metrics::gauge!("waybill_poll_queue_depth").set(f64::from(stats.messages));
                max.saturating_sub(stats.messages)
            }
            Err(error) => {
                tracing::debug!(error = %error, "cannot read the polls queue depth");
                self.queue = None;
                max
            }
        }
    }
}

/// Runs the scheduler until shutdown: a tick every `polling.tick_ms`, or at once again when the
/// last tick used its whole budget (a backlog drains at the budget's pace, not the tick's).
/// Public so that tests can run several schedulers exactly as worker replicas run them.
pub async fn run(mut scheduler: Scheduler, shutdown: CancellationToken) {
    let tick = Duration::from_millis(scheduler.context.settings.tick_ms);
    match scheduler.prepare().await {
        Ok(0) => {}
        Ok(switched) => {
            tracing::info!(
                shipments = switched,
                "polling switched off for sources no longer polled"
            );
        }
        Err(error) => tracing::warn!(error = %error, "cannot switch off unpolled sources"),
    }
    while !shutdown.is_cancelled() {
        let pause = match scheduler.tick().await {
            Ok(report) if report.budget > 0 && report.claimed as u64 >= report.budget => {
                Duration::ZERO
            }
            Ok(_) => tick,
            Err(error) => {
                tracing::warn!(error = %error, "poll scheduler tick failed; retrying");
                tick
            }
        };
        tokio::select! {
            () = shutdown.cancelled() => break,
            () = tokio::time::sleep(pause) => {}
        }
    }
    if let Err(error) = scheduler.release_ahead().await {
        tracing::warn!(error = %error, "cannot give back the slots claimed ahead; they are due again when their lease runs out");
    }
}

/// What one tick decided to do with its claims.
#[derive(Default)]
struct Decided {
    /// The claims to poll, with their jobs and the jobs' spans (open until the publish).
    polled: Vec<ClaimedShipment>,
    jobs: Vec<PollJobV1>,
    job_spans: Vec<tracing::Span>,
    /// The claims of shipments silent for too long, with the time of their `Expired` event.
    expiries: Vec<(ClaimedShipment, DateTime<Utc>)>,
    /// The other claims' outcomes.
    outcomes: Vec<SlotOutcome>,
}

/// The root span of one poll's trace: the scheduled job, until its publish is confirmed.
fn job_span(claim: &ClaimedShipment) -> tracing::Span {
    tracing::info_span!(
        parent: None,
        "waybill.poll_job",
        source = claim.source.as_str(),
        carrier = claim.key.carrier.as_str(),
        shipment.id = claim.id,
        waybill.poll.slot = %claim.slot,
        waybill.poll.attempt = claim.attempt,
        error.type = tracing::field::Empty,
    )
}

fn job_of(claim: &ClaimedShipment, traceparent: Option<String>) -> PollJobV1 {
    PollJobV1 {
        shipment_id: claim.id,
        tenant: claim.key.tenant.clone(),
        source: claim.source.clone(),
        carrier: claim.key.carrier.clone(),
        tracking_number: claim.key.tracking_number.clone(),
        slot: claim.slot,
        attempt: claim.attempt,
        traceparent,
    }
}

fn outcome(
    claim: &ClaimedShipment,
    state: PollState,
    next_poll_at: Option<DateTime<Utc>>,
) -> SlotOutcome {
    SlotOutcome {
        shipment_id: claim.id,
        slot: claim.slot,
        state,
        next_poll_at,
        poll_failures: claim.poll_failures,
        polled: false,
    }
}

/// The System `Expired` event of a shipment silent since `at - expire_after`: stamped at `at`,
/// so making it twice yields one event id.
fn expired_item(
    claim: &ClaimedShipment,
    at: DateTime<Utc>,
    now: DateTime<Utc>,
    context: &PollContext,
    traceparent: Option<String>,
) -> InboundItem {
    let days = context.settings.expire_after_days;
    let event = TrackingEventDraft {
        carrier: claim.key.carrier.clone(),
        tracking_number: claim.key.tracking_number.clone(),
        status: Status::Expired,
        raw_status: RawStatus {
            code: EXPIRED_RAW_STATUS.to_owned(),
            description: Some(format!("No scan for {days} days; tracking stopped")),
        },
        sub_status: None,
        occurred_at: at,
        time_provenance: TimeProvenance::ReceivedAt,
        location: None,
        message: Some(format!("No scan for {days} days")),
        origin: Origin::System,
        provider_event_id: None,
        order_number: None,
        courier: None,
    }
    .finish();
    InboundItem {
        tenant: claim.key.tenant.clone(),
        source: claim.source.clone(),
        require_registration: false,
        events: vec![event],
        received_at: now,
        traceparent,
    }
}

fn decision_label(decision: &Decision) -> &'static str {
    match decision {
        Decision::Poll => "poll",
        Decision::AfterWebhook { .. } => "after_webhook",
        Decision::Stop => "stop",
        Decision::Expire { .. } => "expire",
        Decision::Off => "off",
    }
}
