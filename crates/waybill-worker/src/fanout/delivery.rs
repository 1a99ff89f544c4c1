//! The delivery dispatcher: claims due deliveries from Postgres and POSTs them, signed, to their
//! subscriptions, with bounded concurrency; records each outcome back in Postgres.
//!
//! * **Bounded.** At most `fanout.concurrency` requests in flight per process (a semaphore) and
//!   at most `fanout.concurrency_per_subscription` per subscription. The claim asks Postgres
//!   for up to [`CLAIM_AHEAD`] times that per subscription ([`CLAIM_AHEAD_PROMPT`] times for
//!   one that answers promptly), the rest queued in memory without a process-wide slot, so
//!   the subscription's next request starts as soon as one is answered, and a slow receiver's
//!   backlog never occupies slots that others could use.
//! * **Durable.** Everything about a delivery lives in its row: a claim is a lease (request
//!   timeout + 30 s), and a worker that dies mid-request leaves the delivery to be attempted
//!   again when the lease runs out. A restart loses no pending retry.
//! * **Guarded.** Redirects are not followed, proxies are ignored, and every destination
//!   address is checked against [`super::ssrf`].

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::{Duration, Instant};

use reqwest::Url;
use reqwest::header::CONTENT_TYPE;
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore, mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;
use waybill_config::FanoutSettings;
use waybill_store::fanout::{self, ClaimedDelivery, DeliveredOutcome};
use waybill_store::{PgConnection, Store, StoreError};
use waybill_telemetry::trace;

use super::policy::{Failed, RetryPolicy, Verdict, judge};
use super::signer::{
    WEBHOOK_ID, WEBHOOK_SIGNATURE, WEBHOOK_TIMESTAMP, WebhookSecret, signature_header,
};
use super::ssrf::{DestinationPolicy, refusal_in};
use crate::poll::Clock;

/// The most deliveries one claim takes.
const MAX_CLAIM: usize = 256;
/// How far ahead a subscription is claimed: up to this many times its
/// `concurrency_per_subscription`, counting what it is sending and has queued, so that its
/// next request is ready when one is answered.
const CLAIM_AHEAD: u32 = 2;
/// How far ahead a prompt subscription is claimed (its last answer a 2xx within
/// [`PROMPT_ANSWER`]). Under load a claim's round trip is long against a request to a fast
/// receiver, and a queue of one claim's worth runs dry before the next claim arrives
/// (docs/performance.md). A slower receiver keeps the shorter queue, so that what it has queued
/// is sent well within the claims' lease. Only a subscription sending all it may keeps a queue,
/// and each such one holds `concurrency_per_subscription` of the process's
/// `fanout.concurrency` slots, so a process queues at most about `CLAIM_AHEAD_PROMPT` times
/// `fanout.concurrency` deliveries.
const CLAIM_AHEAD_PROMPT: u32 = 8;
/// An answer at least this quick makes a subscription prompt.
const PROMPT_ANSWER: Duration = Duration::from_millis(500);
/// After a wake-up, how long the dispatcher waits for more completions before it claims again,
/// so that a busy process claims in batches rather than once per finished request.
const CLAIM_GAP: Duration = Duration::from_millis(2);
/// How much of a receiver's answer is read (and discarded) so the connection can be reused.
const MAX_ANSWER_BYTES: usize = 64 * 1024;
/// How many delivered outcomes may wait for the next batched write before requests that
/// finished wait to queue theirs.
const DELIVERED_QUEUE: usize = 1024;
/// How often the `waybill_subscriptions_disabled` gauge is refreshed.
const GAUGE_INTERVAL: Duration = Duration::from_secs(15);

/// What one [`Dispatcher::dispatch_once`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DispatchRound {
    /// Free request slots when it claimed.
    pub room: usize,
    /// Deliveries claimed and started.
    pub claimed: usize,
}

/// Why the dispatcher cannot start.
#[derive(Debug, thiserror::Error)]
#[error("the webhook HTTP client cannot be built")]
pub struct DispatcherError(#[from] reqwest::Error);

/// The dispatcher of one worker process. Cheap to clone. Public so that tests and benchmarks
/// can drive it round by round.
#[derive(Clone)]
pub struct Dispatcher {
    inner: Arc<Inner>,
}

struct Inner {
    store: Store,
    client: reqwest::Client,
    policy: RetryPolicy,
    destinations: DestinationPolicy,
    clock: Arc<dyn Clock>,
    per_subscription: u32,
    concurrency: usize,
    interval: Duration,
    lease: Duration,
    request_timeout: Duration,
    disable_after: Duration,
    permits: Arc<Semaphore>,
    /// Per subscription with requests being sent or deliveries claimed ahead.
    slots: Mutex<HashMap<i64, Slots>>,
    /// The subscriptions whose last answer was a 2xx within [`PROMPT_ANSWER`].
    prompt: Mutex<HashSet<i64>>,
    /// Set when [`Dispatcher::run`] stops: deliveries claimed ahead are no longer started.
    stopping: AtomicBool,
    tasks: TaskTracker,
    /// Woken when deliveries were created (by this process's relay) or a request finished.
    wake: Arc<Notify>,
    /// The queue of delivered outcomes to the task that writes them in batches (started with
    /// the first one, inside the runtime).
    delivered: OnceLock<mpsc::Sender<Delivered>>,
}

impl Dispatcher {
    /// A dispatcher over `store` with the `[fanout]` settings, reading time from `clock`.
    pub fn new(
        store: Store,
        settings: &FanoutSettings,
        clock: Arc<dyn Clock>,
    ) -> Result<Dispatcher, DispatcherError> {
        Dispatcher::with_wake(store, settings, clock, Arc::new(Notify::new()))
    }

    pub(crate) fn with_wake(
        store: Store,
        settings: &FanoutSettings,
        clock: Arc<dyn Clock>,
        wake: Arc<Notify>,
    ) -> Result<Dispatcher, DispatcherError> {
        let destinations = DestinationPolicy::new(&settings.allowed_hosts);
        let client = reqwest::Client::builder()
            .user_agent(concat!("Waybill-Webhooks/", env!("CARGO_PKG_VERSION")))
            // A 3xx is an answer, and a failed attempt: following it would also bypass the
            // destination check.
            .redirect(reqwest::redirect::Policy::none())
            // A proxy from the environment would resolve the destination itself, unchecked.
            .no_proxy()
            .timeout(settings.request_timeout())
            .connect_timeout(Duration::from_millis(settings.connect_timeout_ms))
            .dns_resolver(destinations.resolver())
            .pool_max_idle_per_host(settings.concurrency_per_subscription)
            .tcp_nodelay(true)
            .build()?;
        let concurrency = settings.concurrency.max(1);
        Ok(Dispatcher {
            inner: Arc::new(Inner {
                store,
                client,
                policy: RetryPolicy::from_settings(settings),
                destinations,
                clock,
                per_subscription: u32::try_from(settings.concurrency_per_subscription.max(1))
                    .unwrap_or(u32::MAX),
                concurrency,
                interval: Duration::from_millis(settings.delivery_interval_ms),
                lease: settings.request_timeout() + Duration::from_secs(30),
                request_timeout: settings.request_timeout(),
                disable_after: settings.disable_after.duration(),
                permits: Arc::new(Semaphore::new(concurrency)),
                slots: Mutex::new(HashMap::new()),
                prompt: Mutex::new(HashSet::new()),
                stopping: AtomicBool::new(false),
                tasks: TaskTracker::new(),
                wake,
                delivered: OnceLock::new(),
            }),
        })
    }

    /// Starts the deliveries claimed ahead that have a free slot now, then claims due
    /// deliveries: up to the free process-wide slots, and per subscription up to
    /// [`CLAIM_AHEAD`] times its `concurrency_per_subscription` ([`CLAIM_AHEAD_PROMPT`] times
    /// for a prompt one) counting what it is sending and has claimed ahead. What
    /// has a free slot is started at once; the rest waits in the subscription's queue and
    /// starts the moment one of its requests is answered, so a subscription's next request
    /// does not wait for the next claim. Returns without waiting for the answers. A claim that
    /// took deliveries is a `waybill.dispatch` span linked to their changes' traces (each
    /// attempt is a `waybill.deliver` span in its change's trace); an empty one traces nothing.
    pub async fn dispatch_once(&self) -> Result<DispatchRound, StoreError> {
        let inner = &self.inner;
        self.start_ready();
        let room = inner.permits.available_permits().min(MAX_CLAIM);
        if room == 0 {
            return Ok(DispatchRound::default());
        }
        let pass = trace::Pass::open(tracing::info_span!(
            parent: None,
            "waybill.dispatch",
            waybill.deliveries = tracing::field::Empty
        ));
        let claimed = trace::untraced(self.claim(room)).await?;
        let round = DispatchRound {
            room,
            claimed: claimed.len(),
        };
        if claimed.is_empty() {
            return Ok(round);
        }
        let span = pass.found(claimed.iter().filter_map(|d| d.traceparent.as_deref()));
        span.record("waybill.deliveries", claimed.len());
        span.in_scope(|| {
            for delivery in claimed {
                self.start_or_queue(delivery);
            }
        });
        Ok(round)
    }

    /// Starts `delivery` if its subscription has a free slot and nothing queued before it, and
    /// a process-wide slot is free; queues it otherwise.
    fn start_or_queue(&self, delivery: ClaimedDelivery) {
        let inner = &self.inner;
        let mut slots = lock(&inner.slots);
        let slot = slots.entry(delivery.subscription_id).or_default();
        if slot.sending < inner.per_subscription
            && slot.ready.is_empty()
            && let Ok(permit) = inner.permits.clone().try_acquire_owned()
        {
            slot.sending += 1;
            drop(slots);
            self.start(delivery, permit);
            return;
        }
        slot.ready.push_back((Instant::now(), delivery));
    }

    /// Starts queued deliveries while their subscriptions and the process have free slots.
    fn start_ready(&self) {
        let inner = &self.inner;
        if inner.stopping.load(Ordering::Relaxed) {
            return;
        }
        let mut starting = Vec::new();
        {
            let mut slots = lock(&inner.slots);
            for slot in slots.values_mut() {
                while slot.sending < inner.per_subscription {
                    let Some(next) = slot.take_ready(inner) else {
                        break;
                    };
                    slot.sending += 1;
                    starting.push(next);
                }
            }
            slots.retain(|_, slot| !slot.is_empty());
        }
        for (delivery, permit) in starting {
            self.start(delivery, permit);
        }
    }

    /// Claims up to `room` due deliveries, each subscription's up to [`CLAIM_AHEAD`] times its
    /// limit ([`CLAIM_AHEAD_PROMPT`] times for a prompt one) counting what it is sending and
    /// has queued.
    async fn claim(&self, room: usize) -> Result<Vec<ClaimedDelivery>, StoreError> {
        let inner = &self.inner;
        let ahead = inner.per_subscription.saturating_mul(CLAIM_AHEAD);
        let room_of: Vec<(i64, u32)> = {
            let slots = lock(&inner.slots);
            let prompt = lock(&inner.prompt);
            let depth = |id: &i64| {
                if prompt.contains(id) {
                    inner.per_subscription.saturating_mul(CLAIM_AHEAD_PROMPT)
                } else {
                    ahead
                }
            };
            let mut room_of: Vec<(i64, u32)> = slots
                .iter()
                .map(|(id, slot)| {
                    let held = slot.sending + slot.ready.len() as u32;
                    (*id, depth(id).saturating_sub(held))
                })
                .collect();
            room_of.extend(
                prompt
                    .iter()
                    .filter(|id| !slots.contains_key(id))
                    .map(|id| (*id, depth(id))),
            );
            room_of
        };
        let mut conn = inner.store.acquire().await?;
        fanout::claim_due_deliveries(
            &mut conn,
            inner.clock.now(),
            inner.lease,
            room as u32,
            ahead,
            &room_of,
        )
        .await
    }

    /// Starts one attempt of `delivery` on its own task, holding `permit` until it ends; the
    /// caller has counted it as sending for its subscription.
    fn start(&self, delivery: ClaimedDelivery, permit: OwnedSemaphorePermit) {
        let guard = InFlight::counted(&self.inner, delivery.subscription_id, permit);
        let dispatcher = self.clone();
        let span = tracing::info_span!(
            parent: None,
            "waybill.deliver",
            otel.kind = "client",
            delivery.id = delivery.id,
            subscription.id = delivery.subscription_id,
            delivery.attempt = delivery.attempt,
            http.response.status_code = tracing::field::Empty,
        );
        // The attempt continues the trace of the message that caused the change.
        if let Some(parent) = &delivery.traceparent {
            trace::set_parent(&span, parent);
        }
        self.inner.tasks.spawn(
            async move {
                dispatcher.deliver(delivery, guard).await;
            }
            .instrument(span),
        );
    }

    /// Waits until no request is in flight and none is queued (for tests and benchmarks); once
    /// the dispatcher stops, until no request is in flight.
    pub async fn wait_idle(&self) {
        let all = u32::try_from(self.inner.concurrency).unwrap_or(u32::MAX);
        loop {
            // Every slot free: nothing is in flight, so nothing counts as sending either, and
            // each subscription with a queue can start one.
            let Ok(permits) = self.inner.permits.acquire_many(all).await else {
                return;
            };
            drop(permits);
            let queued = lock(&self.inner.slots)
                .values()
                .any(|slot| !slot.ready.is_empty());
            if !queued || self.inner.stopping.load(Ordering::Relaxed) {
                return;
            }
            self.start_ready();
        }
    }

    /// Dispatches until `shutdown`, then lets the requests in flight finish (each is bounded by
    /// the request timeout; the worker's grace period bounds the wait). Deliveries claimed
    /// ahead and not started are left to their lease: they are sent when it runs out.
    pub async fn run(self, shutdown: CancellationToken) {
        let inner = Arc::clone(&self.inner);
        let mut failing = inner.interval;
        let mut gauge_refreshed: Option<Instant> = None;
        while !shutdown.is_cancelled() {
            if gauge_refreshed.is_none_or(|at| at.elapsed() >= GAUGE_INTERVAL) {
                self.refresh_disabled_gauge().await;
                gauge_refreshed = Some(Instant::now());
            }
            match self.dispatch_once().await {
                Ok(round) if round.room > 0 && round.claimed == round.room => {
                    failing = inner.interval;
                    tokio::time::sleep(CLAIM_GAP).await;
                }
                Ok(_) => {
                    failing = inner.interval;
                    tokio::select! {
                        () = shutdown.cancelled() => break,
                        () = inner.wake.notified() => {}
                        () = tokio::time::sleep(inner.interval) => {}
                    }
                    tokio::time::sleep(CLAIM_GAP).await;
                }
                Err(error) => {
                    tracing::warn!(error = %error, "due deliveries could not be claimed");
                    tokio::select! {
                        () = shutdown.cancelled() => break,
                        () = tokio::time::sleep(failing) => {}
                    }
                    failing = (failing * 2).min(Duration::from_secs(5));
                }
            }
        }
        inner.stopping.store(true, Ordering::Relaxed);
        inner.tasks.close();
        inner.tasks.wait().await;
        let unstarted: usize = lock(&inner.slots)
            .values_mut()
            .map(|slot| std::mem::take(&mut slot.ready).len())
            .sum();
        if unstarted > 0 {
            released("stopping", unstarted);
        }
    }

    /// One attempt of `delivery`, from the request to the recorded outcome. Once the answer is
    /// in, the subscription's slot is free for its next delivery while this outcome is written;
    /// the process-wide slot is held until it is.
    async fn deliver(&self, delivery: ClaimedDelivery, mut guard: InFlight) {
        let started = Instant::now();
        let verdict = self.attempt(&delivery).await;
        let took = started.elapsed();
        metrics::histogram!("waybill_webhook_attempt_duration_seconds").record(took.as_secs_f64());
        {
            let mut prompt = lock(&self.inner.prompt);
            if verdict.is_ok() && took <= PROMPT_ANSWER {
                prompt.insert(delivery.subscription_id);
            } else {
                prompt.remove(&delivery.subscription_id);
            }
        }
        guard.answered();
        let failed = match verdict {
            Ok(status) => {
                let span = tracing::info_span!("record_delivered", delivery.id = delivery.id);
                self.record_delivered(&delivery, status)
                    .instrument(span)
                    .await;
                return;
            }
            Err(failed) => failed,
        };
        match retried(|| self.record_failed(&delivery, &failed)).await {
            Ok(()) => {}
            Err(error) if error.is_transient() => tracing::warn!(
                "the outcome of a delivery could not be recorded; it is attempted again when its lease runs out"
            ),
            Err(error) => {
                tracing::error!(error = %error, "the outcome of a delivery could not be recorded");
            }
        }
    }

    /// Sends one signed request and judges the answer.
    async fn attempt(&self, delivery: &ClaimedDelivery) -> Verdict {
        let inner = &self.inner;
        let Ok(url) = Url::parse(&delivery.url) else {
            return Err(Failed::GiveUp {
                error: "the subscription's URL does not parse".to_owned(),
            });
        };
        if let Err(refused) = inner.destinations.check_url(&url) {
            metrics::counter!("waybill_webhook_destinations_refused_total").increment(1);
            return Err(Failed::GiveUp {
                error: refused.to_string(),
            });
        }
        let Ok(current) = WebhookSecret::parse(delivery.secret.expose()) else {
            return Err(Failed::GiveUp {
                error: "the subscription's secret is not a valid whsec_ secret".to_owned(),
            });
        };
        let mut secrets = vec![current];
        // A previous secret that does not parse is skipped: the current one still signs.
        secrets.extend(
            delivery
                .previous_secret
                .as_ref()
                .and_then(|previous| WebhookSecret::parse(previous.expose()).ok()),
        );
        let timestamp = inner.clock.now().timestamp();
        let signature = signature_header(&delivery.webhook_id, timestamp, &delivery.body, &secrets);
        let mut request = inner
            .client
            .post(url)
            .header(CONTENT_TYPE, "application/json")
            .header(WEBHOOK_ID, &delivery.webhook_id)
            .header(WEBHOOK_TIMESTAMP, timestamp.to_string())
            .header(WEBHOOK_SIGNATURE, signature)
            .body(delivery.body.clone());
        if let Some(traceparent) = trace::current_traceparent() {
            request = request.header(trace::TRACEPARENT, traceparent);
        }
        match request.send().await {
            Ok(mut response) => {
                let status = response.status().as_u16();
                tracing::Span::current().record("http.response.status_code", status);
                let retry_after = crate::poll::retry_after(response.headers(), inner.clock.now());
                let mut read = 0;
                while read < MAX_ANSWER_BYTES {
                    match response.chunk().await {
                        Ok(Some(chunk)) => read += chunk.len(),
                        Ok(None) | Err(_) => break,
                    }
                }
                judge(status, retry_after)
            }
            Err(error) => {
                if let Some(refused) = refusal_in(&error) {
                    metrics::counter!("waybill_webhook_destinations_refused_total").increment(1);
                    return Err(Failed::GiveUp {
                        error: refused.to_string(),
                    });
                }
                Err(Failed::Retry {
                    status: None,
                    error: describe(error, inner.request_timeout),
                    retry_after: None,
                })
            }
        }
    }

    /// Queues a 2xx answer to `delivery` for the next batched write and waits for it.
    async fn record_delivered(&self, delivery: &ClaimedDelivery, status: u16) {
        let inner = &self.inner;
        let queue = inner
            .delivered
            .get_or_init(|| write_delivered(inner.store.clone(), Arc::clone(&inner.clock)));
        let (reply, written) = oneshot::channel();
        let outcome = DeliveredOutcome {
            id: delivery.id,
            attempt: delivery.attempt,
            status,
        };
        let written = match queue.send(Delivered { outcome, reply }).await {
            Ok(()) => written.await.ok().flatten(),
            Err(_) => None,
        };
        match written {
            Some(true) => metrics::counter!(
                "waybill_webhook_attempts_total",
                "outcome" => "delivered",
                "attempt" => attempt_label(delivery.attempt)
            )
            .increment(1),
            Some(false) => {
                tracing::debug!("the delivery's lease ran out before its outcome; not recorded");
            }
            None => tracing::warn!(
                "the outcome of a delivery could not be recorded; it is attempted again when its lease runs out"
            ),
        }
    }

    /// Writes why `delivery`'s attempt failed (a 2xx answer is written in batches, by
    /// [`Dispatcher::record_delivered`]).
    async fn record_failed(
        &self,
        delivery: &ClaimedDelivery,
        failed: &Failed,
    ) -> Result<(), StoreError> {
        let inner = &self.inner;
        let now = inner.clock.now();
        let mut conn = inner.store.acquire().await?;
        let (outcome, recorded) = match failed {
            Failed::Gone => {
                let recorded =
                    fanout::record_gone(&mut conn, delivery.id, delivery.attempt, now).await?;
                if recorded.subscription_disabled {
                    disabled(delivery.subscription_id, "gone");
                }
                ("gone", recorded.recorded)
            }
            Failed::Retry {
                status,
                error,
                retry_after,
            } => {
                let next = inner
                    .policy
                    .next_delay(delivery.attempt, *retry_after)
                    .and_then(|wait| chrono::Duration::from_std(wait).ok())
                    .map(|wait| now + wait);
                let error = match next {
                    Some(_) => error.clone(),
                    None => format!("{error}; no attempts left"),
                };
                let failure = Failure {
                    status: *status,
                    error: &error,
                    next,
                    when_dead: "a delivery is dead after its last attempt",
                };
                self.record_failure(&mut conn, delivery, now, &failure)
                    .await?
            }
            Failed::GiveUp { error } => {
                let failure = Failure {
                    status: None,
                    error,
                    next: None,
                    when_dead: "a delivery is dead: it cannot be sent",
                };
                self.record_failure(&mut conn, delivery, now, &failure)
                    .await?
            }
        };
        if recorded {
            metrics::counter!(
                "waybill_webhook_attempts_total",
                "outcome" => outcome,
                "attempt" => attempt_label(delivery.attempt)
            )
            .increment(1);
        } else {
            tracing::debug!("the delivery's lease ran out before its outcome; not recorded");
        }
        Ok(())
    }

    /// Writes a failed attempt of `delivery`. Returns the outcome's label (`retry`, or `dead`
    /// without a next attempt) and whether the write happened (the claim was still current).
    async fn record_failure(
        &self,
        conn: &mut PgConnection,
        delivery: &ClaimedDelivery,
        now: chrono::DateTime<chrono::Utc>,
        failure: &Failure<'_>,
    ) -> Result<(&'static str, bool), StoreError> {
        let recorded = fanout::record_failure(
            conn,
            delivery.id,
            delivery.attempt,
            now,
            failure.status,
            failure.error,
            failure.next,
            Some(self.inner.disable_after),
        )
        .await?;
        if recorded.subscription_disabled {
            disabled(delivery.subscription_id, "failing");
        }
        if failure.next.is_none() && recorded.recorded {
            tracing::warn!(error = %failure.error, "{}", failure.when_dead);
        }
        let outcome = if failure.next.is_some() {
            "retry"
        } else {
            "dead"
        };
        Ok((outcome, recorded.recorded))
    }

    /// Refreshes `waybill_subscriptions_disabled` (untraced: bookkeeping, not work).
    async fn refresh_disabled_gauge(&self) {
        let counted = trace::untraced(async {
            let mut conn = self.inner.store.acquire().await?;
            fanout::count_disabled_subscriptions(&mut conn).await
        })
        .await;
        let Ok(counts) = counted else {
            return;
        };
        for reason in ["manual", "gone", "failing"] {
            let count = counts
                .iter()
                .find(|(r, _)| r.as_str() == reason)
                .map_or(0, |(_, n)| *n);
            metrics::gauge!("waybill_subscriptions_disabled", "reason" => reason).set(count as f64);
        }
    }
}

/// A 2xx answer waiting for the batched write, and where to say whether it was recorded
/// (`None`: it could not be written).
struct Delivered {
    outcome: DeliveredOutcome,
    reply: oneshot::Sender<Option<bool>>,
}

/// Starts the task that writes delivered outcomes: everything queued while the previous write
/// ran goes in the next one statement, so a busy dispatcher records many answers per round
/// trip and commit. A transient error is retried (three attempts, 50 ms then 200 ms apart);
/// what still fails is left to its lease, and the delivery is sent again.
fn write_delivered(store: Store, clock: Arc<dyn Clock>) -> mpsc::Sender<Delivered> {
    let (queue, mut waiting) = mpsc::channel::<Delivered>(DELIVERED_QUEUE);
    tokio::spawn(trace::untraced(async move {
        let mut batch = Vec::with_capacity(MAX_CLAIM);
        while waiting.recv_many(&mut batch, MAX_CLAIM).await > 0 {
            let outcomes: Vec<DeliveredOutcome> = batch.iter().map(|d| d.outcome).collect();
            let written = retried(|| async {
                let mut conn = store.acquire().await?;
                fanout::record_all_delivered(&mut conn, &outcomes, clock.now()).await
            })
            .await
            .inspect_err(|error| {
                tracing::error!(error = %error, "delivered outcomes could not be recorded");
            })
            .ok()
            .map(|ids| ids.into_iter().collect::<HashSet<i64>>());
            for delivered in batch.drain(..) {
                let recorded = written
                    .as_ref()
                    .map(|ids| ids.contains(&delivered.outcome.id));
                let _ = delivered.reply.send(recorded);
            }
        }
    }));
    queue
}

/// Runs `write` again while it fails with a transient error, three attempts in all, 50 ms then
/// 200 ms apart; returns its last result.
async fn retried<T, F: Future<Output = Result<T, StoreError>>>(
    mut write: impl FnMut() -> F,
) -> Result<T, StoreError> {
    let mut wait = Duration::from_millis(50);
    for _ in 1..3 {
        match write().await {
            Err(error) if error.is_transient() => {
                tokio::time::sleep(wait).await;
                wait *= 4;
            }
            done => return done,
        }
    }
    write().await
}

/// One subscription's share of the process: its requests being sent, and the deliveries
/// claimed ahead of a free slot, oldest first, with when they were claimed.
#[derive(Default)]
struct Slots {
    sending: u32,
    ready: VecDeque<(Instant, ClaimedDelivery)>,
}

impl Slots {
    fn is_empty(&self) -> bool {
        self.sending == 0 && self.ready.is_empty()
    }

    /// The next queued delivery and a process-wide slot for it, if one is free. A delivery
    /// queued so long that its request might outlast its lease is dropped: the lease runs out
    /// and it is claimed again.
    fn take_ready(&mut self, inner: &Inner) -> Option<(ClaimedDelivery, OwnedSemaphorePermit)> {
        let fresh_for = inner.lease.saturating_sub(inner.request_timeout);
        let mut expired = 0;
        while self
            .ready
            .front()
            .is_some_and(|(claimed, _)| claimed.elapsed() >= fresh_for)
        {
            self.ready.pop_front();
            expired += 1;
        }
        if expired > 0 {
            released("expired", expired);
        }
        if self.ready.is_empty() || inner.stopping.load(Ordering::Relaxed) {
            return None;
        }
        let permit = inner.permits.clone().try_acquire_owned().ok()?;
        let (_, delivery) = self.ready.pop_front()?;
        Some((delivery, permit))
    }
}

/// An attempt in flight: counts against its subscription until its answer is in
/// ([`InFlight::answered`]), when the subscription's next queued delivery starts in its place,
/// and holds its process-wide slot until dropped, its outcome written (also when the task
/// panics); each release wakes the dispatcher.
struct InFlight {
    inner: Arc<Inner>,
    subscription_id: i64,
    answered: bool,
    permit: Option<OwnedSemaphorePermit>,
}

impl InFlight {
    /// The guard of an attempt already counted as sending for `subscription_id`.
    fn counted(inner: &Arc<Inner>, subscription_id: i64, permit: OwnedSemaphorePermit) -> InFlight {
        InFlight {
            inner: Arc::clone(inner),
            subscription_id,
            answered: false,
            permit: Some(permit),
        }
    }

    /// The request is over: the subscription's next queued delivery takes its slot, or the
    /// slot is free.
    fn answered(&mut self) {
        if std::mem::replace(&mut self.answered, true) {
            return;
        }
        let next = {
            let mut slots = lock(&self.inner.slots);
            let Some(slot) = slots.get_mut(&self.subscription_id) else {
                return;
            };
            let next = slot.take_ready(&self.inner);
            if next.is_none() {
                slot.sending = slot.sending.saturating_sub(1);
                if slot.is_empty() {
                    slots.remove(&self.subscription_id);
                }
            }
            next
        };
        match next {
            Some((delivery, permit)) => Dispatcher {
                inner: Arc::clone(&self.inner),
            }
            .start(delivery, permit),
            None => self.inner.wake.notify_one(),
        }
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.answered();
        drop(self.permit.take());
        self.inner.wake.notify_one();
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A failed attempt, as [`fanout::record_failure`] writes it.
struct Failure<'a> {
    /// The HTTP status, if there was an answer.
    status: Option<u16>,
    /// Why it failed.
    error: &'a str,
    /// The next attempt; `None`: the delivery is dead.
    next: Option<chrono::DateTime<chrono::Utc>>,
    /// What is logged when the delivery is dead.
    when_dead: &'static str,
}

/// Counts deliveries claimed ahead and dropped from memory unsent (`expired`: queued so long
/// their request could outlast the lease; `stopping`: the worker stopped). Each is sent once its
/// lease runs out.
fn released(reason: &'static str, count: usize) {
    metrics::counter!("waybill_webhook_claims_released_total", "reason" => reason)
        .increment(count as u64);
    tracing::debug!(
        count,
        reason,
        "deliveries claimed ahead were released unsent; they are sent when their lease runs out"
    );
}

fn disabled(subscription_id: i64, reason: &'static str) {
    metrics::counter!("waybill_subscriptions_disabled_total", "reason" => reason).increment(1);
    tracing::warn!(
        subscription.id = subscription_id,
        reason,
        "a subscription was disabled; `waybill subscriptions enable` resumes it"
    );
}

/// A failed request in a sentence, without the URL (it may carry a token).
fn describe(error: reqwest::Error, timeout: Duration) -> String {
    let error = error.without_url();
    if error.is_timeout() {
        return format!("no answer within {} ms", timeout.as_millis());
    }
    let mut text = if error.is_connect() {
        "could not connect".to_owned()
    } else {
        "the request failed".to_owned()
    };
    let mut cause = std::error::Error::source(&error);
    let mut innermost = None;
    while let Some(source) = cause {
        innermost = Some(source.to_string());
        cause = source.source();
    }
    if let Some(innermost) = innermost {
        text.push_str(": ");
        text.push_str(&innermost);
    }
    text.chars().take(300).collect()
}

/// The `attempt` label: `1` to `9`, then `10+` (a closed set, whatever the schedule's length).
fn attempt_label(attempt: i32) -> &'static str {
    const LABELS: [&str; 10] = ["1", "2", "3", "4", "5", "6", "7", "8", "9", "10+"];
    let index = usize::try_from(attempt.clamp(1, 10) - 1).unwrap_or(0);
    LABELS[index]
}
